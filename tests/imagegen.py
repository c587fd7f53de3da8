"""Small generated image datasets for the data and training tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 210, 40)]


def make_folder_dataset(root: Path, classes: int = 3, train_per_class: int = 16, val_per_class: int = 8,
                        size: int = 32, seed: int = 0) -> Path:
    """root/{train,val}/class_k/*.png: noisy images whose dominant colour is the class."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for k in range(classes):
            folder = root / split / f"class_{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.normal(COLOURS[k % len(COLOURS)], 40, size=(size, size, 3)).clip(0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fashion_mnist(root: Path, train: int = 64, val: int = 32, seed: int = 0) -> Path:
    """IDX files shaped like Fashion-MNIST's, with images that depend on the label."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", val)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, label * 2:label * 2 + 8, 4:24] = 230
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def write_every_mode(folder: Path, size: int = 32, seed: int = 0) -> list[Path]:
    """The same noisy picture saved in each PIL mode and format a user might hand us."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))
    grey16 = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
    images = {
        "bilevel.png": rgb.convert("1"), "grey.png": rgb.convert("L"), "grey_alpha.png": rgb.convert("LA"),
        "palette.png": rgb.convert("P"), "rgb.jpg": rgb, "rgba.png": rgb.convert("RGBA"),
        "cmyk.jpg": rgb.convert("CMYK"), "grey16.png": Image.fromarray(grey16), "grey16.tif": Image.fromarray(grey16),
        "int32.tif": Image.fromarray(grey16.astype(np.int32)), "palette.gif": rgb, "rgb.webp": rgb, "rgb.bmp": rgb,
    }
    for name, image in images.items():
        image.save(folder / name)
    return [folder / name for name in images]
