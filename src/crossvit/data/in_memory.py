"""Small images held in memory as one uint8 tensor and prepared a whole batch at a time.

Fashion-MNIST and CIFAR fit in memory, and at 28-32 px taking each image through PIL and a
transform chain costs about a sixth of a small model's training step. Flips and pad-and-crop
are cheap on a batch tensor, so recipes that use only those (and evaluation, which only
normalises when the model's input is the images' own size) take this path; any other
augmentation goes through the per-sample pipeline.

Randomness stays a function of (seed, epoch, index): each epoch draws one table of random
numbers for the whole dataset, and a sample reads its own row, whatever batch or process it
falls in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..model.registry import ModelMeta
from ..training.config import AugSection


class InMemoryImages(Dataset):
    """(N, C, H, W) uint8 images and their labels; `__getitems__` returns a finished batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                 hflip: float = 0.0, pad: int = 0, seed: int = 0) -> None:
        self.images, self.labels = images, labels
        channels = images.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1) * 255
        self.scale = 1 / (torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1) * 255)
        self.hflip, self.pad, self.seed = hflip, pad, seed
        self.draws: torch.Tensor | None = None
        self.set_epoch(0)

    @property
    def augments(self) -> bool:
        return self.hflip > 0 or self.pad > 0

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's (flip, row offset, column offset) numbers for every sample."""
        if not self.augments:
            return
        from . import mix_seed  # the package imports this module

        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        self.draws = torch.rand(len(self.labels), 3, generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        images, labels = self.batch([index])
        return images[0], int(labels[0])

    def __getitems__(self, indices: list[int]):
        from . import Batch

        return Batch(*self.batch(indices), bad=[])

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        if self.augments:
            draws = self.draws[index]
            if self.pad:
                images = _pad_and_crop(images, self.pad, draws[:, 1], draws[:, 2])
            if self.hflip > 0:
                flip = (draws[:, 0] < self.hflip).view(-1, 1, 1, 1)
                images = torch.where(flip, images.flip(-1), images)
        return (images.float() - self.mean) * self.scale, self.labels[index]


def _pad_and_crop(images: torch.Tensor, pad: int, row_draw: torch.Tensor, col_draw: torch.Tensor) -> torch.Tensor:
    """Zero-pad by `pad` and crop back to the original size at offsets drawn in [0, 2 * pad]
    (torchvision's RandomCrop(size, padding=pad), one offset per image)."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = (row_draw * (2 * pad + 1)).long().clamp(max=2 * pad)[:, None] + torch.arange(h)
    cols = (col_draw * (2 * pad + 1)).long().clamp(max=2 * pad)[:, None] + torch.arange(w)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def batchable(aug: AugSection | None, meta: ModelMeta, image_size: tuple[int, int], channels: int) -> bool:
    """Whether these images, for this model and augmentation, can take the batch path: the model
    takes them at their own size and channels, and the augmentation is at most flip and pad-crop."""
    c, h, w = meta.input_size
    if (c, h, w) != (channels, *image_size) or meta.crop_pct != 1.0:
        return False
    return aug is None or (aug.crop in ("none", "pad") and not aug.randaugment and aug.random_erasing == 0)


def in_memory(images: torch.Tensor, labels: torch.Tensor, meta: ModelMeta, aug: AugSection | None,
              seed: int) -> InMemoryImages:
    """The batch-path dataset for uint8 (N, C, H, W) `images`; `aug` None for evaluation."""
    if aug is None:
        return InMemoryImages(images, labels, meta.mean, meta.std)
    pad = max(1, images.shape[-1] // 8) if aug.crop == "pad" else 0  # as the per-sample pipeline pads
    return InMemoryImages(images, labels, meta.mean, meta.std, hflip=aug.hflip, pad=pad, seed=seed)
