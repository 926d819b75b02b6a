"""The training loop behind ``pycnn train``: :func:`fit` and :func:`evaluate`.

Batches come from :class:`pycnn.data.DataLoader` as NumPy arrays and are moved
to ``device`` here; the model is expected to be on that device already.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from . import functional as F
from .tensor import no_grad, tensor


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`fit`. ``history`` holds the epochs that finished."""

    def __init__(self, history):
        super().__init__("training interrupted")
        self.history = history


def _batch_counts(logits, y):
    """(sum of correct predictions) for a batch; ``y`` is a NumPy label array."""
    pred = logits.argmax(axis=1).numpy()
    return int((np.asarray(pred) == y).sum())


def evaluate(model, loader, device="cpu"):
    """Mean cross-entropy and accuracy of ``model`` over ``loader``, in eval mode and without gradients."""
    was_training = getattr(model, "training", True)
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    try:
        with no_grad():
            for x, y in loader:
                logits = model(tensor(x, device=device))
                total_loss += F.cross_entropy(logits, y).item() * len(y)
                correct += _batch_counts(logits, y)
                seen += len(y)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("loader: expected at least one sample to evaluate, got none")
    return total_loss / seen, correct / seen


def _progress_bar(loader, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:          # tqdm is a dependency; still, never fail a run over a progress bar
        return None
    return tqdm(total=len(loader), desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def train_epoch(model, optimizer, loader, device="cpu", bar=None):
    """One pass over ``loader``; returns (mean training loss, training accuracy, samples seen)."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        logits = model(tensor(x, device=device))
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += _batch_counts(logits, y)
        seen += len(y)
        if bar is not None:
            bar.update(1)
            if step % 5 == 0 or step == len(loader) - 1:
                rate = seen / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", samples_s=f"{rate:.0f}")
    if seen == 0:
        raise ValueError("train_loader: expected at least one batch, got none "
                         "(dataset smaller than batch_size with drop_last=True?)")
    return total_loss / seen, correct / seen, seen


def fit(model, optimizer, train_loader, test_loader, epochs, device="cpu", scheduler=None,
        progress=True, on_epoch_end=None, log=print):
    """Train for ``epochs`` passes, evaluating on ``test_loader`` after each.

    Returns a list with one dict per epoch (epoch, train_loss, train_acc,
    test_loss, test_acc, seconds, samples_per_s, lr). ``on_epoch_end(record,
    history)`` runs after each epoch (the CLI saves its checkpoint there).
    ``log`` gets one line per epoch (None for silence). The progress bar shows
    only when ``progress`` is true and stderr is a terminal.

    Ctrl-C raises :class:`TrainingInterrupted` (a KeyboardInterrupt) carrying the
    history of the finished epochs, so that the caller can save and exit.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
    show_bar = bool(progress) and sys.stderr.isatty()
    history = []
    for epoch in range(1, epochs + 1):
        bar = _progress_bar(train_loader, f"epoch {epoch}/{epochs}", show_bar)
        start = time.perf_counter()
        try:
            train_loss, train_acc, seen = train_epoch(model, optimizer, train_loader, device, bar)
            train_seconds = time.perf_counter() - start
            test_loss, test_acc = evaluate(model, test_loader, device)
        except KeyboardInterrupt:
            raise TrainingInterrupted(history) from None
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
            except KeyboardInterrupt:
                raise TrainingInterrupted(history) from None
    return history


def _current_lr(optimizer):
    lr = getattr(optimizer, "lr", None)
    if lr is None:
        groups = getattr(optimizer, "param_groups", None)
        if groups:
            lr = groups[0].get("lr")
    return float(lr) if lr is not None else None
