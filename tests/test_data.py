"""Datasets, transforms and loaders: real Fashion-MNIST statistics, image decoding, reproducible
augmentation and sharding. Hostile image folders are tested in faults/test_faults_data.py."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import crossvit
from crossvit import CrossViTError
from crossvit import data as D
from crossvit.data.fashion_mnist import DEFAULT_ROOT, FashionMNIST
from crossvit.data.in_memory import InMemoryImages
from crossvit.data.images import load_image
from crossvit.runconfig import load_config

from imagegen import make_fashion_mnist


@pytest.mark.skipif(not Path(DEFAULT_ROOT).is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_has_its_known_statistics():
    train, test = FashionMNIST(None, "train"), FashionMNIST(None, "val")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape[1:] == (28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10  # perfectly balanced
    mean, std = train.images.mean() / 255, train.images.std() / 255
    assert abs(mean - 0.2860) < 1e-3 and abs(std - 0.3530) < 1e-3  # the registry's normalisation
    meta = crossvit.get_variant("crossvit_micro_28").meta
    assert meta.mean == (0.2860,) and meta.std == (0.3530,)


def test_fashion_mnist_files_missing_or_corrupt(tmp_path):
    with pytest.raises(CrossViTError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST(tmp_path, "train")
    root = make_fashion_mnist(tmp_path / "f")
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(CrossViTError, match="train-images-idx3-ubyte.gz is unreadable"):
        FashionMNIST(root, "train")


def test_generated_fashion_mnist_reads_back(tmp_path):
    ds = FashionMNIST(make_fashion_mnist(tmp_path), "val")
    image, label = ds[13]
    assert image.size == (28, 28) and image.mode == "L" and label == 3
    assert np.asarray(image)[label * 2 + 1, 10] == 230


# -- image decoding -----------------------------------------------------------------------

def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "g.png")
    assert np.asarray(load_image(str(tmp_path / "g.png"), "L")).max() == 40000 // 256


def test_float_grey_in_zero_to_one_is_scaled_not_blackened(tmp_path):
    ramp = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(ramp, mode="F").save(tmp_path / "float.tif")
    pixels = np.asarray(load_image(str(tmp_path / "float.tif"), "L")).astype(float)
    np.testing.assert_allclose(pixels, ramp * 255, atol=1)


# -- reproducible augmentation and sharding ------------------------------------------------

def test_augmentation_depends_only_on_seed_epoch_and_index(tmp_path):
    config = load_config("fashion_mnist", [f"data.path={make_fashion_mnist(tmp_path)}", "aug.randaugment=rand-m9-mstd0.5",
                                           "aug.random_erasing=0.5"])
    meta = crossvit.get_variant("crossvit_micro_28").meta
    ds = D.build_dataset(config.data, "train", meta, config.aug, seed=7)
    first = [ds[i][0] for i in (5, 3, 5)]
    assert torch.equal(first[0], first[2])  # same index, same epoch: same augmentation, whatever came between
    ds.set_epoch(1)
    assert not torch.equal(ds[5][0], first[0])


def _fashion_sets(tmp_path, *overrides):
    config = load_config("fashion_mnist", [f"data.path={make_fashion_mnist(tmp_path)}", *overrides])
    meta = crossvit.get_variant("crossvit_micro_28").meta
    train = D.build_dataset(config.data, "train", meta, config.aug, seed=7)
    return train, D.build_dataset(config.data, "val", meta, None, seed=7), meta, config


def test_in_memory_batches_match_the_per_sample_pipeline(tmp_path):
    """Fashion-MNIST with flips only takes the batch path: evaluation batches equal what the PIL
    transforms give, flips are exact mirror images, chosen per sample."""
    train, val, meta, _ = _fashion_sets(tmp_path, "aug.hflip=0.5")
    assert isinstance(train, InMemoryImages) and isinstance(val, InMemoryImages)
    reference = FashionMNIST(tmp_path, "val", D.eval_transform(meta))
    batch = D.collate(val.__getitems__([0, 5, 31]))
    expected = torch.stack([reference[i][0] for i in (0, 5, 31)])
    torch.testing.assert_close(batch.images, expected, atol=1e-5, rtol=0)
    assert batch.targets.tolist() == [reference[i][1] for i in (0, 5, 31)]

    plain = FashionMNIST(tmp_path, "train", D.eval_transform(meta))
    images, _ = train.batch(list(range(64)))
    flipped = [torch.allclose(images[i], plain[i][0].flip(-1), atol=1e-5) for i in range(64)]
    kept = [torch.allclose(images[i], plain[i][0], atol=1e-5) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48  # hflip=0.5


def test_in_memory_augmentation_depends_only_on_seed_epoch_and_index(tmp_path):
    train, *_ = _fashion_sets(tmp_path, "aug.crop=pad")
    whole = train.batch(list(range(64)))[0]
    alone = torch.stack([train[i][0] for i in (40, 3)])
    assert torch.equal(alone, whole[[40, 3]])  # the batch it falls in does not matter
    train.set_epoch(1)
    assert not torch.equal(train.batch(list(range(64)))[0], whole)


def test_in_memory_pad_and_crop_shifts_each_image_within_the_padding():
    images = torch.arange(2 * 8 * 8, dtype=torch.uint8).view(2, 1, 8, 8)
    data = InMemoryImages(images, torch.zeros(2, dtype=torch.long), (0.0,), (1 / 255,), pad=1, seed=0)
    padded = torch.nn.functional.pad(images.float(), (1, 1, 1, 1))
    shifts = set()
    for epoch in range(30):
        data.set_epoch(epoch)
        out = data.batch([0, 1])[0]
        for n in range(2):
            found = [(r, c) for r in range(3) for c in range(3) if torch.equal(out[n, 0], padded[n, 0, r:r + 8, c:c + 8])]
            assert found, "the crop is not a window of the padded image"
            shifts.add(found[0])
    assert len(shifts) == 9  # every offset in [0, 2] x [0, 2] occurs


def _erased_boxes(erased: torch.Tensor) -> list[tuple[int, int]]:
    """(height, width) of the erased box of each image of an (N, H, W) mask; asserts it is one box."""
    boxes = []
    for mask in erased:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        if len(rows) == 0:
            continue
        box = (int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))
        assert mask.sum() == box[0] * box[1] and mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
        boxes.append(box)
    return boxes


def test_in_memory_random_erasing_draws_boxes_as_timm_does():
    """The batch path's erasing against timm's RandomErasing (mode "pixel") on 28 px images:
    one box each, how often, how large, what fills it; the rest of each image untouched."""
    from timm.data.random_erasing import RandomErasing

    n = 3000
    images = torch.full((n, 1, 28, 28), 100, dtype=torch.uint8)
    data = InMemoryImages(images, torch.zeros(n, dtype=torch.long), (100 / 255,), (1 / 255,), erase=0.25, seed=0)
    out = data.batch(list(range(n)))[0]
    erased = out[:, 0] != 0  # the images normalise to exactly 0 outside the boxes
    ours = _erased_boxes(erased)
    torch.manual_seed(0)
    timm_erase = RandomErasing(0.25, mode="pixel", device="cpu")
    theirs = _erased_boxes(torch.stack([timm_erase(torch.zeros(1, 28, 28))[0] != 0 for _ in range(n)]))
    assert abs(len(ours) - len(theirs)) < 0.04 * n and 0.21 * n < len(ours) < 0.29 * n
    area = [np.mean([h * w for h, w in boxes]) / 28 ** 2 for boxes in (ours, theirs)]
    assert abs(area[0] - area[1]) < 0.015 and 0.1 < area[0] < 0.25
    tall = [np.mean([h > w for h, w in boxes]) for boxes in (ours, theirs)]
    assert abs(tall[0] - tall[1]) < 0.08
    noise = out[:, 0][erased]
    assert abs(noise.mean().item()) < 0.02 and abs(noise.std().item() - 1) < 0.02
    alone = torch.stack([data[i][0] for i in (17, 5)])
    assert torch.equal(alone, out[[17, 5]])  # the batch it falls in does not matter


def test_other_augmentations_keep_the_per_sample_pipeline(tmp_path):
    train, *_ = _fashion_sets(tmp_path, "aug.randaugment=rand-m9-mstd0.5")
    assert isinstance(train, D.SeededSamples)
    train, *_ = _fashion_sets(tmp_path, "aug.random_erasing=0.25")
    assert isinstance(train, InMemoryImages) and train.erase == 0.25
    train, *_ = _fashion_sets(tmp_path, "data.limit_train=20")
    assert len(train) == 20 and train[0][0].shape == (1, 28, 28)


def test_processes_share_one_global_order():
    one = [b.images.tolist() for b in D.train_loader(_Indexed(40), 8, 0, 0, 1, seed=3)]
    ranks = [[b.images.tolist() for b in D.train_loader(_Indexed(40), 4, 0, r, 2, seed=3)] for r in (0, 1)]
    for step, batch in enumerate(one):
        assert sorted(batch) == sorted(ranks[0][step] + ranks[1][step])
    skipped = [b.images.tolist() for b in D.train_loader(_Indexed(40), 8, 0, 0, 1, seed=3, skip_batches=2)]
    assert skipped == one[2:]


def test_evaluation_counts_every_sample_once():
    seen = sorted(x for r in range(3) for b in D.eval_loader(_Indexed(10), 4, 0, r, 3) for x in b.images.tolist())
    assert seen == list(range(10))


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor(i), 0


def test_randaugment_survives_its_strongest_settings():
    """At high magnitude timm's RandAugment posterizes to 0 bits, which Pillow 13 refuses:
    the pipeline must not crash mid-epoch on it (pyproject keeps Pillow below 13)."""
    meta = crossvit.get_variant("crossvit_micro_32").meta
    aug = load_config("small_folder", ["aug.randaugment=rand-m10-n4-mstd1.0-inc1"]).aug
    transform = D.train_transform(meta, aug)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    for seed in range(300):
        D.seed_host(seed)
        assert transform(image).shape == (3, 32, 32)


def test_flip_evaluation_averages_each_head_over_the_mirror_image():
    from crossvit.data import Batch
    from crossvit.training.distributed import World
    from crossvit.training.engine import evaluate

    torch.manual_seed(0)
    model = crossvit.create_model("crossvit_micro_32", patch_size=(4, 8), dim=(32, 64), depth=(1, 1),
                                  num_heads=(2, 2), num_encoders=1, num_classes=4).eval()
    images, targets = torch.randn(12, 3, 32, 32), torch.arange(12) % 4
    loader = [Batch(images[:7], targets[:7], []), Batch(images[7:], targets[7:], [])]
    result = evaluate(model, loader, 4, World(0, 1, 0, torch.device("cpu")), flip=True)
    with torch.no_grad():
        heads = [model.branch_logits(model.forward_features(x)) for x in (images, images.flip(-1))]
    per_branch = [(a + b) / 2 for a, b in zip(*heads)]
    logits = torch.stack(per_branch).mean(0)
    assert result.top1 == pytest.approx(logits.argmax(1).eq(targets).float().mean().item() * 100)
    assert result.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-5)
    for got, branch in zip(result.branch_top1, per_branch):
        assert got == pytest.approx(branch.argmax(1).eq(targets).float().mean().item() * 100)
    plain = evaluate(model, loader, 4, World(0, 1, 0, torch.device("cpu")))
    assert plain.loss != pytest.approx(result.loss)  # the mirror image did change the answer
