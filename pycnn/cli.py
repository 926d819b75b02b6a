"""The ``pycnn`` command: train, eval, summary, bench.

    pycnn train                       LeNet-5 on the 5,000 embedded MNIST digits
    pycnn train --model resnet18 --data cifar10:~/data/cifar --epochs 30
    pycnn eval --checkpoint runs/lenet5-.../model.npz
    pycnn summary resnet50
    pycnn bench ...                   (see pycnn bench --help)

Every run writes model.npz (the state dict plus a ``__meta__`` JSON entry that
says how to rebuild the model), metrics.json and curves.png to its directory: a
folder of its own (``runs/<run id>``, created exclusively) or ``--out``, which it
locks for as long as it lives. SIGINT and SIGTERM stop it between two steps and
save; every write is atomic; the exit statuses are listed in EXIT_STATUS_HELP
(``pycnn --help``) and in the README.
"""
from __future__ import annotations

import argparse
import datetime
import errno
import fcntl
import inspect
import json
import math
import os
import platform
import secrets
import signal
import socket
import sys
import tempfile
import zipfile

import numpy as np

# Defaults of `pycnn train`, chosen by measurement on the embedded digits (seeds 0, 1, 2):
# SGD with momentum 0.9 at lr 0.05, decayed x0.8 per epoch, batch 64, reaches 96.6-96.7% test
# accuracy at epoch 6 and stays in 96.5-97.2% through epoch 12; 8 epochs keep a margin.
# Adam at 1e-3 without decay wanders between 95.5% and 97% over the same epochs.
DEFAULTS = {"model": "lenet5", "data": "embedded-mnist", "epochs": 8, "batch_size": 64,
            "optimizer": "sgd", "lr_decay": 0.8, "seed": 0}
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "rmsprop": 1e-3, "adagrad": 1e-2}
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad")
META_KEY = "__meta__"
RUN_FILES = ("model.npz", "metrics.json", "curves.png")
LOCK_NAME = ".pycnn.lock"
EXIT_DIVERGED = 1
EXIT_USAGE = 2
EXIT_IO = 3
EXIT_INTERRUPTED = 128 + signal.SIGINT       # 130; SIGTERM gives 128 + 15 = 143
EXIT_TERMINATED = 128 + signal.SIGTERM

EXIT_STATUS_HELP = """\
exit status:
  0    finished
  1    training diverged: the loss or a gradient turned nan or inf (or --detect-anomaly
       found the op that made one); model.npz keeps the last finite epoch
  2    bad arguments or input: an option, a data set, a checkpoint, or an --out that
       another run is using or that holds an earlier run's results (see --force)
  3    I/O error (disk full, permission denied, ...): one line names the path and the
       cause; the file's previous version is intact (every write goes to a temporary
       file that is renamed into place)
  130  stopped by SIGINT (Ctrl-C) and saved: the step under way finishes, then
       model.npz (the weights after that step), metrics.json ("interrupted": true) and
       curves.png are written; a second signal stops at once, keeping the last save
  143  stopped by SIGTERM (a batch scheduler's stop) and saved, as for SIGINT
(an unexpected internal error exits 1 with a Python traceback)"""

# Input shape (C, H, W) for `pycnn summary` per model; anything else gets 3x32x32.
SUMMARY_SHAPES = {"lenet5": (1, 28, 28), "keras_mnist": (1, 28, 28), "vgg_small": (3, 32, 32),
                  "resnet18": (3, 32, 32), "resnet50": (3, 224, 224)}


class CLIError(Exception):
    """A user error: printed as 'pycnn: error: ...' with exit code 2."""


class SaveError(Exception):
    """Writing ``path`` failed with the OSError ``error`` (disk full, permission, I/O
    error). The file's previous version, if it had one, is untouched: every write goes
    to a temporary file that replaces it only once complete. Exit code 3."""

    def __init__(self, path, error):
        self.path, self.error = path, error
        code = errno.errorcode.get(error.errno) if error.errno else None
        super().__init__(f"cannot write {path}: {error.strerror or error}"
                         + (f" ({code})" if code else ""))


def _version_line():
    import pycnn
    return f"pycnn {_version()} (cpu backend: NumPy reference; cuda backend: {pycnn.cuda_status()})"


def _version():
    try:
        import pycnn
        return pycnn.__version__
    except (ImportError, AttributeError):
        return "unknown"


