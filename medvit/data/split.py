"""The authors' random split (docs/protocol.md §2), exactly as their code draws it.

``idxs = list(range(N)); random.Random(42).shuffle(idxs)``; the first ``int(N * val_size)`` shuffled
indices are val+test (first half val, second half test), the rest train. Indices are CSV row
positions. The split is the same for every repetition.
"""
from __future__ import annotations

import random


def authors_split(n: int, val_size: float, seed: int = 42) -> dict[str, list[int]]:
    """Row indices of the train / val / test splits for ``n`` rows."""
    if not 0 < val_size < 1:
        raise ValueError(f"val_size must be in (0, 1), got {val_size}")
    idxs = list(range(n))
    random.Random(seed).shuffle(idxs)
    cut = int(n * val_size)
    val_test, train = idxs[:cut], idxs[cut:]
    half = len(val_test) // 2
    return {"train": train, "val": val_test[:half], "test": val_test[half:]}
