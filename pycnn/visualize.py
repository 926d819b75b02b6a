"""Pictures of a trained model (``pycnn visualize``): the first layer's filters as a grid,
the feature maps each convolution makes of one image, and the confusion matrix on the
test split. Every function writes one PNG (atomically, through ``save``) and returns a
one-line caption saying what it shows. Rendered with matplotlib's Agg canvas (no display).
"""
from __future__ import annotations

import math

import numpy as np

from . import nn
from .tensor import no_grad, tensor


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def conv_layers(model):
    """[(name, Conv2d)] in the order the model holds them."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _tiles(images, columns):
    """(rows, columns) of a grid for ``len(images)`` tiles."""
    columns = max(1, min(columns, len(images)))
    return math.ceil(len(images) / columns), columns


def _grid_figure(tiles, columns, title, cmap=None, tile_inches=0.7, labels=None):
    rows, cols = _tiles(tiles, columns)
    fig = _figure(max(3.0, cols * tile_inches), rows * tile_inches + 0.6)
    for i, tile in enumerate(tiles):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(tile, cmap=cmap, interpolation="nearest", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None:
            ax.set_title(labels[i], fontsize=6, pad=1)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / fig.get_figheight(),
                        wspace=0.08, hspace=0.25 if labels else 0.08)
    return fig


def _scaled(a):
    """``a`` mapped to [0, 1] by its own min and max (a constant array becomes 0.5)."""
    lo, hi = float(a.min()), float(a.max())
    return np.full_like(a, 0.5) if hi - lo < 1e-12 else (a - lo) / (hi - lo)


def filter_grid(model, save, columns=16):
    """The first convolution's filters, one tile each (RGB when it reads three channels,
    else the mean over its input channels in grey), each scaled to its own range."""
    layers = conv_layers(model)
    if not layers:
        raise ValueError("model: has no Conv2d layer, so no filters to show")
    name, conv = layers[0]
    w = np.asarray(conv.weight.numpy(), np.float64)            # (K, C, R, S)
    k, c, r, s = w.shape
    if c == 3:
        tiles = [_scaled(f).transpose(1, 2, 0) for f in w]
        cmap, how = None, "as RGB"
    else:
        tiles = [_scaled(f.mean(axis=0)) for f in w]
        cmap, how = "gray", "in grey" if c == 1 else f"in grey (mean of {c} input channels)"
    caption = (f"the {k} filters of the first convolution ({name}, {r}x{s} over {c} "
               f"channel{'s' if c > 1 else ''}), {how}, each scaled to its own min..max")
    fig = _grid_figure(tiles, columns, caption, cmap)
    save(fig)
    return caption


def feature_maps(model, image, device="cpu", max_maps=32, columns=8):
    """[(layer name, maps (K, H, W) of the first ``max_maps`` channels)] of every Conv2d
    for one normalised image (C, H, W), in eval mode."""
    layers = conv_layers(model)
    seen, handles = [], []
    for name, conv in layers:
        def hook(module, inputs, output, name=name):
            seen.append((name, np.asarray(output.numpy()[0, :max_maps], np.float64)))
        handles.append(conv.register_forward_hook(hook))
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad():
            model(tensor(np.asarray(image, np.float32)[None], device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen


def feature_map_figure(name, maps, image_label, save, columns=8):
    k, h, w = maps.shape
    caption = (f"{name}: the first {k} feature maps ({h}x{w}) of {image_label}, each scaled "
               f"to its own min..max (bright: strong response)")
    fig = _grid_figure([_scaled(m) for m in maps], columns, caption, "viridis", 1.0,
                       labels=[str(i) for i in range(k)])
    save(fig)
    return caption


def confusion_matrix(labels, predictions, num_classes):
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
    return counts


def confusion_figure(counts, classes, what, save):
    n = len(classes)
    acc = np.trace(counts) / max(1, counts.sum())
    caption = (f"confusion matrix on {what} ({int(counts.sum())} images, accuracy "
               f"{100 * acc:.1f}%): row = true class, column = predicted, diagonal = correct")
    side = max(4.0, 0.45 * n + 2.5)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(counts, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(n)
    short = [c if len(c) <= 12 else c[:11] + "." for c in classes]
    ax.set_xticks(ticks)
    ax.set_xticklabels(short, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks)
    ax.set_yticklabels(short, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        top = counts.max() if counts.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if counts[i, j] > top / 2 else "black")
    ax.set_title(caption, fontsize=8, wrap=True)
    fig.tight_layout()
    save(fig)
    return caption