# --------------------------------------------------------------------------- helpers

def resolve_device(name):
    import pycnn
    if name == "auto":
        return "cuda" if pycnn.cuda_available() else "cpu"
    if name == "cuda" and not pycnn.cuda_available():
        raise CLIError(f"--device cuda: the cuda backend is {pycnn.cuda_status()}; "
                       "use --device cpu or auto")
    return name


def _models():
    from pycnn import models
    return models


def model_kwargs(name, sample_shape, num_classes=None):
    """Constructor arguments of model ``name`` fitted to the data, for those it accepts."""
    models = _models()
    if name not in models.MODELS:
        raise CLIError(f"--model: expected one of {', '.join(sorted(models.MODELS))}, got {name!r}")
    try:
        params = inspect.signature(models.MODELS[name]).parameters
    except (TypeError, ValueError):
        params = {}
    c, h, w = sample_shape
    wanted = {"in_channels": int(c), "input_size": int(h) if h == w else [int(h), int(w)]}
    if num_classes is not None:          # None: the model's own default
        wanted["num_classes"] = int(num_classes)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in wanted.items() if k in params or accepts_any}


def build_model(name, kwargs, what=None):
    """Model ``name`` built with ``kwargs``; a constructor that refuses them (vgg_small
    wants sides that are multiples of 8, resnets a positive input_size, every model
    positive class and channel counts) is a CLIError that starts with ``what``
    (default ``--model NAME``), e.g. "--model vgg_small does not take ... of shape ...".
    """
    try:
        return _models().get_model(name, **kwargs)
    except (ValueError, TypeError) as e:
        raise CLIError(f"{what or f'--model {name}'}: {e}") from e


def check_fits(model, name, dataset, device, what=None):
    """One sample through the model before training or evaluating, so that a shape
    mismatch is reported up front; errors start with ``what`` (default ``--model NAME``)."""
    import pycnn
    what = what or f"--model {name}"
    x = pycnn.tensor(dataset.x[:1], device=device)
    try:
        with pycnn.no_grad():
            model.eval()
            out = model(x)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CLIError(f"{what} does not take {dataset.name} images of shape "
                       f"{dataset.sample_shape}: {e}") from e
    finally:
        model.train()
    if tuple(out.shape) != (1, dataset.num_classes):
        raise CLIError(f"{what}: expected outputs of shape (1, {dataset.num_classes}) "
                       f"for {dataset.name}, got {tuple(out.shape)}")


def make_optimizer(name, params, lr):
    from pycnn import optim
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr)
    if name == "adagrad":
        return optim.Adagrad(params, lr=lr)
    raise CLIError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")


def make_scheduler(optimizer, lr_decay):
    """ExponentialLR stepped once per epoch, or None when ``lr_decay`` is 1."""
    if not 0 < lr_decay <= 1:
        raise CLIError(f"--lr-decay: expected a factor in (0, 1], got {lr_decay}")
    if lr_decay == 1:
        return None
    from pycnn import optim
    return optim.ExponentialLR(optimizer, gamma=lr_decay)


def seed_everything(seed):
    """Seed pycnn's one generator: initial weights, dropout masks and unseeded shuffles."""
    import pycnn
    pycnn.manual_seed(seed)


def load_data(spec, limit=None, seed=0):
    from pycnn.data import get_dataset
    try:
        train, test = get_dataset(spec, seed=seed)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise CLIError(f"--data {spec}: {e}") from e
    if limit is not None:
        try:
            train, test = train.take(limit), test.take(limit)
        except ValueError as e:
            raise CLIError(f"--limit: {e}") from e
    return train, test


def prepare_out_dir(out, create=True):
    """Create the run directory ``out`` (and its parents), or a CLIError naming --out.
    ``create=False`` only rejects an existing non-directory (a check before the data loads)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CLIError(f"--out {out}: expected a directory (existing or to be created), "
                       "got an existing file")
    if not create:
        return
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise CLIError(f"--out {out}: cannot create the run directory: "
                       f"{e.strerror or e}") from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise CLIError(f"--out {out}: expected a writable directory, got one without "
                       "write permission")


def _atomic_write(path, write):
    """Write through ``write(fileobj)`` into a temporary file next to ``path``, fsync it,
    rename it over ``path`` and fsync the directory, so that after a crash or power loss
    ``path`` is either its old or its new version, never a mix. The temporary file
    (``.NAME.XXXX.tmp``) is removed on any failure; an OSError comes out as a
    :class:`SaveError` naming ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(directory)
    except OSError as e:
        raise SaveError(path, e) from e
    finally:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass


