"""Build a small natural-image folder dataset from photographs that Debian ships.

No natural-image classification dataset can be installed on our machines (every package that
offers one downloads it at run time), but Debian's `mate-backgrounds` holds twelve
photographs (flowers, leaves, a dune, wood, a storm...). This script cuts each of them into
32 px crops, one class per photograph: the model must tell from a small patch which scene it
comes from, from colour, texture and shape. Validation crops come from a strip at the right
of each photo (a quarter of it, at least one largest crop wide), training crops from the rest,
with a gap between them, so no validation pixel is ever seen in training.

    apt-get download mate-backgrounds && dpkg -x mate-backgrounds_*.deb /tmp/mate
    python benchmarks/make_photo_patches.py /tmp/mate/usr/share/backgrounds/mate/nature data/photo-patches
    crossvit train small_folder --data data/photo-patches

Writes DEST/train/<photo>/NNNN.png and DEST/val/<photo>/NNNN.png (ImageNet layout).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image

SHORT_SIDE = 256  # photos are first scaled so that their short side is this long
CROP_RANGE = (48, 128)  # side of a crop in the scaled photo, before it is shrunk to --size
VAL_SHARE = 0.25


def crops(photo: Image.Image, left: int, right: int, count: int, size: int, rng: random.Random):
    """`count` square crops whose columns lie within [left, right), shrunk to size x size."""
    for _ in range(count):
        side = rng.randint(*CROP_RANGE)
        x = rng.randint(left, right - side)
        y = rng.randint(0, photo.height - side)
        yield photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path, help="folder of photographs (one class each)")
    parser.add_argument("dest", type=Path, help="dataset folder to create")
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--val-per-class", type=int, default=200)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise SystemExit(f"no .jpg or .png photographs in {args.photos}")
    rng = random.Random(args.seed)
    for path in photos:
        photo = Image.open(path).convert("RGB")
        scale = SHORT_SIDE / min(photo.size)
        photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
        split = photo.width - max(round(photo.width * VAL_SHARE), CROP_RANGE[1])
        gap = CROP_RANGE[1] // 4  # keeps train and val crops apart (they never share a column)
        regions = {"train": (0, split - gap, args.train_per_class),
                   "val": (split, photo.width, args.val_per_class)}
        for split_name, (left, right, count) in regions.items():
            folder = args.dest / split_name / path.stem
            folder.mkdir(parents=True, exist_ok=True)
            for i, crop in enumerate(crops(photo, left, right, count, args.size, rng)):
                crop.save(folder / f"{i:04d}.png")
        print(f"{path.stem}: {photo.width}x{photo.height} scaled, {args.train_per_class} train / "
              f"{args.val_per_class} val crops")
    print(f"wrote {args.dest}/train and {args.dest}/val ({len(photos)} classes)")


if __name__ == "__main__":
    main()
