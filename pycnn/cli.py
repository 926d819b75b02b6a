"""The ``pycnn`` command: train, eval, predict, visualize, summary, bench.

    pycnn train                       LeNet-5 on the 5,000 embedded MNIST digits
    pycnn train --model resnet18 --data cifar10:~/data/cifar --epochs 30
    pycnn train --model resnet18 --data folder:~/photos      (one sub-folder per class)
    pycnn train --resume runs/resnet18-.../                  (carry on where it stopped)
    pycnn eval --checkpoint runs/lenet5-.../model.npz
    pycnn predict --checkpoint runs/.../model.npz cat.jpg    (top-k classes by name)
    pycnn visualize --checkpoint runs/.../model.npz          (filters, feature maps, confusion)
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
import subprocess
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
    x = pycnn.tensor(dataset.images(slice(0, 1)), device=device)
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


# Above this many parameters per training sample, a model has the capacity to memorise
# every sample many times over (lenet5 on the 4,000 digits: 15; resnet18 on CIFAR-10's
# 50,000: 220; resnet50 on 64 digits: 367,000).
PARAMS_PER_SAMPLE_WARNING = 10_000


def warn_if_too_big(model, name, train_set, log=None):
    """One line on stderr when ``model`` is far too big for ``train_set``; returns it."""
    params, n = model.num_parameters(), len(train_set)
    if params <= PARAMS_PER_SAMPLE_WARNING * n:
        return None
    smaller = ", ".join(m for m in ("lenet5", "vgg_small", "resnet18") if m != name)
    line = (f"pycnn: warning: {name} has {params:,} parameters for {n:,} training samples "
            f"({params // n:,} per sample): it can memorise them rather than learn; "
            f"augmentation (--augment), more data or a smaller model ({smaller}) helps")
    (log or (lambda text: print(text, file=sys.stderr)))(line)
    return line


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


def default_augment(spec):
    """What --augment auto means for a data set: CIFAR-10's pad-and-crop and flip; for
    photos in a folder a random resized crop (half the area or more) and flip; nothing
    for digits, whose meaning a mirror changes."""
    if spec.startswith("cifar10:"):
        return "crop,flip"
    if spec.startswith("folder:"):
        return "resized-crop=0.5,flip"
    return "none"


def make_augmentation(text, spec, train_set):
    """The training transform of --augment ``text`` (auto, none, or a list), or None."""
    from pycnn.data import augmentation, parse_augment
    text = default_augment(spec) if text == "auto" else text
    try:
        return augmentation(parse_augment(text), train_set)
    except ValueError as e:
        raise CLIError(f"--augment {text}: {e}") from e


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


# The side of the square images `--data folder:DIR` is decoded to, per model, unless
# --image-size says otherwise: the input each model was designed for.
IMAGE_SIZES = {"lenet5": 28, "keras_mnist": 28, "vgg_small": 32, "resnet18": 32,
               "resnet34": 32}
DEFAULT_IMAGE_SIZE = 224


def folder_options(spec, model=None, image_size=None, val_split=0.2, mean=None, std=None,
                   progress=True):
    """The keyword arguments of pycnn.images.load_folder for ``spec``; {} when ``spec`` is
    not folder:DIR."""
    if not spec.startswith("folder:"):
        return {}
    size = image_size or IMAGE_SIZES.get(model, DEFAULT_IMAGE_SIZE)
    return {"size": int(size), "val_split": float(val_split), "mean": mean, "std": std,
            "progress": progress}


def load_data(spec, limit=None, seed=0, folder=None):
    from pycnn.data import get_dataset
    try:
        train, test = get_dataset(spec, seed=seed, **(folder or {}))
    except ImportError as e:
        raise CLIError(f"--data {spec}: {e}") from e
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


TRAIN_PREFIX = "__train__/"


def save_checkpoint(path, model, meta, train_arrays=None):
    """The state dict as NumPy arrays plus ``__meta__`` (a JSON string), written atomically.
    ``train_arrays`` (the optimizer's buffers, for ``--resume``) go in the same file under
    ``__train__/``, so that weights and optimizer state can never come from two epochs."""
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    if META_KEY in state or any(k.startswith(TRAIN_PREFIX) for k in state):
        raise ValueError(f"state_dict: a key is named {META_KEY!r} or starts with "
                         f"{TRAIN_PREFIX!r}, which checkpoints reserve")
    state[META_KEY] = np.array(json.dumps(meta))
    for k, v in (train_arrays or {}).items():
        state[TRAIN_PREFIX + k] = np.asarray(v)
    _atomic_write(path, lambda f: np.savez(f, **state))


def training_state(optimizer, scheduler, train_loader):
    """(JSON-able dict, arrays) of what `--resume` needs beyond the weights: the optimizer's
    hyperparameters and buffers, the schedule, pycnn's generator and the loader's pass."""
    from pycnn import random as pycnn_random
    opt = optimizer.state_dict()
    arrays, scalars = {}, {}
    for i, st in opt["state"].items():
        for name, value in st.items():
            if hasattr(value, "shape") and np.ndim(value) > 0:
                arrays[f"optim/{i}/{name}"] = value
            else:
                scalars.setdefault(str(i), {})[name] = (value.item() if hasattr(value, "item")
                                                        else value)
    info = {"optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
            "scheduler": None if scheduler is None else json_safe(scheduler.state_dict()),
            "rng": pycnn_random.generator().bit_generator.state,
            "loader_epoch": train_loader.epoch}
    return json_safe(info), arrays


def restore_training_state(info, arrays, optimizer, scheduler, where):
    """Load what :func:`training_state` saved into ``optimizer`` and ``scheduler`` and
    pycnn's generator; a CLIError naming ``where`` if it does not fit."""
    from pycnn import random as pycnn_random
    state = {}
    for key, value in arrays.items():
        _, i, name = key.split("/", 2)
        state.setdefault(int(i), {})[name] = value
    for i, values in info["optimizer"]["scalars"].items():
        state.setdefault(int(i), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state,
                                   "param_groups": info["optimizer"]["param_groups"]})
        if scheduler is not None and info.get("scheduler") is not None:
            scheduler.load_state_dict(info["scheduler"])
        pycnn_random.generator().bit_generator.state = info["rng"]
    except (ValueError, TypeError, KeyError) as e:
        raise CLIError(f"{where}: its optimizer state does not fit this run ({e})") from e


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
        entries = {k: _checkpoint_entry(z, k, where) for k in z.files
                   if not k.startswith(TRAIN_PREFIX)}
    meta = _checkpoint_meta(entries.pop(META_KEY), where)
    return entries, meta