def _fsync_directory(directory):
    """Make a rename in ``directory`` durable (its entry is in the directory, not the file)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # a file system without it
            raise
    finally:
        os.close(fd)


def remove_stale_temps(directory):
    """Remove the temporary files (``.model.npz.XXXX.tmp``, ...) that a run killed in the
    middle of a save left in ``directory``; returns their names. Only call it while
    holding the directory's :class:`RunLock` (a live run's temporary files are its own)."""
    removed = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in RUN_FILES):
            try:
                os.remove(os.path.join(directory, name))
                removed.append(name)
            except FileNotFoundError:
                pass
    return removed


def new_run_id(model):
    """``<model>-<YYYYmmdd-HHMMSS>-<6 hex digits>``: unique even for runs started in the
    same second (the suffix is random, and the default folder is created exclusively)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{model}-{stamp}-{secrets.token_hex(3)}"


def create_run_dir(parent, model):
    """(run id, path) of a new folder ``parent/<run id>``, created exclusively: two runs
    can never be handed the same folder."""
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise CLIError(f"--out (default {parent}/<run id>): cannot create {parent}: "
                       f"{e.strerror or e}") from e
    for _ in range(100):
        run_id = new_run_id(model)
        path = os.path.join(parent, run_id)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as e:
            raise CLIError(f"--out (default {path}): cannot create the run directory: "
                           f"{e.strerror or e}") from e
        return run_id, path
    raise CLIError(f"--out: could not find a free run folder name in {parent}")


class RunLock:
    """An exclusive hold on a run folder: ``LOCK_NAME`` in it, locked with flock(2) for
    as long as the run lives and removed when it ends. The kernel drops the lock when
    its process dies (kill -9 included), so a killed run never blocks the next one.

    A folder locked by a live run is refused (a CLIError naming that run), even with
    ``force``: two runs writing one folder would mix their results. ``force`` only lets a
    run go on without a lock where the file system cannot lock."""

    def __init__(self, directory, run_id, force=False):
        self.directory, self.run_id, self.force = directory, run_id, force
        self.path = os.path.join(directory, LOCK_NAME)
        self.fd = None

    def __enter__(self):
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise CLIError(f"--out {self.directory}: cannot create the lock file "
                               f"{self.path}: {e.strerror or e}") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_lock(fd)
                os.close(fd)
                raise CLIError(f"--out {self.directory}: run {holder.get('run_id', '?')} "
                               f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                               f"started {holder.get('started', '?')}) is writing to this "
                               f"folder; choose another --out, or wait for that run to end "
                               f"(--force does not take a live run's folder)") from None
            except OSError as e:              # no locks on this file system (some NFS mounts)
                os.close(fd)
                if not self.force:
                    raise CLIError(f"--out {self.directory}: cannot lock {self.path}: "
                                   f"{e.strerror or e}; use another --out, or --force to run "
                                   "without the lock") from e
                return self
            # The previous holder removes the file as it ends: if it did so between our open
            # and our flock, we hold a lock on a deleted file. Start again on the new one.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        info = {"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            try:
                os.remove(self.path)           # while still holding it: see __enter__
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
        return False


