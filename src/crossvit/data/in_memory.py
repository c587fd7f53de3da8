"""Small images held in memory as one uint8 tensor and prepared a whole batch at a time.

Fashion-MNIST and CIFAR fit in memory, and at 28-32 px taking each image through PIL and a
transform chain costs about a sixth of a small model's training step. Flips, pad-and-crop and
random erasing are cheap on a batch tensor, so recipes that use only those (and evaluation,
which only normalises when the model's input is the images' own size) take this path; any
other augmentation goes through the per-sample pipeline.

Randomness stays a function of (seed, epoch, index): each epoch draws one table of random
numbers for the whole dataset, and a sample reads its own row, whatever batch or process it
falls in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..model.registry import ModelMeta
from ..runconfig import AugSection


class InMemoryImages(Dataset):
    """(N, C, H, W) uint8 images and their labels; `__getitems__` returns a finished batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                 hflip: float = 0.0, pad: int = 0, erase: float = 0.0, seed: int = 0) -> None:
        self.images, self.labels = images, labels
        channels = images.shape[1]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1) * 255
        self.scale = 1 / (torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1) * 255)
        self.hflip, self.pad, self.erase, self.seed = hflip, pad, erase, seed
        self.draws: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None
        self.set_epoch(0)

    @property
    def augments(self) -> bool:
        return self.hflip > 0 or self.pad > 0 or self.erase > 0

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's numbers for every sample: flip, row and column offsets, then
        whether to erase, which noise image, and the erased boxes' tries."""
        if not self.augments:
            return
        from . import mix_seed  # the package imports this module

        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        self.draws = torch.rand(len(self.labels), 5 + 4 * _ERASE_TRIES if self.erase else 3, generator=generator)
        if self.erase:
            self.noise = torch.randn(_NOISE_IMAGES, *self.images.shape[1:], generator=generator)

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
        images = (images.float() - self.mean) * self.scale
        if self.erase > 0:
            images = self._erased(images, draws)
        return images, self.labels[index]

    def _erased(self, images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """timm's RandomErasing (mode "pixel", one box) on a normalised batch: with probability
        `erase` a box of 2-33% of the image, aspect ratio 0.3-3.3 (log-uniform), is filled with
        normal noise; of up to ten tries, the first box that fits is used."""
        n, _, h, w = images.shape
        tries = draws[:, 5:].view(n, _ERASE_TRIES, 4)
        area = h * w * (0.02 + tries[..., 0] * (1 / 3 - 0.02))
        ratio = torch.exp(math.log(0.3) + tries[..., 1] * (math.log(1 / 0.3) - math.log(0.3)))
        box_h = torch.sqrt(area * ratio).round().long()
        box_w = torch.sqrt(area / ratio).round().long()
        fits = (box_h < h) & (box_w < w)
        first = fits.float().argmax(1, keepdim=True)  # the first try that fits (0 when none does)
        box_h, box_w = box_h.gather(1, first), box_w.gather(1, first)
        top = (tries[..., 2].gather(1, first) * (h - box_h + 1)).long()
        left = (tries[..., 3].gather(1, first) * (w - box_w + 1)).long()
        erase = (draws[:, 3:4] < self.erase) & fits.any(1, keepdim=True)
        rows, cols = torch.arange(h), torch.arange(w)
        inside = (((rows >= top) & (rows < top + box_h) & erase)[:, None, :, None]
                  & ((cols >= left) & (cols < left + box_w))[:, None, None, :])
        noise = self.noise[(draws[:, 4] * _NOISE_IMAGES).long().clamp(max=_NOISE_IMAGES - 1)]
        return torch.where(inside, noise, images)


_ERASE_TRIES = 10
_NOISE_IMAGES = 256  # erased boxes take their noise from this epoch's bank of noise images


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
    takes them at their own size and channels, and the augmentation is at most flip, pad-crop
    and random erasing."""
    c, h, w = meta.input_size
    if (c, h, w) != (channels, *image_size) or meta.crop_pct != 1.0:
        return False
    return aug is None or (aug.crop in ("none", "pad") and not aug.randaugment)


def in_memory(images: torch.Tensor, labels: torch.Tensor, meta: ModelMeta, aug: AugSection | None,
              seed: int) -> InMemoryImages:
    """The batch-path dataset for uint8 (N, C, H, W) `images`; `aug` None for evaluation."""
    if aug is None:
        return InMemoryImages(images, labels, meta.mean, meta.std)
    pad = max(1, images.shape[-1] // 8) if aug.crop == "pad" else 0  # as the per-sample pipeline pads
    return InMemoryImages(images, labels, meta.mean, meta.std, hflip=aug.hflip, pad=pad, erase=aug.random_erasing,
                          seed=seed)
