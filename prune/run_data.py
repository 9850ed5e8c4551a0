"""The data of a run: training (inner/outer split) and validation sets, and seeded loaders."""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from prune.data import build_dataset, inner_outer_split
from prune.parallel import rank_and_world
from prune.settings import PruneSettings


class RunData:
    """Training (inner/outer) and validation sets, and seeded loaders per phase and epoch."""

    def __init__(self, settings: PruneSettings) -> None:
        size, seed = settings.input_size, settings.seed
        common = {"num_classes": settings.num_classes, "seed": seed}
        self.train = build_dataset(settings.data, "train", size, length=settings.train_scenes, **common)
        self.val = build_dataset(settings.data, "val", size, length=settings.val_scenes, **common)
        self.inner, self.outer = inner_outer_split(self.train, seed=seed)
        self.num_classes = getattr(self.train, "num_classes", settings.num_classes)
        self.settings = settings

    def batches(self, dataset: Dataset, tag: int, epoch: int, batch_size: int | None = None) -> Iterator[Any]:
        """Endless shuffled batches (of `batch_size`, default the settings' batch size), the same
        for the same (seed, tag, epoch): resumable."""
        rank = rank_and_world()[0]  # data parallel: each process its own batches
        generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + tag * 1009 + epoch + rank * 65_537)
        loader = DataLoader(dataset, batch_size=batch_size or self.settings.batch_size, shuffle=True,
                            generator=generator)
        return itertools.chain.from_iterable(itertools.repeat(loader))