def _read_lock(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _earlier_run(out):
    """A short description of the results an earlier run left in ``out``, or None."""
    found = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if not found:
        return None
    run_id = None
    try:
        with open(os.path.join(out, "metrics.json")) as f:
            run_id = json.load(f).get("run_id")
    except (OSError, ValueError, AttributeError):
        pass
    return (f"run {run_id}'s " if run_id else "an earlier run's ") + ", ".join(found)


def save_checkpoint(path, model, meta):
    """The state dict as NumPy arrays plus ``__meta__`` (a JSON string), written atomically."""
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    if META_KEY in state:
        raise ValueError(f"state_dict: a key is named {META_KEY!r}, which checkpoints reserve")
    state[META_KEY] = np.array(json.dumps(meta))
    _atomic_write(path, lambda f: np.savez(f, **state))


_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")    # a zip with members; an empty zip
_NPY_MAGIC = b"\x93NUMPY"
_CHECKPOINT_EXPECTED = "expected a model.npz written by `pycnn train`"


def load_checkpoint(path):
    """(state dict, meta) from a checkpoint written by :func:`save_checkpoint`.

    Anything else (a .npy array, a text file, a damaged archive, an archive of pickled
    objects, a ``__meta__`` entry that is not a JSON object of the expected fields) is a
    CLIError naming --checkpoint. Nothing is ever unpickled.
    """
    where = f"--checkpoint {path}"
    if not os.path.isfile(path):
        raise CLIError(f"--checkpoint: file not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except OSError as e:
        raise CLIError(f"{where}: cannot read the file: {e.strerror or e}") from e
    if head.startswith(_NPY_MAGIC):
        raise CLIError(f"{where}: not a pycnn checkpoint: a single NumPy array (.npy file), "
                       f"not an .npz archive; {_CHECKPOINT_EXPECTED}")
    if not head.startswith(_ZIP_MAGICS):
        raise CLIError(f"{where}: not a pycnn checkpoint: not an .npz archive (the file does "
                       f"not start with a zip header); {_CHECKPOINT_EXPECTED}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CLIError(f"{where}: not a pycnn checkpoint: a damaged or truncated .npz "
                       f"archive ({e}); {_CHECKPOINT_EXPECTED}") from e
    with archive as z:
        if META_KEY not in z.files:
            raise CLIError(f"{where}: no {META_KEY} entry; {_CHECKPOINT_EXPECTED}")
        entries = {k: _checkpoint_entry(z, k, where) for k in z.files}
    meta = _checkpoint_meta(entries.pop(META_KEY), where)
    return entries, meta


def _checkpoint_entry(z, key, where):
    try:
        value = z[key]
    except ValueError as e:
        if "pickle" in str(e):           # an object array: never unpickled
            raise CLIError(f"{where}: not a pycnn checkpoint: entry {key!r} holds Python "
                           f"objects, which pycnn checkpoints never contain; "
                           f"{_CHECKPOINT_EXPECTED}") from e
        raise CLIError(f"{where}: entry {key!r} is damaged ({e}); "
                       f"{_CHECKPOINT_EXPECTED}") from e
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise CLIError(f"{where}: entry {key!r} is damaged ({e}); "
                       f"{_CHECKPOINT_EXPECTED}") from e
    if not isinstance(value, np.ndarray):
        raise CLIError(f"{where}: not a pycnn checkpoint: entry {key!r} is not a NumPy "
                       f"array; {_CHECKPOINT_EXPECTED}")
    return value


def _checkpoint_meta(entry, where):
    """The ``__meta__`` entry as a dict, its fields checked."""
    what = f"{where}: its {META_KEY} entry"
    if entry.ndim != 0 or entry.dtype.kind != "U":
        raise CLIError(f"{what}: expected a JSON string, got an array of dtype {entry.dtype} "
                       f"and shape {entry.shape}; {_CHECKPOINT_EXPECTED}")
    try:
        meta = json.loads(str(entry))
    except ValueError as e:
        raise CLIError(f"{what}: expected JSON, got text that does not parse ({e}); "
                       f"{_CHECKPOINT_EXPECTED}") from e
    if not isinstance(meta, dict):
        raise CLIError(f"{what}: expected a JSON object, got {type(meta).__name__} "
                       f"{_short(meta)}; {_CHECKPOINT_EXPECTED}")
    if not isinstance(meta.get("model"), str):
        raise CLIError(f"{what}: expected a \"model\" name (a string), got "
                       f"{_short(meta.get('model'))}; {_CHECKPOINT_EXPECTED}")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    checks = (("kwargs", lambda v: isinstance(v, dict), "an object of constructor arguments"),
              ("data", lambda v: isinstance(v, str), "a data spec string"),
              ("limit", lambda v: v is None or (is_int(v) and v >= 1),
               "null or a positive integer"),
              ("seed", lambda v: is_int(v) and v >= 0, "a non-negative integer"))
    for key, ok, expected in checks:
        if key in meta and not ok(meta[key]):
            raise CLIError(f"{what}: \"{key}\": expected {expected}, got {_short(meta[key])}")
    return meta


def check_weights(state, model, where):
    """Refuse checkpoint entries that would load as something else than what was saved or
    that hold no usable numbers: a floating entry of the model must be float32 or float64
    in the checkpoint (not float16, not integers that load_state_dict would cast
    silently) and finite; an integer entry (a batch count) must be an integer. Names the
    entry; ``--allow-bad-weights`` skips this, to inspect such a file."""
    targets = model.state_dict()
    override = "(--allow-bad-weights loads it anyway, for inspection)"
    for key, value in state.items():
        target = targets.get(key)
        if target is None:
            continue                      # load_state_dict reports unexpected keys
        if target.dtype.kind == "f":
            if value.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
                raise CLIError(f"{where}: tensor {key!r} has dtype {value.dtype}; expected "
                               f"float32 or float64, the dtype of a model's weights {override}")
            finite = np.isfinite(value)
            if not finite.all():
                nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
                bad = " and ".join(f"{n} {w}" for n, w in ((nan, "nan"), (inf, "inf")) if n)
                raise CLIError(f"{where}: tensor {key!r} (shape {value.shape}) holds {bad} "
                               f"values of {value.size}; expected finite weights {override}")
        elif target.dtype.kind in "iu" and value.dtype.kind not in "iu":
            raise CLIError(f"{where}: tensor {key!r} has dtype {value.dtype}; expected an "
                           f"integer count like the model's {target.dtype} {override}")


def weights_finite(model):
    """True when every floating parameter and buffer of ``model`` is finite."""
    return all(bool(np.isfinite(v).all()) for v in model.state_dict().values()
               if v.dtype.kind == "f")


def _short(value, limit=60):
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _jsonable(value):
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def json_safe(obj):
    """``obj`` with every nan/inf float turned into None (JSON null) and NumPy scalars
    into Python numbers, so that it serialises as strict JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path, obj):
    """``obj`` as strict JSON (nan and inf become null: JSON has no such numbers)."""
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))


def plot_curves(path, history, title=""):
    """Loss and accuracy per epoch, two panels, rendered with the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["test_loss"] for r in history], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["test_acc"] for r in history], "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 20 else epochs[::max(1, len(epochs) // 10)])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _atomic_write(path, lambda f: fig.savefig(f, format="png"))