def load_train_arrays(path):
    """The ``__train__/`` entries of a checkpoint (the optimizer's buffers), prefix removed."""
    with np.load(path, allow_pickle=False) as z:
        return {k[len(TRAIN_PREFIX):]: z[k] for k in z.files if k.startswith(TRAIN_PREFIX)}


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

# What `--resume` restores from the run, and the value each flag has when not given.
RESUMED_FLAGS = {"model": DEFAULTS["model"], "data": DEFAULTS["data"],
                 "batch_size": DEFAULTS["batch_size"], "optimizer": DEFAULTS["optimizer"],
                 "lr": None, "lr_decay": DEFAULTS["lr_decay"], "seed": DEFAULTS["seed"],
                 "limit": None, "augment": "auto", "image_size": None, "val_split": 0.2,
                 "mean": None, "std": None, "out": None}


def resume_settings(args):
    """Read the run folder ``args.resume`` and set ``args`` to the run's own settings;
    returns {"meta", "metrics", "arrays", "epochs", "step"}. A flag given with another
    value than the run's, a run saved without its optimizer state, or one already
    finished (unless --epochs asks for more) is a CLIError."""
    run = args.resume
    where = f"--resume {run}"
    model_path, metrics_path = (os.path.join(run, f) for f in RUN_FILES[:2])
    if not os.path.isdir(run):
        raise CLIError(f"{where}: expected a run folder (runs/<run id>), got "
                       + ("a file" if os.path.exists(run) else "no such folder"))
    for path in (model_path, metrics_path):
        if not os.path.isfile(path):
            raise CLIError(f"{where}: no {os.path.basename(path)} in it; expected the folder "
                           "of a run of `pycnn train`")
    _, meta = load_checkpoint(model_path)
    try:
        with open(metrics_path) as f:
            metrics = json.load(f)
        run_args = metrics["args"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CLIError(f"{where}: cannot read {metrics_path} ({e})") from e
    if not meta.get("train"):
        raise CLIError(f"{where}: its model.npz holds no optimizer state (saved by an older "
                       "pycnn, or cut short in the middle of a step); it cannot be resumed")
    saved = {k: run_args.get(k) for k in ("model", "data", "batch_size", "optimizer", "lr",
                                          "lr_decay", "seed", "limit")}
    saved["augment"] = run_args.get("augment", "auto")
    folder = meta.get("folder") or {}
    saved.update(image_size=folder.get("size"), val_split=folder.get("val_split", 0.2),
                 mean=meta.get("mean") if folder else None,
                 std=meta.get("std") if folder else None, out=run)
    for name, default in RESUMED_FLAGS.items():
        given = getattr(args, name)
        if given != default and given != saved[name] and name not in ("mean", "std"):
            flag = "--" + name.replace("_", "-")
            raise CLIError(f"{flag} {given}: a resumed run keeps its own settings ({flag} "
                           f"{saved[name]} in {run}); only --epochs, --device and "
                           "--no-progress may change")
        setattr(args, name, saved[name])
    done, step = int(meta.get("epochs", 0)), meta.get("step") or 0
    if args.epochs == DEFAULTS["epochs"]:
        args.epochs = int(run_args.get("epochs", args.epochs))
    if done >= args.epochs:
        raise CLIError(f"{where}: the run has finished its {done} epoch(s); give --epochs N "
                       f"with N > {done} to train it further")
    return {"meta": meta, "metrics": metrics, "arrays": load_train_arrays(model_path),
            "epochs": done, "step": int(step), "path": model_path}


def _without_workers(argv):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out


def cmd_train(args):
    from pycnn import distributed
    if args.workers is not None:
        if args.workers < 1:
            raise CLIError(f"--workers: expected a positive number of processes, got {args.workers}")
        if distributed.launched_by_mpi():
            raise CLIError("--workers: this process already runs under mpiexec; leave "
                           "--workers out (mpiexec's -n sets the processes)")
        if args.workers > 1:
            try:
                cmd = distributed.mpiexec_command(args.workers, _without_workers(args.argv))
            except (FileNotFoundError, ImportError) as e:
                raise CLIError(str(e)) from e
            print(" ".join(cmd), file=sys.stderr, flush=True)
            return subprocess.call(cmd)
    if not distributed.launched_by_mpi():
        if args.sync_bn:
            raise CLIError("--sync-bn: only for data-parallel training (--workers N, or mpiexec)")
        return _cmd_train(args, None)
    device = resolve_device(args.device)
    try:
        comm = distributed.init(device)
    except ImportError as e:
        raise CLIError(str(e)) from e
    if comm.rank != 0:      # one voice: rank 0 prints, shows progress and writes the run's files
        sys.stdout = open(os.devnull, "w")
        sys.stderr = open(os.devnull, "w")
    return distributed.run_guarded(lambda: _cmd_train(args, comm), comm)


def _cmd_train(args, comm):
    from pycnn.data import DataLoader

    resumed = resume_settings(args) if args.resume else None
    device = resolve_device(args.device)
    writer = comm is None or comm.rank == 0
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    if args.out is not None and writer:
        prepare_out_dir(args.out, create=False)  # cheap checks before the data loads
    folder = folder_options(args.data, args.model, args.image_size, args.val_split,
                            args.mean, args.std, not args.no_progress)
    if not folder and (args.image_size or args.mean or args.std):
        raise CLIError("--image-size, --mean and --std: only for --data folder:DIR (the "
                       f"other data sets have fixed sizes and statistics), got --data {args.data}")
    train_set, test_set = load_data(args.data, args.limit, args.seed, folder)
    seed_everything(args.seed)
    kwargs = model_kwargs(args.model, train_set.sample_shape, train_set.num_classes)
    model = build_model(args.model, kwargs,
                        f"--model {args.model} does not take {train_set.name} images of "
                        f"shape {train_set.sample_shape}").to(device)
    check_fits(model, args.model, train_set, device)
    warn_if_too_big(model, args.model, train_set)
    optimizer = make_optimizer(args.optimizer, model.parameters(), lr)
    scheduler = make_scheduler(optimizer, args.lr_decay)

    transform = make_augmentation(args.augment, args.data, train_set)
    shard = None if comm is None else (comm.rank, comm.size)
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, seed=args.seed,
                              transform=transform, shard=shard)
    test_loader = DataLoader(test_set, args.batch_size, shard=shard)

    if resumed is not None:
        where = f"--resume {args.resume}"
        state, _ = load_checkpoint(resumed["path"])
        check_weights(state, model, where)
        try:
            model.load_state_dict(state)
        except (ValueError, TypeError, KeyError) as e:
            raise CLIError(f"{where}: {e}") from e
        restore_training_state(resumed["meta"]["train"], resumed["arrays"], optimizer,
                               scheduler, where)
        train_loader.epoch = int(resumed["meta"]["train"]["loader_epoch"])
        if resumed["step"]:               # stopped mid-epoch: that pass starts again
            train_loader.epoch -= 1
        run_id, out = resumed["meta"].get("run_id") or new_run_id(args.model), args.resume
    ddp = None
    if comm is not None:
        from pycnn import distributed
        if args.sync_bn:
            distributed.convert_sync_batchnorm(model, comm)
        ddp = distributed.DataParallel(model, comm)   # rank 0's weights on every rank
    if resumed is not None:
        pass
    elif not writer:                      # the other ranks write nothing: no folder of their own
        run_id, out = None, None
    elif args.out is None:
        run_id, out = create_run_dir("runs", args.model)
    else:
        run_id, out = new_run_id(args.model), args.out
        prepare_out_dir(out)
    if not writer:
        return _train(args, run_id, out, device, lr, kwargs, model, optimizer, scheduler,
                      train_set, test_set, train_loader, test_loader, resumed, ddp)
    with RunLock(out, run_id, force=args.force):
        earlier = _earlier_run(out)
        if earlier and not args.force and resumed is None:
            raise CLIError(f"--out {out}: holds {earlier}; choose another --out, or --force "
                           "to overwrite them")
        for name in remove_stale_temps(out):
            print(f"removed {os.path.join(out, name)}, left by a run killed while saving",
                  file=sys.stderr)
        return _train(args, run_id, out, device, lr, kwargs, model, optimizer, scheduler,
                      train_set, test_set, train_loader, test_loader, resumed, ddp)


