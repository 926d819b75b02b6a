"""The training loop behind ``pycnn train``: :func:`fit` and :func:`evaluate`.

Batches come from :class:`pycnn.data.DataLoader` as NumPy arrays and are moved
to ``device`` here; the model is expected to be on that device already.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time

import numpy as np

from . import functional as F
from .optim import NonFiniteGradient
from .tensor import move_array, no_grad, tensor


class TrainingInterrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM) or Ctrl-C stopped :func:`fit`. ``history`` holds the
    epochs that finished; ``signal`` is the signal's number (SIGINT for a bare
    KeyboardInterrupt); ``epoch`` is the epoch under way and ``step`` the steps of it
    that finished. ``clean`` is true when the stop came between two steps (asked for
    through :class:`StopSignals`), so that the weights are those after a whole step;
    false when a KeyboardInterrupt cut a step short (the weights may be half updated)."""

    def __init__(self, history, signum=None, epoch=None, step=None, clean=False):
        super().__init__("training interrupted")
        self.history = history
        self.signal = int(signal.SIGINT if signum is None else signum)
        self.epoch, self.step, self.clean = epoch, step, clean


class TrainingDiverged(RuntimeError):
    """The mean training loss of an epoch came out non-finite (nan or inf), or a step met
    a non-finite gradient: the weights are ruined (or would be), and every further epoch
    would be wasted. ``history`` holds the epochs that finished with a finite loss;
    ``epoch`` is the one that diverged; ``reason`` says what was seen, ``step`` (None
    for an epoch's mean loss) the step it was seen at."""

    def __init__(self, history, epoch, loss, reason=None, step=None):
        self.reason = reason or f"loss is {loss}"
        super().__init__(f"training diverged: {self.reason} at epoch {epoch}")
        self.history = history
        self.epoch = epoch
        self.loss = loss
        self.step = step


class StopSignals:
    """While entered, SIGINT and SIGTERM ask :func:`fit` to stop after the current step
    rather than kill it mid-update: ``received`` becomes the first signal's number, and
    fit raises a clean :class:`TrainingInterrupted` at the next step boundary (or after
    the end-of-epoch save under way). A second signal stops at once (a KeyboardInterrupt
    from wherever the program is). The previous handlers come back on exit. Outside the
    main thread (where Python cannot install handlers) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = None
        self._previous = {}

    def __enter__(self):
        self.received = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = signum
            # os.write, not print: a handler may run in the middle of a print to stderr
            os.write(2, f"\n{name}: stopping after this step and saving (send it again to "
                        f"stop at once)\n".encode())
            return
        raise _SecondSignal(signum)


class _SecondSignal(KeyboardInterrupt):
    def __init__(self, signum):
        super().__init__(f"second signal {signum}")
        self.signum = signum


class _StopRequested(Exception):
    """Raised at a step boundary once a StopSignals has received a signal."""

    def __init__(self, step):
        super().__init__(step)
        self.step = step


class _Totals:
    """Summed loss and correct predictions, kept on the batches' device: adding a batch
    launches two tiny reductions and never waits for the GPU (``loss.item()`` and a
    host copy of the predictions did, every step); ``means()`` reads them back once."""

    def __init__(self):
        self.loss, self.correct, self.seen = 0.0, 0, 0

    def add(self, loss, logits, labels) -> None:
        n = int(labels.shape[0])
        self.loss = self.loss + loss.data.astype(np.float64) * n  # float64: many batches
        self.correct = self.correct + (logits.data.argmax(axis=1) == labels).sum()
        self.seen += n

    def means(self, ddp=None):
        """(mean loss, accuracy) over the samples added so far; with ``ddp`` (a
        pycnn.distributed.DataParallel), over every rank's."""
        loss, correct, seen = float(self.loss), int(self.correct), self.seen
        if ddp is not None:
            loss, correct, seen = ddp.comm.sum_scalars([loss, correct, seen])
        if seen == 0:
            return math.nan, math.nan
        return loss / seen, correct / seen


def _batch(x, y, device):
    """The images as a Tensor and the labels as an array, both on ``device``."""
    return tensor(x, device=device), move_array(np.asarray(y), device)


def _stop_asked(stop, ddp=None):
    asked = stop is not None and stop.received is not None
    return ddp.any(asked) if ddp is not None else asked   # every rank stops at the same step