def _environment(device):
    return {"pycnn": _version(), "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": device}


# --------------------------------------------------------------------------- train

def cmd_train(args):
    from pycnn.data import DataLoader, cifar10_augment

    device = resolve_device(args.device)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    if args.out is not None:
        prepare_out_dir(args.out, create=False)  # cheap checks before the data loads
    train_set, test_set = load_data(args.data, args.limit, args.seed)
    seed_everything(args.seed)
    kwargs = model_kwargs(args.model, train_set.sample_shape, train_set.num_classes)
    model = build_model(args.model, kwargs,
                        f"--model {args.model} does not take {train_set.name} images of "
                        f"shape {train_set.sample_shape}").to(device)
    check_fits(model, args.model, train_set, device)
    optimizer = make_optimizer(args.optimizer, model.parameters(), lr)
    scheduler = make_scheduler(optimizer, args.lr_decay)

    transform = cifar10_augment() if args.data.startswith("cifar10:") else None
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, seed=args.seed,
                              transform=transform)
    test_loader = DataLoader(test_set, args.batch_size)

    if args.out is None:
        run_id, out = create_run_dir("runs", args.model)
    else:
        run_id, out = new_run_id(args.model), args.out
        prepare_out_dir(out)
    with RunLock(out, run_id, force=args.force):
        earlier = _earlier_run(out)
        if earlier and not args.force:
            raise CLIError(f"--out {out}: holds {earlier}; choose another --out, or --force "
                           "to overwrite them")
        for name in remove_stale_temps(out):
            print(f"removed {os.path.join(out, name)}, left by a run killed while saving",
                  file=sys.stderr)
        return _train(args, run_id, out, device, lr, kwargs, model, optimizer, scheduler,
                      train_set, test_set, train_loader, test_loader)


