"""``convert(model)``: run a torch model's CNN layers on pycnn's kernels.

Every module whose type is exactly one of ``pycnn.torch.nn.REPLACEMENTS``'s keys
(torch.nn.Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, ReLU, LeakyReLU,
Sigmoid, Tanh, BatchNorm2d, Dropout) becomes its pycnn-backed subclass, in place,
holding the very same Parameter and buffer objects under the same names: the
state_dict keys do not change and an optimizer built before keeps working.
Everything else stays torch, and the report says why.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pycnn.torch.nn import REPLACEMENTS

__all__ = ["convert", "ConversionReport"]

_SUPPORTED_DTYPES = {"cpu": (torch.float32, torch.float64), "cuda": (torch.float32,)}


@dataclass
class ConversionReport:
    """What ``convert`` did: ``replaced`` and ``left`` are lists of
    ``(module name, torch class name, note)``."""

    replaced: list = field(default_factory=list)
    left: list = field(default_factory=list)

    def __str__(self):
        lines = [f"pycnn.torch.convert: {len(self.replaced)} modules run on pycnn, "
                 f"{len(self.left)} stay torch"]
        counts = {}
        for _, cls, _ in self.replaced:
            counts[cls] = counts.get(cls, 0) + 1
        if counts:
            lines.append("  replaced: " + ", ".join(f"{n} x {c}" for c, n in counts.items()))
        for name, cls, note in self.replaced:
            if note:
                lines.append(f"  replaced {name} ({cls}): {note}")
        for name, cls, why in self.left:
            lines.append(f"  left {name} ({cls}): {why}")
        return "\n".join(lines)


def _why_not(module) -> str | None:
    """None if ``module`` (of a type pycnn replaces) can run on pycnn, else the reason."""
    for p in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
        if not p.is_floating_point():
            continue
        dtypes = _SUPPORTED_DTYPES.get(p.device.type)
        if dtypes is None:
            return f"on {p.device}: pycnn runs on cpu and cuda"
        if p.dtype not in dtypes:
            names = "/".join(str(d).replace("torch.", "") for d in dtypes)
            return f"dtype {str(p.dtype).replace('torch.', '')} on {p.device.type}: pycnn " \
                   f"takes {names} there"
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r}: pycnn pads with zeros only"
    if isinstance(module, nn.AvgPool2d) and module.divisor_override is not None:
        return "divisor_override is set: pycnn divides by the window's size"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        if size is None or (isinstance(size, (tuple, list)) and None in size):
            return f"output_size={size!r}: pycnn needs every output size given"
    return None


def _note(module) -> str:
    if getattr(module, "inplace", False):
        return "inplace=True runs out of place (same result)"
    return ""


def _left_reason(module) -> str:
    cls = type(module)
    for base in REPLACEMENTS:
        if issubclass(cls, base) and cls is not base:
            return (f"a subclass of torch.nn.{base.__name__}, whose forward may differ: "
                    f"only the exact class is replaced")
    if isinstance(module, nn.Linear):
        return "no pycnn kernel (a matrix product: torch's)"
    return f"no pycnn kernel for torch.nn.{cls.__name__}" if cls.__module__.startswith(
        "torch.nn") else f"not a torch.nn layer pycnn knows ({cls.__module__}.{cls.__name__})"


def _swap(module, new_cls):
    """A ``new_cls`` instance holding ``module``'s state (the same Parameter objects)."""
    new = new_cls.__new__(new_cls)
    new.__dict__.update(module.__dict__)
    for key in ("_parameters", "_buffers", "_modules"):
        new.__dict__[key] = dict(module.__dict__[key])
    return new


def convert(model: nn.Module, *, verbose: bool = True, return_report: bool = False):
    """Replace, in place, the layers of ``model`` that pycnn's kernels can run.

    Returns ``model`` (or ``(model, report)`` with ``return_report=True``); with
    ``verbose`` prints the report: each module replaced, and each leaf module left
    to torch with the reason.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    report = ConversionReport()
    pycnn_classes = set(REPLACEMENTS.values())
    if type(model) in REPLACEMENTS and _why_not(model) is None:
        model = _swap(model, REPLACEMENTS[type(model)])
        report.replaced.append(("(model)", type(model).__mro__[1].__name__, _note(model)))
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            cls = type(child)
            if cls in pycnn_classes:
                continue
            if cls in REPLACEMENTS:
                why = _why_not(child)
                if why is None:
                    setattr(parent, name, _swap(child, REPLACEMENTS[cls]))
                    report.replaced.append((full, cls.__name__, _note(child)))
                else:
                    report.left.append((full, cls.__name__, why))
            elif not list(child.children()):
                report.left.append((full, cls.__name__, _left_reason(child)))
    if verbose:
        print(report)
    return (model, report) if return_report else model
