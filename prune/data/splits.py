"""Deterministic split of a training set into the two parts the bi-level method needs: an inner
part on which the weights learn and an outer (held-out) part on which the pruning scores learn.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

from runner.errors import EdgesegError


def inner_outer_split(dataset: Dataset, outer_fraction: float = 0.2, seed: int = 0) -> tuple[Subset, Subset]:
    """(inner, outer) subsets: a seeded permutation of the indices, the first part inner.

    The same dataset length, fraction and seed give the same split in every process, so
    data-parallel workers agree without communicating.
    """
    if not 0.0 < outer_fraction < 1.0:
        raise EdgesegError(
            f"the outer (held-out) fraction {outer_fraction} is not between 0 and 1.",
            "Pass a fraction such as 0.2.",
        )
    length = len(dataset)
    n_outer = round(length * outer_fraction)
    if n_outer < 1 or n_outer >= length:
        raise EdgesegError(
            f"a training set of {length} items cannot be split into inner and outer parts "
            f"with the outer fraction {outer_fraction}.",
            "Use a larger training set or another outer fraction.",
        )
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, order[n_outer:]), Subset(dataset, order[:n_outer])