def _train(args, run_id, out, device, lr, kwargs, model, optimizer, scheduler, train_set,
           test_set, train_loader, test_loader):
    """The run itself, in its locked folder ``out``: fit, save, report; the exit status."""
    import pycnn
    from pycnn.train import StopSignals, TrainingDiverged, TrainingInterrupted, fit

    paths = {k: os.path.join(out, f) for k, f in zip(("model", "metrics", "curves"), RUN_FILES)}
    run_args = {"model": args.model, "data": args.data, "epochs": args.epochs,
                "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": lr,
                "lr_decay": args.lr_decay,
                "seed": args.seed, "limit": args.limit, "device": device}
    meta = {"model": args.model, "kwargs": kwargs, "data": args.data, "limit": args.limit,
            "seed": args.seed, "pycnn": _version(), "run_id": run_id, "epochs": 0, "step": 0}
    metrics = {"run_id": run_id, "model": args.model, "data": args.data, "device": device,
               "args": run_args, "versions": _environment(device),
               "train_samples": len(train_set), "test_samples": len(test_set),
               "parameters": model.num_parameters(), "epochs": [], "final_test_acc": None,
               "interrupted": False, "diverged": None}

    print(f"training {args.model} ({metrics['parameters']:,} parameters) on {args.data} "
          f"({len(train_set)} train / {len(test_set)} test) on {device}: {args.optimizer} "
          f"lr {lr:g} (x{args.lr_decay:g} per epoch), batch {args.batch_size}, "
          f"{args.epochs} epochs", flush=True)

    saved = {"epochs": 0}

    def save_model(epochs, step):
        meta.update(epochs=epochs, step=step)
        save_checkpoint(paths["model"], model, meta)

    def on_epoch_end(record, history):
        if not weights_finite(model):     # the epoch's last step blew the weights up
            raise TrainingDiverged(history[:-1], record["epoch"], float("nan"),
                                   reason="the weights hold nan or inf after the epoch's "
                                   "last step")
        save_model(len(history), 0)       # first: metrics.json never runs ahead of model.npz
        saved["epochs"] = len(history)
        metrics["epochs"] = list(history)
        metrics["final_test_acc"] = record["test_acc"]
        write_json(paths["metrics"], metrics)

    status = 0
    pycnn.set_anomaly(bool(args.detect_anomaly))
    try:
        with StopSignals() as stop:
            try:
                # A diverging run is reported once, below, not by NumPy's overflow warnings
                # from inside the kernels at every step.
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    history = fit(model, optimizer, train_loader, test_loader, args.epochs,
                                  device, scheduler=scheduler, progress=not args.no_progress,
                                  on_epoch_end=on_epoch_end,
                                  log=lambda line: print(line, flush=True), stop=stop,
                                  names=[name for name, _ in model.named_parameters()])
            except TrainingInterrupted as e:
                history = e.history
                status = 128 + e.signal
                name = signal.Signals(e.signal).name
                metrics["epochs"] = list(history)
                metrics["interrupted"] = True
                metrics["stopped"] = {"signal": name, "epoch": e.epoch, "step": e.step,
                                      "steps_per_epoch": len(train_loader),
                                      "between_steps": e.clean}
                if e.clean and weights_finite(model):
                    # the weights after the last whole step: nothing trained is lost
                    # meta: the finished (evaluated) epochs, plus the steps of the one
                    # under way (all of them when the stop came before its evaluation)
                    save_model(len(history), e.step if e.epoch > len(history) else 0)
                    held = (f"the weights after step {e.step} of {len(train_loader)} of "
                            f"epoch {e.epoch}")
                elif saved["epochs"] != len(history) or not history:
                    # cut short mid-step, with no save of the last finished epoch (or none
                    # finished): the weights as they are
                    save_model(len(history), None)
                    held = "the weights as the interruption found them"
                else:
                    held = f"epoch {len(history)}'s weights"
                print(f"\n{name}: stopped after {len(history)} finished epoch(s); model.npz "
                      f"holds {held}", file=sys.stderr)
            except TrainingDiverged as e:
                status = EXIT_DIVERGED
                history = e.history
                metrics["epochs"] = list(history)
                metrics["diverged"] = {"epoch": e.epoch, "step": e.step, "train_loss": e.loss,
                                       "reason": e.reason}
                # The weights are nan/inf now (or a step refused to make them so): model.npz
                # keeps the last finite epoch, if any.
                print(f"training diverged: {e.reason} at epoch {e.epoch}"
                      + (f" step {e.step}" if e.step else "") + f"; try a smaller --lr "
                      f"(this run used {lr:g}); stopped" +
                      (f", model.npz holds epoch {len(history)}" if history else
                       ", no model.npz written"), file=sys.stderr, flush=True)
            except pycnn.AnomalyError as e:
                status = EXIT_DIVERGED
                history = metrics["epochs"]
                metrics["diverged"] = {"epoch": len(history) + 1, "step": None,
                                       "train_loss": None, "reason": str(e), "op": e.op,
                                       "phase": e.phase, "where": e.where}
                print(f"training stopped by --detect-anomaly: {e}" +
                      (f"; model.npz holds epoch {len(history)}" if history else
                       "; no model.npz written"), file=sys.stderr, flush=True)
            write_json(paths["metrics"], metrics)
            if history:
                plot_curves(paths["curves"], history, f"{args.model} on {args.data} ({device})")
    except SaveError as e:
        metrics["io_error"] = str(e)
        if e.path != paths["metrics"]:
            try:                          # a small file may still fit where a model did not
                write_json(paths["metrics"], metrics)
            except SaveError:
                pass
        kept = ("its previous version is intact" if os.path.exists(e.path)
                else "nothing was written there")
        print(f"pycnn: error: {e}; {kept}", file=sys.stderr)
        return EXIT_IO
    finally:
        pycnn.set_anomaly(False)
    if metrics["final_test_acc"] is not None:
        print(f"test accuracy {100 * metrics['final_test_acc']:.2f}% on {len(test_set)} "
              f"{args.data} test samples")
    print(f"saved {', '.join(p for p in paths.values() if os.path.exists(p))} (run {run_id})")
    return status


