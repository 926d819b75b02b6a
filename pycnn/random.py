"""pycnn's random state: one seedable NumPy generator for initialisation and
dropout seeds, so that ``pycnn.manual_seed(s)`` makes a run repeatable."""
from __future__ import annotations

import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed the generator behind weight initialisation and dropout masks."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _generator


def next_seed() -> int:
    """A fresh 32-bit seed for a counter-based kernel (dropout)."""
    return int(_generator.integers(0, 2**32))