def _train(args, run_id, out, device, lr, kwargs, model, optimizer, scheduler, train_set,
           test_set, train_loader, test_loader, resumed=None, ddp=None):
    """The run itself, in its locked folder ``out``: fit, save, report; the exit status.
    ``resumed``: {"metrics": the run's metrics.json, "epochs": finished, "step": steps of
    the next one done} when continuing a run."""
    import pycnn
    from pycnn.train import StopSignals, TrainingDiverged, TrainingInterrupted, fit

    writer = ddp is None or ddp.comm.rank == 0       # data-parallel: rank 0 writes the run's files
    paths = {k: os.path.join(out, f) if writer else None
             for k, f in zip(("model", "metrics", "curves"), RUN_FILES)}
    _write_json = write_json if writer else (lambda *a, **k: None)
    _plot_curves = plot_curves if writer else (lambda *a, **k: None)
    run_args = {"model": args.model, "data": args.data, "epochs": args.epochs,
                "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": lr,
                "lr_decay": args.lr_decay, "augment": args.augment,
                "seed": args.seed, "limit": args.limit, "device": device,
                "workers": 1 if ddp is None else ddp.comm.size, "sync_bn": bool(args.sync_bn)}
    meta = {"model": args.model, "kwargs": kwargs, "data": args.data, "limit": args.limit,
            "seed": args.seed, "pycnn": _version(), "run_id": run_id, "epochs": 0, "step": 0,
            "classes": list(train_set.classes), "input_shape": list(train_set.sample_shape),
            "mean": train_set.mean, "std": train_set.std}
    if args.data.startswith("folder:"):
        # how `pycnn predict` and `pycnn eval` decode images as training did
        meta["folder"] = {"size": train_set.sample_shape[-1], "val_split": args.val_split,
                          "channels": train_set.sample_shape[0]}
    metrics = {"run_id": run_id, "model": args.model, "data": args.data, "device": device,
               "args": run_args, "versions": _environment(device),
               "train_samples": len(train_set), "test_samples": len(test_set),
               "parameters": model.num_parameters(), "epochs": [], "final_test_acc": None,
               "interrupted": False, "diverged": None}
    if resumed is not None:
        before = resumed["metrics"]
        metrics["epochs"] = list(before.get("epochs", []))[:resumed["epochs"]]
        metrics["final_test_acc"] = (metrics["epochs"][-1]["test_acc"] if metrics["epochs"]
                                     else None)
        metrics["resumed"] = list(before.get("resumed", [])) + [
            {"epoch": resumed["epochs"], "step": resumed["step"],
             "at": datetime.datetime.now().isoformat(timespec="seconds")}]
        print(f"resuming run {run_id} after epoch {resumed['epochs']}"
              + (f" and step {resumed['step']} of epoch {resumed['epochs'] + 1}"
                 if resumed["step"] else ""), flush=True)

    print(f"training {args.model} ({metrics['parameters']:,} parameters) on {args.data} "
          f"({len(train_set)} train / {len(test_set)} test) on {device}: {args.optimizer} "
          f"lr {lr:g} (x{args.lr_decay:g} per epoch), batch {args.batch_size}"
          + ("" if ddp is None else f" per process x {ddp.comm.size} processes ({ddp.comm.kind})")
          + ", "
          f"{args.epochs} epochs", flush=True)

    saved = {"epochs": 0 if resumed is None else resumed["epochs"]}

    def save_model(epochs, step):
        if not writer:                    # (buffers: rank 0's, as evaluation uses them)
            return
        meta.update(epochs=epochs, step=step)
        info, arrays = training_state(optimizer, scheduler, train_loader)
        meta["train"] = info if step is not None else None   # cut mid-step: not resumable
        save_checkpoint(paths["model"], model, meta, arrays if step is not None else None)

    def on_epoch_end(record, history):
        if not weights_finite(model):     # the epoch's last step blew the weights up
            raise TrainingDiverged(history[:-1], record["epoch"], float("nan"),
                                   reason="the weights hold nan or inf after the epoch's "
                                   "last step")
        save_model(len(history), 0)       # first: metrics.json never runs ahead of model.npz
        saved["epochs"] = len(history)
        metrics["epochs"] = list(history)
        metrics["final_test_acc"] = record["test_acc"]
        _write_json(paths["metrics"], metrics)

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
                                  names=[name for name, _ in model.named_parameters()],
                                  history=metrics["epochs"],
                                  skip_steps=0 if resumed is None else resumed["step"],
                                  ddp=ddp)
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
            _write_json(paths["metrics"], metrics)
            if history:
                _plot_curves(paths["curves"], history, f"{args.model} on {args.data} ({device})")
    except SaveError as e:
        metrics["io_error"] = str(e)
        if e.path != paths["metrics"]:
            try:                          # a small file may still fit where a model did not
                _write_json(paths["metrics"], metrics)
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
    if writer:
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
    _, test_set = load_data(spec, limit, meta.get("seed", 0),
                            checkpoint_folder_options(meta, spec))
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