# --------------------------------------------------------------------------- eval

def cmd_eval(args):
    from pycnn.data import DataLoader
    from pycnn.train import evaluate

    state, meta = load_checkpoint(args.checkpoint)
    device = resolve_device(args.device)
    spec = args.data or meta.get("data", "embedded-mnist")
    limit = args.limit if args.limit is not None else (meta.get("limit") if not args.data else None)
    _, test_set = load_data(spec, limit, meta.get("seed", 0))
    model = build_model(meta["model"], meta.get("kwargs", {}), f"--checkpoint {args.checkpoint}")
    if not args.allow_bad_weights:
        check_weights(state, model, f"--checkpoint {args.checkpoint}")
    try:
        model.load_state_dict(state)
    except (ValueError, TypeError, KeyError) as e:
        raise CLIError(f"--checkpoint {args.checkpoint}: {e}") from e
    model.to(device)
    what = (f"--data {spec}: the checkpoint's model {meta['model']}" if args.data else
            f"--checkpoint {args.checkpoint}: its model {meta['model']}")
    check_fits(model, meta["model"], test_set, device, what)
    loss, acc = evaluate(model, DataLoader(test_set, args.batch_size), device)
    print(f"{meta['model']} from {args.checkpoint} on {spec} ({len(test_set)} test samples, "
          f"{device}): test loss {loss:.4f}, test accuracy {100 * acc:.2f}%")
    return 0


# --------------------------------------------------------------------------- summary

def cmd_summary(args):
    models = _models()
    if args.model not in models.MODELS:
        raise CLIError(f"model: expected one of {', '.join(sorted(models.MODELS))}, "
                       f"got {args.model!r}")
    shape = tuple(args.input_shape) if args.input_shape else SUMMARY_SHAPES.get(args.model, (3, 32, 32))
    kwargs = model_kwargs(args.model, shape, args.num_classes)
    model = build_model(args.model, kwargs,
                        f"--model {args.model} does not take inputs of shape {shape}")
    from pycnn.summary import summary
    try:
        text = summary(model, shape, print_fn=None)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--model {args.model} does not take inputs of shape {shape}: {e}") from e
    print(text)
    return 0


# --------------------------------------------------------------------------- parser