def evaluate(model, loader, device="cpu", stop=None, ddp=None):
    """Mean cross-entropy and accuracy of ``model`` over ``loader``, in eval mode and without
    gradients. With ``stop`` (a :class:`StopSignals`) a signal ends it between batches.
    With ``ddp`` each rank evaluates its shard of ``loader`` (a sharded DataLoader) and the
    sums are all-reduced: every rank returns the figures of the whole set."""
    was_training = getattr(model, "training", True)
    model.eval()
    totals = _Totals()
    if ddp is not None:
        ddp.sync_buffers()                 # rank 0's running statistics
        if _stop_asked(stop, ddp):         # data-parallel: asked once, before the pass
            raise _StopRequested(None)
    try:
        with no_grad():
            for x, y in loader:
                if ddp is None and _stop_asked(stop):
                    raise _StopRequested(None)
                if len(y) == 0:            # this rank's part of a short last batch
                    continue
                images, labels = _batch(x, y, device)
                logits = model(images)
                totals.add(F.cross_entropy(logits, labels), logits, labels)
    finally:
        model.train(was_training)
    loss, acc = totals.means(ddp)
    if math.isnan(acc):
        raise ValueError("loader: expected at least one sample to evaluate, got none")
    return loss, acc


def _progress_bar(loader, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:          # tqdm is a dependency; still, never fail a run over a progress bar
        return None
    return tqdm(total=len(loader), desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def train_epoch(model, optimizer, loader, device="cpu", bar=None, stop=None, first_step=0,
                ddp=None):
    """One pass over ``loader``; returns (mean training loss, training accuracy, samples seen).

    With ``stop`` (a :class:`StopSignals`), a signal ends the pass after the step under
    way (``_StopRequested`` carrying the steps done). A non-finite gradient
    (:class:`pycnn.optim.NonFiniteGradient`, raised before any weight changed) comes out
    with ``step`` (1-based) and ``loss`` (that step's) set on it. ``first_step``: the
    number of the loader's first batch (a pass resumed mid-way starts there).

    With ``ddp`` (a :class:`pycnn.distributed.DataParallel` of ``model``) each rank trains
    on its shard of every batch, the gradients are averaged over the ranks before each
    step, and the loss and accuracy returned are the whole batch's."""
    model.train()
    totals = _Totals()
    start = time.perf_counter()
    last_step = len(loader) - 1
    for step, (x, y) in enumerate(loader, start=first_step):
        if ddp is not None and ddp.sync_bn and loader.last_global < ddp.comm.size:
            continue   # a last batch too short for every rank: synchronised batch norm needs each
        optimizer.zero_grad()
        loss = None
        if ddp is not None:
            ddp.begin_step(len(y), loader.last_global, flag=_stop_asked(stop))
        if len(y):                         # (a rank's part of a short last batch may be empty)
            images, labels = _batch(x, y, device)
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            loss.backward()
        if ddp is not None:
            ddp.finish()                   # the gradients of the mean loss over every rank's samples
        try:
            optimizer.step()
        except NonFiniteGradient as e:
            e.step, e.loss = step + 1, float(loss.item()) if loss is not None else math.nan
            raise
        if loss is not None:
            totals.add(loss, logits, labels)
            # The graph hangs off loss and logits (every activation of this step): drop it
            # now, or it stays alive through the next step's forward, next to that step's
            # activations (vgg_small, batch 32, CPU: peak 212 -> 200 MB).
            del images, logits, loss
        if bar is not None:
            bar.update(1)
            if step % 5 == 0 or step == last_step:  # reading the loss syncs the GPU: not every step
                rate = totals.seen / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{totals.means()[0]:.4f}", samples_s=f"{rate:.0f}")
        if (ddp.flagged if ddp is not None else _stop_asked(stop)):   # every rank: the same step
            raise _StopRequested(step + 1)
    loss_mean, acc = totals.means(ddp)
    seen = totals.seen if ddp is None else int(ddp.comm.sum_scalars([totals.seen])[0])
    if seen == 0:
        raise ValueError("train_loader: expected at least one batch, got none "
                         "(dataset smaller than batch_size with drop_last=True?)")
    return loss_mean, acc, seen


def fit(model, optimizer, train_loader, test_loader, epochs, device="cpu", scheduler=None,
        progress=True, on_epoch_end=None, log=print, stop_on_divergence=True, stop=None,
        names=None, history=None, skip_steps=0, ddp=None):
    """Train for ``epochs`` passes, evaluating on ``test_loader`` after each.

    Returns a list with one dict per epoch (epoch, train_loss, train_acc,
    test_loss, test_acc, seconds, samples_per_s, lr). ``on_epoch_end(record,
    history)`` runs after each epoch (the CLI saves its checkpoint there).
    ``log`` gets one line per epoch (None for silence). The progress bar shows
    only when ``progress`` is true and stderr is a terminal.

    Ctrl-C raises :class:`TrainingInterrupted` (a KeyboardInterrupt) carrying the
    history of the finished epochs, so that the caller can save and exit. Under a
    :class:`StopSignals` passed as ``stop``, SIGINT and SIGTERM finish the step under way
    first (or the ``on_epoch_end`` under way), and the TrainingInterrupted is ``clean``.

    An epoch whose mean training loss is nan or inf raises :class:`TrainingDiverged`
    (carrying the finite epochs before it, not evaluated and without calling
    ``on_epoch_end``) unless ``stop_on_divergence`` is false; so does a step whose
    gradient holds nan or inf (the optimizer refuses it before any weight changes),
    naming the parameter (``names``: the parameters' names in the optimizer's order).

    Resuming: ``history`` holds the epochs already done (training goes on with the next),
    and ``skip_steps`` the steps of that next epoch already done (the loader, a
    :class:`pycnn.data.DataLoader`, skips them; that epoch's train loss and accuracy then
    cover the remaining steps only, and are nan if none remain).

    ``ddp``: data-parallel training (pycnn.distributed); the loaders are then sharded, and
    every rank sees the same losses, accuracies and stops.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
    show_bar = bool(progress) and sys.stderr.isatty()
    history = list(history or [])
    for epoch in range(len(history) + 1, epochs + 1):
        skip, skip_steps = skip_steps, 0
        bar = _progress_bar(train_loader, f"epoch {epoch}/{epochs}", show_bar)
        start = time.perf_counter()
        steps = len(train_loader)
        try:
            if skip >= steps:             # stopped after its last step, before evaluating
                train_loss, train_acc, seen = math.nan, math.nan, 0
                train_loader.epoch += 1   # the pass is done: the next draws the next order
            else:
                if skip:
                    train_loader.skip(skip)
                train_loss, train_acc, seen = train_epoch(model, optimizer, train_loader,
                                                          device, bar, stop, first_step=skip,
                                                          ddp=ddp)
            train_seconds = time.perf_counter() - start
            if stop_on_divergence and not math.isfinite(train_loss) and skip < steps:
                raise TrainingDiverged(history, epoch, train_loss)
            test_loss, test_acc = evaluate(model, test_loader, device, stop, ddp)
        except NonFiniteGradient as e:
            name = names[e.index] if names is not None and e.index < len(names) else \
                f"parameter {e.index}"
            reason = (f"loss is {e.loss}" if not math.isfinite(e.loss) else
                      f"the gradient of {name} (shape {e.shape}) holds {e.describe()}")
            raise TrainingDiverged(history, epoch, e.loss, reason=reason, step=e.step) from None
        except _StopRequested as e:
            raise TrainingInterrupted(history, stop.received, epoch,
                                      steps if e.step is None else e.step, clean=True) from None
        except _SecondSignal:
            raise                         # stop at once: no more saving
        except KeyboardInterrupt as e:
            raise TrainingInterrupted(history, None, epoch) from None
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "seconds": seconds,
            "samples_per_s": seen / max(train_seconds, 1e-9),
            "lr": _current_lr(optimizer),
        }
        history.append(record)
        if log is not None:
            log(f"epoch {epoch:>3}/{epochs}  train loss {train_loss:.4f}  "
                f"train acc {100 * train_acc:6.2f}%  test acc {100 * test_acc:6.2f}%  "
                f"{seconds:6.1f} s")
        if scheduler is not None:
            scheduler.step()
        if on_epoch_end is not None:
            try:
                on_epoch_end(record, history)
            except _SecondSignal:
                raise
            except KeyboardInterrupt:
                raise TrainingInterrupted(history, None, epoch, steps) from None
        if _stop_asked(stop, ddp) and epoch < epochs:
            raise TrainingInterrupted(history, stop.received, epoch, steps, clean=True)
    return history


def _current_lr(optimizer):
    lr = getattr(optimizer, "lr", None)
    if lr is None:
        groups = getattr(optimizer, "param_groups", None)
        if groups:
            lr = groups[0].get("lr")
    return float(lr) if lr is not None else None