def checkpoint_folder_options(meta, spec, progress=True):
    """load_folder's arguments for ``spec`` as the checkpoint's training decoded it: same
    size, split and normalisation (so that the validation images are the same ones)."""
    if not spec.startswith("folder:"):
        return {}
    saved = meta.get("folder") or {}
    size = saved.get("size") or (meta.get("input_shape") or [0, 0, DEFAULT_IMAGE_SIZE])[-1]
    return {"size": int(size), "val_split": float(saved.get("val_split", 0.2)),
            "channels": saved.get("channels"), "mean": meta.get("mean"),
            "std": meta.get("std"), "progress": progress}


# --------------------------------------------------------------------------- predict

def load_model(path, device, allow_bad_weights=False):
    """(model in eval mode on ``device``, meta) of a checkpoint written by `pycnn train`."""
    state, meta = load_checkpoint(path)
    model = build_model(meta["model"], meta.get("kwargs", {}), f"--checkpoint {path}")
    if not allow_bad_weights:
        check_weights(state, model, f"--checkpoint {path}")
    try:
        model.load_state_dict(state)
    except (ValueError, TypeError, KeyError) as e:
        raise CLIError(f"--checkpoint {path}: {e}") from e
    model.to(device)
    model.eval()
    return model, meta


def checkpoint_preprocessing(meta, path):
    """(channels, side, mean, std, class names) that turn an image file into the model's
    input, from the checkpoint (older checkpoints: from the data set they name)."""
    from pycnn import data
    spec = meta.get("data", "embedded-mnist")
    known = {"embedded-mnist": (data.MNIST_MEAN, data.MNIST_STD, data.MNIST_CLASSES),
             "mnist": (data.MNIST_MEAN, data.MNIST_STD, data.MNIST_CLASSES),
             "fashion": (data.FASHION_MEAN, data.FASHION_STD, data.FASHION_CLASSES),
             "fashion-mnist": (data.FASHION_MEAN, data.FASHION_STD, data.FASHION_CLASSES),
             "cifar10": (data.CIFAR10_MEAN, data.CIFAR10_STD, data.CIFAR10_CLASSES)}
    fallback = known.get(spec.partition(":")[0])
    shape = meta.get("input_shape")
    if shape is None and fallback is not None:
        shape = [1, 28, 28] if spec.partition(":")[0] != "cifar10" else [3, 32, 32]
    mean = meta.get("mean") or (fallback[0] if fallback else None)
    std = meta.get("std") or (fallback[1] if fallback else None)
    classes = meta.get("classes") or (list(fallback[2]) if fallback else None)
    if shape is None or mean is None or std is None:
        raise CLIError(f"--checkpoint {path}: does not say how its images were prepared "
                       "(input_shape, mean, std); retrain it with this pycnn")
    c, h, w = (int(v) for v in shape)
    if h != w:
        raise CLIError(f"--checkpoint {path}: input {h}x{w}; predict takes square inputs only")
    return c, h, mean, std, classes


