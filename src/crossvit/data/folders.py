"""Image-folder datasets (root/train/<class>/*.jpg, root/val/<class>/*: the ImageNet layout)
that survive bad files: an unreadable image is skipped and reported, never a crash mid-epoch."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ..errors import CrossViTError
from .images import load_image

log = logging.getLogger("crossvit")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


@dataclass(frozen=True)
class BadSample:
    """Stands in for an image that could not be read; the collate function drops it."""

    path: str
    reason: str


_warned_links: set[str] = set()


def _links_back_up(entry: os.DirEntry, split_dir: Path) -> bool:
    """Whether `entry` is a folder symlink to `split_dir` itself or a folder above it (`up -> ..`):
    as a class it would hold the whole dataset again. Warned about once per link."""
    if not entry.is_symlink():
        return False
    target, here = os.path.realpath(entry.path), os.path.realpath(split_dir)
    if target != here and not here.startswith(target.rstrip(os.sep) + os.sep):
        return False
    if entry.path not in _warned_links:
        _warned_links.add(entry.path)
        log.warning("%s: ignoring %s, a symbolic link to %s, which holds this folder (it is not a class)",
                    split_dir, entry.name, target)
    return True


def find_classes(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise CrossViTError(f"image folder {split_dir} does not exist; expected {split_dir}/<class name>/<images>")
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")
                     and not _links_back_up(e, split_dir))
    if not classes:
        raise CrossViTError(f"image folder {split_dir} has no class sub-folders; expected {split_dir}/<class name>/<images>")
    return classes


def image_files(folder: str | Path) -> list[str]:
    """Image files below `folder`, sorted; symlinked folders are not followed (no loops)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS))
    return found


class ImageFolder(Dataset):
    """Images of `split_dir`/<class>/, labelled by their position in `classes` (the train split's)."""

    def __init__(self, split_dir: str | Path, classes: list[str], mode: str = "RGB", transform=None) -> None:
        split_dir = Path(split_dir)
        own = find_classes(split_dir)
        foreign = sorted(set(own) - set(classes))
        if foreign:
            raise CrossViTError(f"{split_dir} has classes the training split lacks: {foreign[:5]}; "
                                "train/ and val/ must use the same class folder names")
        self.samples: list[tuple[str, int]] = []
        empty = []
        for index, name in enumerate(classes):
            files = image_files(split_dir / name) if name in own else []
            if not files:
                empty.append(name)
            self.samples.extend((f, index) for f in files)
        if not self.samples:
            raise CrossViTError(f"image folder {split_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        if empty:
            log.warning("%s: no images for class(es) %s", split_dir, ", ".join(empty[:10]))
        self.classes, self.mode, self.transform = classes, mode, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            image = load_image(path, self.mode)
        except Exception as e:  # any decoder error: report the file, keep the epoch going
            return BadSample(path, f"{type(e).__name__}: {e}"), target
        return (self.transform(image) if self.transform else image), target
