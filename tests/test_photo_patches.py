"""benchmarks/make_photo_patches.py: the colour-folder dataset we build from photographs keeps
its validation crops out of the training region and writes the ImageNet layout."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "make_photo_patches.py"


def test_train_and_val_crops_come_from_disjoint_columns(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    columns = np.linspace(0, 255, 384).round().astype(np.uint8)  # red = column: a crop shows where it came from
    for name, green in (("dune", 0), ("leaf", 200)):
        image = np.zeros((256, 384, 3), np.uint8)
        image[..., 0] = columns[None, :]
        image[..., 1] = green
        Image.fromarray(image).save(photos / f"{name}.png")
    dest = tmp_path / "patches"
    subprocess.run([sys.executable, str(SCRIPT), str(photos), str(dest), "--train-per-class", "30",
                    "--val-per-class", "10"], check=True, capture_output=True)
    for name, green in (("dune", 0), ("leaf", 200)):
        train = [np.asarray(Image.open(p)) for p in sorted((dest / "train" / name).glob("*.png"))]
        val = [np.asarray(Image.open(p)) for p in sorted((dest / "val" / name).glob("*.png"))]
        assert len(train) == 30 and len(val) == 10
        assert all(c.shape == (32, 32, 3) and abs(int(c[..., 1].mean()) - green) <= 2 for c in train + val)
        assert max(int(c[..., 0].max()) for c in train) < min(int(c[..., 0].min()) for c in val)
