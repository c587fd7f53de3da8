"""Fashion-MNIST from its IDX files, as the Debian package `dataset-fashion-mnist` installs them."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import CrossViTError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
SPLITS = {"train": "train", "val": "t10k"}  # the official 60k / 10k split
INSTALL_HINT = "install it with `sudo apt-get install dataset-fashion-mnist`, or pass --data DIR"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (plain or gzipped) as a uint8 array of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"not an unsigned-byte IDX file (magic {data[:4].hex()})")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return array.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as e:
        raise CrossViTError(f"Fashion-MNIST file {path} is unreadable ({e}); reinstall it: {INSTALL_HINT}") from None


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise CrossViTError(f"Fashion-MNIST not found: {root} has no {stem}.gz; {INSTALL_HINT}")


class FashionMNIST(Dataset):
    """(PIL grey image, label) pairs, all held in memory (47 MB for the training split)."""

    def __init__(self, root: str | Path | None, split: str, transform=None) -> None:
        root = Path(root or DEFAULT_ROOT)
        prefix = SPLITS[split]
        self.images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        self.labels = torch.from_numpy(read_idx(_find(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64))
        if self.images.ndim != 3 or len(self.images) != len(self.labels):
            raise CrossViTError(f"Fashion-MNIST in {root} is inconsistent: {self.images.shape} images, "
                                f"{len(self.labels)} labels; {INSTALL_HINT}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index], mode="L")
        return (self.transform(image) if self.transform else image), int(self.labels[index])