def cmd_predict(args):
    import pycnn
    from pycnn.images import ImageError, decode_image

    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device)
    channels, side, mean, std, classes = checkpoint_preprocessing(meta, args.checkpoint)
    m = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    sd = np.asarray(std, np.float32).reshape(-1, 1, 1)
    results, failed = [], 0
    for path in args.images:
        try:
            pixels = decode_image(path, side, channels)
        except ImageError as e:
            failed += 1
            print(f"pycnn: error: {e}", file=sys.stderr)
            results.append({"image": path, "error": str(e)})
            continue
        x = ((pixels.astype(np.float32) / 255.0 - m) / sd)[None]
        with pycnn.no_grad():
            logits = model(pycnn.tensor(x, device=device)).numpy().astype(np.float64)[0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        k = min(args.top_k, p.size)
        top = np.argsort(-p, kind="stable")[:k]
        names = [classes[i] if classes and i < len(classes) else str(i) for i in top]
        results.append({"image": path, "top": [{"class": n, "index": int(i),
                                                "probability": float(p[i])}
                                               for n, i in zip(names, top)]})
        if not args.json:
            print(f"{path}: " + ", ".join(f"{n} {100 * p[i]:.1f}%" for n, i in zip(names, top)))
    if args.json:
        print(json.dumps(json_safe({"checkpoint": args.checkpoint, "model": meta["model"],
                                    "predictions": results}), indent=2))
    return EXIT_USAGE if failed else 0


# --------------------------------------------------------------------------- visualize

def _predict_all(model, dataset, device, batch_size=256):
    import pycnn
    out = []
    with pycnn.no_grad():
        for start in range(0, len(dataset), batch_size):
            x, _ = dataset[start:start + batch_size]
            out.append(model(pycnn.tensor(x, device=device)).numpy().argmax(axis=1))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def cmd_visualize(args):
    from pycnn import visualize as vis
    from pycnn.images import ImageError, decode_image

    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, device)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                   "visualize")
    prepare_out_dir(out)
    written = []

    def saver(name):
        path = os.path.join(out, name)

        def save(fig):
            _atomic_write(path, lambda f: fig.savefig(f, format="png"))
        return path, save

    if not vis.conv_layers(model):
        raise CLIError(f"--checkpoint {args.checkpoint}: model {meta['model']} has no Conv2d "
                       "layer: no filters or feature maps to show")
    path, save = saver("filters.png")
    written.append((path, vis.filter_grid(model, save)))

    spec = args.data or meta.get("data", "embedded-mnist")
    test_set = None
    if not args.no_confusion or not args.image:
        _, test_set = load_data(spec, args.limit, meta.get("seed", 0),
                                checkpoint_folder_options(meta, spec, progress=False))
        what = (f"--data {spec}: the checkpoint's model {meta['model']}" if args.data else
                f"--checkpoint {args.checkpoint}: its model {meta['model']}")
        check_fits(model, meta["model"], test_set, device, what)
        model.eval()                      # check_fits leaves it in training mode
    if args.image:
        channels, side, mean, std, _ = checkpoint_preprocessing(meta, args.checkpoint)
        try:
            pixels = decode_image(args.image, side, channels)
        except ImageError as e:
            raise CLIError(f"--image: {e}") from e
        image = ((pixels.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)
                  .reshape(-1, 1, 1)) / np.asarray(std, np.float32).reshape(-1, 1, 1))
        label = os.path.basename(args.image)
    else:
        image = test_set.images(0)
        label = (f"test image 0 (a {test_set.classes[int(test_set.y[0])]})")
    for name, maps in vis.feature_maps(model, image, device, args.max_maps):
        path, save = saver(f"features-{name.replace('.', '_')}.png")
        written.append((path, vis.feature_map_figure(name, maps, label, save)))
    if not args.no_confusion:
        predictions = _predict_all(model, test_set, device)
        counts = vis.confusion_matrix(test_set.y, predictions, test_set.num_classes)
        path, save = saver("confusion.png")
        written.append((path, vis.confusion_figure(counts, list(test_set.classes),
                                                   f"the {spec} test split", save)))
    for path, caption in written:
        print(f"{path}: {caption}")
    return 0


