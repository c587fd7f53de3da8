"""Datasets and loaders for training and evaluation.

Randomness is a function of (seed, epoch, sample index): each sample's augmentation is seeded
from them, so an epoch draws the same augmentations whatever the number of processes or
loader workers, and a resumed run sees exactly the data it would have seen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from ..dataset_classes import FASHION_MNIST_CLASSES
from ..errors import CrossViTError
from ..model.registry import ModelMeta
from ..runconfig import AugSection, DataSection
from .fashion_mnist import FashionMNIST
from .folders import BadSample, ImageFolder, find_classes
from .in_memory import batchable, in_memory
from .transforms import eval_transform, train_transform

CIFAR_DEFAULT_ROOT = "data/cifar"


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from a few integers (seed, epoch, index, ...)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (part + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) & 0xFFFFFFFFFFFFFFFF
    return value & 0x7FFFFFFFFFFFFFFF


def seed_host(seed: int) -> None:
    """Seed Python's, NumPy's and torch's CPU generators: cheap enough to do per sample
    (torch.manual_seed, which also seeds every GPU, costs ~100x more)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)


def seed_everything(seed: int) -> None:
    """Seed the host's generators and every device's."""
    seed_host(seed)
    torch.manual_seed(seed)


class SeededSamples(Dataset):
    """Seeds Python's, NumPy's and torch's generators from (seed, epoch, index) before each sample."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        seed_host(mix_seed(self.seed, self.epoch, index))
        return self.dataset[index]


class SkipFirst(Sampler):
    """The indices of `sampler` after the first `skip` (to resume in the middle of an epoch)."""

    def __init__(self, sampler: Sampler, skip: int = 0) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        indices = list(self.sampler)
        return iter(indices[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]


@dataclass
class Batch:
    images: torch.Tensor
    targets: torch.Tensor
    bad: list[BadSample]


def collate(samples: list[tuple[Any, int]] | Batch) -> Batch:
    """Stack the readable samples; report the unreadable ones instead of failing. (Datasets held
    in memory hand over finished batches.)"""
    if isinstance(samples, Batch):
        return samples
    bad = [image for image, _ in samples if isinstance(image, BadSample)]
    good = [(image, target) for image, target in samples if not isinstance(image, BadSample)]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), bad)
    return Batch(torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), bad)


# -- datasets -----------------------------------------------------------------------------

def class_names(data: DataSection) -> list[str]:
    if data.dataset == "fashion_mnist":
        return list(FASHION_MNIST_CLASSES)
    if data.dataset == "folder":
        return find_classes(_folder_root(data) / "train")
    return list(_cifar(data, train=False, transform=None).classes)


def _folder_root(data: DataSection) -> Path:
    if not data.path:
        raise CrossViTError("data.dataset=folder needs a path: --data DIR (with DIR/train/<class>/ and DIR/val/<class>/)")
    root = Path(data.path)
    if not root.is_dir():
        raise CrossViTError(f"dataset folder {root} does not exist; expected {root}/train/<class>/ and {root}/val/<class>/")
    return root


def _cifar(data: DataSection, train: bool, transform):
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if data.dataset == "cifar10" else CIFAR100
    root = data.path or CIFAR_DEFAULT_ROOT
    try:
        return cls(root, train=train, transform=transform, download=False)
    except RuntimeError:
        raise CrossViTError(f"{data.dataset} not found in {root}: it needs the extracted python version "
                            f"({cls.base_folder}/); nothing is downloaded here, so copy it there") from None


def build_dataset(data: DataSection, split: str, meta: ModelMeta, aug: AugSection | None, seed: int) -> Dataset:
    """The `split` ('train' or 'val') of the recipe's dataset with the model's preprocessing;
    training splits get `aug` and per-sample seeding. Fashion-MNIST and CIFAR are prepared a
    batch at a time when the augmentation allows it (see in_memory.py)."""
    mode = "L" if meta.input_size[0] == 1 else "RGB"
    if data.dataset == "fashion_mnist":
        if mode == "RGB":
            raise CrossViTError("Fashion-MNIST is grey: use a model with in_chans=1 (e.g. crossvit_micro_28)")
        dataset: Dataset = FashionMNIST(data.path, split)
        images, labels = torch.from_numpy(dataset.images.copy()).unsqueeze(1), dataset.labels
    elif data.dataset == "folder":
        root = _folder_root(data)
        dataset = ImageFolder(root / split, find_classes(root / "train"), mode, None)
        images = None
    else:
        dataset = _cifar(data, split == "train", None)
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(dataset.targets, dtype=torch.long)
    fast = images is not None and batchable(aug, meta, tuple(images.shape[-2:]), images.shape[1])
    if fast:
        dataset = in_memory(images, labels, meta, aug, seed)
    else:
        dataset.transform = train_transform(meta, aug) if aug is not None else eval_transform(meta)
    limit = data.limit_train if split == "train" else data.limit_val
    if limit is not None and limit < len(dataset):
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
        dataset = _Limited(dataset, order[:limit].tolist())
    return SeededSamples(dataset, seed) if aug is not None and not fast else dataset


class _Limited(Subset):
    """A subset that passes the epoch on (in-memory datasets draw their augmentation per epoch)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def train_loader(dataset: Dataset, batch_size: int, workers: int, rank: int, world: int, seed: int,
                 repeats: int = 1, skip_batches: int = 0, pin_memory: bool = False) -> DataLoader:
    """Shuffled batches of this process's share of the data; the same global order for any
    number of processes (process r takes every world-th sample of one permutation)."""
    if repeats > 1:
        from timm.data.distributed_sampler import RepeatAugSampler

        sampler: Sampler = RepeatAugSampler(dataset, num_replicas=world, rank=rank, shuffle=True, num_repeats=repeats)
    else:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch_size, sampler=SkipFirst(sampler, skip_batches * batch_size),
                      num_workers=workers, collate_fn=collate, drop_last=True, pin_memory=pin_memory,
                      persistent_workers=False)


def eval_loader(dataset: Dataset, batch_size: int, workers: int, rank: int, world: int,
                pin_memory: bool = False) -> DataLoader:
    """This process's share of the evaluation data: every sample counted exactly once overall."""
    share = Subset(dataset, list(range(rank, len(dataset), world)))
    return DataLoader(share, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory)