def build_parser():
    parser = argparse.ArgumentParser(
        prog="pycnn", description="A CNN engine on hand-written CUDA kernels: train, evaluate, "
        "inspect and benchmark.", epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    device_help = "auto (cuda if available, else cpu), cpu or cuda"
    t = sub.add_parser("train", help="train a model (default: LeNet-5 on embedded MNIST digits)",
                       description="Train a model and write model.npz, metrics.json and "
                       "curves.png.", epilog=EXIT_STATUS_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", default=DEFAULTS["model"], help="lenet5, keras_mnist, vgg_small, "
                   f"resnet18, resnet34, resnet50 (pycnn.models.MODELS; default {DEFAULTS['model']})")
    t.add_argument("--data", default=DEFAULTS["data"],
                   help="embedded-mnist (default), mnist:DIR, fashion:DIR or cifar10:DIR")
    t.add_argument("--epochs", type=_positive_int, default=DEFAULTS["epochs"],
                   help=f"default {DEFAULTS['epochs']}")
    t.add_argument("--batch-size", type=_positive_int, default=DEFAULTS["batch_size"],
                   help=f"default {DEFAULTS['batch_size']}")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS["optimizer"],
                   help=f"default {DEFAULTS['optimizer']} (sgd uses momentum 0.9)")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: " +
                   ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    t.add_argument("--lr-decay", type=_decay_factor, default=DEFAULTS["lr_decay"],
                   metavar="GAMMA", help="multiply the learning rate by GAMMA after each epoch "
                   f"(default {DEFAULTS['lr_decay']:g}; 1 keeps it constant)")
    t.add_argument("--seed", type=_non_negative_int, default=DEFAULTS["seed"],
                   help="seeds the data split, initial weights, dropout and shuffling "
                   f"(default {DEFAULTS['seed']})")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help=device_help)
    t.add_argument("--out", default=None, help="run directory (default runs/<run id>, a new "
                   "folder per run; the run id is <model>-<timestamp>-<6 random hex digits>)")
    t.add_argument("--force", action="store_true", help="overwrite the results of an earlier "
                   "run in --out (a folder that a live run is writing is refused even so)")
    t.add_argument("--detect-anomaly", action="store_true", help="check every op's output and "
                   "gradients for nan/inf and stop at the first op that makes one, naming it "
                   "(slow: for debugging)")
    t.add_argument("--limit", type=_positive_int, default=None,
                   help="use only the first N samples of train and of test")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint written by `pycnn train`")
    e.add_argument("--checkpoint", required=True, help="path to model.npz")
    e.add_argument("--data", default=None, help="default: the data the model was trained on")
    e.add_argument("--limit", type=_positive_int, default=None,
                   help="first N test samples (default: as in training)")
    e.add_argument("--batch-size", type=_positive_int, default=256)
    e.add_argument("--allow-bad-weights", action="store_true", help="load a checkpoint whose "
                   "weights hold nan/inf or are not float32/float64, to inspect it (refused "
                   "otherwise)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help=device_help)
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("summary", help="print a model's layers, output shapes and parameter counts")
    s.add_argument("model", help="a name from pycnn.models.MODELS")
    s.add_argument("--input-shape", type=_positive_int, nargs=3, metavar=("C", "H", "W"),
                   help="default: 1 28 28 for MNIST models, 3 32 32 for vgg/resnet18, "
                   "3 224 224 for resnet50")
    s.add_argument("--num-classes", type=_positive_int, default=None,
                   help="default: the model's own (10 for the MNIST/CIFAR models, 1000 for resnet50)")
    s.set_defaults(func=cmd_summary)

    sub.add_parser("bench", help="benchmark kernels against the reference and cuDNN "
                   "(see `pycnn bench --help`)", add_help=False)
    return parser


def _number_type(convert, accept, what):
    """An argparse ``type``: ``convert(text)`` when ``accept`` holds for it, else an error
    that says what was expected and what came."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_positive_int = _number_type(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number_type(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _number_type(float, lambda v: math.isfinite(v) and v > 0,
                               "a finite positive number")
_decay_factor = _number_type(float, lambda v: 0 < v <= 1, "a factor in (0, 1]")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        # Everything after `bench` belongs to the benchmark's own parser.
        from pycnn.bench import main as bench_main
        result = bench_main(argv[1:])
        return 0 if result is None else result
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except CLIError as e:
        print(f"pycnn: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SaveError as e:
        print(f"pycnn: error: {e}; its previous version, if any, is intact", file=sys.stderr)
        return EXIT_IO
    except OSError as e:                  # reading data or a checkpoint, outside the checks
        where = f"{e.filename}: " if e.filename else ""
        code = errno.errorcode.get(e.errno) if e.errno else None
        print(f"pycnn: error: {where}{e.strerror or e}" + (f" ({code})" if code else ""),
              file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt as e:        # before training began, or a second signal
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"\n{signal.Signals(signum).name}: interrupted", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
