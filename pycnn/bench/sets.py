"""Shape sets: the layer shapes the benchmark runs, kept as data in bench/shapes/*.json.

A set file holds ``name``, ``description``, ``source`` and ``cases``; optionally
``batch`` (the batch when --batch is not given), ``N`` (a batch that --batch cannot
change, e.g. the batch-1 set) and ``cases_from`` (reuse another set's cases).
Every case has ``op`` (conv, max_pool, avg_pool, global_avg_pool, act,
bias_relu, batch_norm), ``name``, ``C``, ``H``, ``W``, ``count`` (how often the shape occurs
in the network) and may fix its own ``N``. A conv case adds ``K``, ``R``
(filter height), ``S`` (filter width), ``stride``, ``padding`` (symmetric, per
side), ``dilation`` (pairs (h, w) or ints) and ``groups``; a pool case adds
``kernel``, ``stride`` and ``padding``.
"""
from __future__ import annotations

import json
from pathlib import Path

from pycnn import paths
from pycnn.shapes import pair

SETS = ("resnet50", "vgg16", "deepbench", "depthwise", "small", "poolact", "core", "tiny")
DEFAULT_BATCH = 32
KINDS = ("conv", "max_pool", "avg_pool", "global_avg_pool", "act", "bias_relu", "batch_norm")


def shapes_dir(path=None) -> Path:
    """The folder of shape sets: ``path``, else bench/shapes/ (or the installed copy)."""
    found = Path(path) if path is not None else paths.shapes_dir()
    if not (found / "tiny.json").is_file():
        raise FileNotFoundError(
            f"shapes directory: expected the shape sets (tiny.json, resnet50.json, ...) in "
            f"{found}, found none; pass --shapes-dir")
    return found


def load_set(name: str, directory=None) -> dict:
    """The set ``name`` with every case normalised (pairs as tuples, padding4 added)."""
    if name not in SETS:
        raise ValueError(f"set: expected one of {', '.join(SETS)}, got {name!r}")
    directory = shapes_dir(directory)
    doc = json.loads((directory / f"{name}.json").read_text())
    if "cases_from" in doc:
        doc["cases"] = json.loads((directory / f"{doc['cases_from']}.json").read_text())["cases"]
    doc["cases"] = [_normalise(c, name) for c in doc["cases"]]
    return doc


def batch_for(doc: dict, batch: int | None) -> int:
    """The set's batch: its fixed N, else --batch, else its default, else 32."""
    if "N" in doc:
        return doc["N"]
    return batch if batch is not None else doc.get("batch", DEFAULT_BATCH)


def _normalise(case: dict, set_name: str) -> dict:
    where = f"{set_name}: case {case.get('name', '?')}"
    if case.get("op") not in KINDS:
        raise ValueError(f"{where}: op: expected one of {', '.join(KINDS)}, got {case.get('op')!r}")
    c = dict(case)
    c.setdefault("count", 1)
    if c["op"] == "conv":
        c["stride"] = pair(c["stride"], f"{where}: stride")
        c["dilation"] = pair(c.get("dilation", 1), f"{where}: dilation")
        ph, pw = pair(c["padding"], f"{where}: padding", minimum=0)
        c["padding"] = (ph, pw)
        c["padding4"] = (ph, ph, pw, pw)
        c.setdefault("groups", 1)
        if c["C"] % c["groups"] or c["K"] % c["groups"]:
            raise ValueError(f"{where}: groups: expected a divisor of C={c['C']} and "
                             f"K={c['K']}, got {c['groups']}")
    elif c["op"] in ("max_pool", "avg_pool"):
        c["kernel"] = pair(c["kernel"], f"{where}: kernel")
        c["stride"] = pair(c.get("stride", c["kernel"]), f"{where}: stride")
        c["padding"] = pair(c.get("padding", 0), f"{where}: padding", minimum=0)
    return c