# --------------------------------------------------------------------------- summary

def cmd_summary(args):
    models = _models()
    if args.model not in models.MODELS:
        raise CLIError(f"model: expected one of {', '.join(sorted(models.MODELS))}, "
                       f"got {args.model!r}")
    shape = tuple(args.input_shape) if args.input_shape else SUMMARY_SHAPES.get(args.model, (3, 32, 32))
    if len(shape) not in (3, 4):
        raise CLIError(f"--input-shape: expected C H W or N C H W, got {len(shape)} numbers "
                       f"{' '.join(map(str, shape))}")
    sample = shape[-3:]
    kwargs = model_kwargs(args.model, sample, args.num_classes)
    model = build_model(args.model, kwargs,
                        f"model {args.model} does not take inputs of shape {sample}")
    from pycnn.summary import summary
    try:
        text = summary(model, shape, print_fn=None, keras=args.keras)
    except (ValueError, TypeError) as e:
        raise CLIError(f"model {args.model} does not take inputs of shape {shape}: {e}") from e
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
                   "resnet18, resnet34, resnet50, resnet101, resnet152, vgg11, vgg16, alexnet "
                   f"(pycnn.models.MODELS; default {DEFAULTS['model']})")
    t.add_argument("--data", default=DEFAULTS["data"],
                   help="embedded-mnist (default), mnist:DIR, fashion:DIR, cifar10:DIR, or "
                   "folder:DIR (one sub-folder of JPEG/PNG/BMP images per class)")
    t.add_argument("--image-size", type=_positive_int, default=None, metavar="N",
                   help="folder:DIR only: decode images to N x N (shorter side resized, "
                   "centre crop; default: the model's input, 28 for lenet5, 32 for "
                   f"vgg_small/resnet18/34, else {DEFAULT_IMAGE_SIZE})")
    t.add_argument("--val-split", type=_fraction, default=0.2, metavar="F",
                   help="folder:DIR only: hold out F of each class for validation "
                   "(default 0.2; a DIR with train/ and val/ or test/ sub-folders is split "
                   "already)")
    t.add_argument("--mean", type=_floats, default=None, metavar="M[,M,M]",
                   help="folder:DIR only: per-channel mean in [0, 1] units (default: "
                   "computed from the training images)")
    t.add_argument("--std", type=_floats, default=None, metavar="S[,S,S]",
                   help="folder:DIR only: per-channel standard deviation (default: computed)")
    from pycnn.data import AUGMENT_HELP
    t.add_argument("--augment", default="auto", metavar="LIST",
                   help=f"training augmentation, applied per batch: {AUGMENT_HELP}. auto "
                   "(default): crop,flip for cifar10, resized-crop=0.5,flip for folder, "
                   "none for digits")
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
    t.add_argument("--workers", type=int, default=None, metavar="N",
                   help="data-parallel training in N processes on this machine: starts "
                   "mpiexec -n N with these arguments (one GPU per process with --device "
                   "cuda); --batch-size is then per process. Under mpiexec, pycnn train is "
                   "data-parallel without it")
    t.add_argument("--sync-bn", action="store_true",
                   help="data-parallel training: batch norm over the whole batch of every "
                   "process, not each process's share (PyTorch's SyncBatchNorm)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last save (an epoch's end, or "
                   "the step a signal stopped it at) with its weights, optimizer state, "
                   "schedule and random state, to its --epochs (or a larger --epochs); the "
                   "result equals an uninterrupted run's")
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

    pr = sub.add_parser("predict", help="classify image files with a checkpoint: the top-k "
                        "classes by name with their probabilities")
    pr.add_argument("--checkpoint", required=True, help="path to model.npz")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG or BMP files")
    pr.add_argument("--top-k", type=_positive_int, default=3, help="default 3")
    pr.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    pr.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help=device_help)
    pr.set_defaults(func=cmd_predict)

    v = sub.add_parser("visualize", help="write PNGs of a checkpoint: first-layer filters, "
                       "feature maps of each conv layer, confusion matrix on the test split")
    v.add_argument("--checkpoint", required=True, help="path to model.npz")
    v.add_argument("--image", default=None, help="the image whose feature maps to show "
                   "(default: the first test image)")
    v.add_argument("--out", default=None, help="folder for the PNGs (default: visualize/ "
                   "next to the checkpoint)")
    v.add_argument("--data", default=None, help="default: the data the model was trained on")
    v.add_argument("--limit", type=_positive_int, default=None, help="first N test samples")
    v.add_argument("--max-maps", type=_positive_int, default=32,
                   help="feature maps shown per layer (default 32)")
    v.add_argument("--no-confusion", action="store_true", help="skip the confusion matrix "
                   "(and, with --image, loading the data)")
    v.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help=device_help)
    v.set_defaults(func=cmd_visualize)

    s = sub.add_parser("summary", help="print a model's layers, output shapes and parameter counts")
    s.add_argument("model", help="a name from pycnn.models.MODELS")
    s.add_argument("--input-shape", type=_positive_int, nargs="+", metavar="N",
                   help="C H W, or N C H W to size the activations for a batch of N "
                   "(default: 1 28 28 for MNIST models, 3 32 32 for vgg_small/resnet18, "
                   "3 224 224 for resnet50)")
    s.add_argument("--keras", action="store_true", help="shapes as Keras prints them: "
                   "(None, H, W, C)")
    s.add_argument("--num-classes", type=_positive_int, default=None,
                   help="default: the model's own (10 for the MNIST/CIFAR models, 1000 for resnet50)")
    s.set_defaults(func=cmd_summary)

    sub.add_parser("bench", help="benchmark kernels against the reference and cuDNN "
                   "(see `pycnn bench --help`)", add_help=False)
    sub.add_parser("inspect", help="what a kernel does on a shape, without a GPU: launch, registers, "
                   "occupancy, instruction mix, memory requests, roofline bound "
                   "(pycnn inspect -h for its options)", add_help=False)
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
_fraction = _number_type(float, lambda v: 0 <= v < 1, "a fraction in [0, 1)")


def _floats(text):
    """An argparse ``type``: one number or three, comma-separated."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 3) or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected one number or three separated by commas, "
                                         f"got {text!r}")
    return values


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "inspect":
        # Everything after `inspect` belongs to its own parser.
        from pycnn.inspect import main as inspect_main
        return inspect_main(argv[1:])
    if argv and argv[0] == "bench":
        # Everything after `bench` belongs to the benchmark's own parser.
        from pycnn.bench import main as bench_main
        result = bench_main(argv[1:])
        return 0 if result is None else result
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
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
