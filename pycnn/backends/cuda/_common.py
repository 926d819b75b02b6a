"""What every CUDA backend function does before a launch: check its arrays, and
hand their device pointers and CuPy's current stream to a pycnn._C launcher.

Nothing reaches a kernel unchecked: a wrong dtype, a non-contiguous array, an
array on another GPU or a size past the 32-bit indexing limit raises a Python
error naming the argument, before any launch.
"""
from __future__ import annotations

from contextlib import contextmanager

try:
    import cupy as cp
except ImportError as exc:  # pragma: no cover - exercised only without CuPy
    raise ImportError(
        "the CUDA backend needs CuPy: pip install 'pycnn[cuda]' (cupy-cuda13x)") from exc

try:
    from pycnn import _C
except ImportError as exc:  # pragma: no cover - exercised only without the extension
    raise ImportError(
        "the CUDA backend needs the compiled extension pycnn._C, which this install "
        "lacks (it was built without a CUDA toolkit, or with PYCNN_CUDA=0)") from exc

INT32_MAX = 2**31 - 1


def check_array(a, name: str, *, dtype=cp.float32, ndim: int | None = None, shape=None):
    """Raise TypeError/ValueError naming ``name`` unless ``a`` can go to a kernel."""
    if not isinstance(a, cp.ndarray):
        raise TypeError(f"{name}: expected a cupy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {cp.dtype(dtype).name}, got {a.dtype.name} "
                        "(pycnn's CUDA kernels are float32; use the cpu device for float64)")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(a.shape)}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array, got strides {a.strides} "
                         "(call cupy.ascontiguousarray first)")
    current = current_device()
    if a.device.id != current:
        raise ValueError(f"{name}: array is on GPU {a.device.id}, but the current device "
                         f"is GPU {current}")
    if a.size > INT32_MAX:
        raise ValueError(f"{name}: {a.size} elements exceed the 32-bit indexing limit "
                         f"of pycnn's kernels (2**31 - 1)")
    return a


def current_device() -> int:
    """Id of CuPy's current GPU (the one the kernels launch on)."""
    return cp.cuda.Device().id


_NUM_SMS: dict[int, int] = {}


def num_sms() -> int:
    """SM count of the current GPU (the launchers that split work to fill it ask)."""
    dev = cp.cuda.Device().id
    if dev not in _NUM_SMS:     # one attribute (Device.attributes would query all of them)
        _NUM_SMS[dev] = cp.cuda.runtime.deviceGetAttribute(
            cp.cuda.runtime.cudaDevAttrMultiProcessorCount, dev)
    return _NUM_SMS[dev]


_DEVICE: dict[int, tuple[str, int]] = {}


def _device(dev: int) -> tuple[str, int]:
    if dev not in _DEVICE:
        props = cp.cuda.runtime.getDeviceProperties(dev)
        name = props["name"]
        _DEVICE[dev] = (name.decode() if isinstance(name, bytes) else str(name),
                        10 * props["major"] + props["minor"])
    return _DEVICE[dev]


def device_name() -> str:
    """Name of the current GPU ("NVIDIA H200"): the tuner keys its cache by it."""
    return _device(cp.cuda.Device().id)[0]


def compute_capability() -> int:
    """Compute capability of the current GPU as 10 * major + minor (90 on Hopper)."""
    return _device(cp.cuda.Device().id)[1]


def ptr(a) -> int:
    """Device pointer of a cupy array, as the int a launcher takes (0 for None)."""
    return 0 if a is None else a.data.ptr


def stream() -> int:
    """Handle of CuPy's current stream, so our kernels order with CuPy's work."""
    return cp.cuda.get_current_stream().ptr


_POISON = [False]


def empty(shape, dtype=cp.float32):
    """An output or workspace buffer from CuPy's memory pool (filled with 0xFF bytes
    inside ``poisoned_outputs``)."""
    a = cp.empty(shape, dtype=dtype)
    if _POISON[0] and a.size:
        byte_view(a).fill(0xFF)
    return a


def byte_view(a):
    """The bytes of a C-contiguous array, as a 1-D uint8 view (a 0-d array, such as
    a loss, cannot change its itemsize in place: it is flattened first)."""
    return a.reshape(-1).view(cp.uint8)


@contextmanager
def poisoned_outputs():
    """Inside, every buffer the backend allocates starts as 0xFF bytes: NaN in a float
    array, -1 in an integer one. CuPy's pool hands a freed block straight back to the
    next allocation of its size, so without this a kernel that leaves part of its
    output unwritten can pass a check on a buffer that an earlier call (another
    version of the same op) filled correctly. For verification, not for speed."""
    before = _POISON[0]
    _POISON[0] = True
    try:
        yield
    finally:
        _POISON[0] = before
