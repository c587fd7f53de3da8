"""Training and evaluation transforms, from the model's metadata and the recipe's augmentation.

The paper's pipeline (random resized crop, flip, RandAugment, random erasing) comes from timm;
`crop: pad` swaps the resized crop for pad-and-crop, which suits 28-32 px images better, and
`crop: none` only resizes (flips and the rest still apply), for short runs on small images.
"""

from __future__ import annotations

from timm.data import create_transform
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T

from ..model.registry import ModelMeta
from ..runconfig import AugSection


def train_transform(meta: ModelMeta, aug: AugSection):
    if aug.crop == "rrc":
        return create_transform(
            meta.input_size, is_training=True, scale=aug.scale, hflip=aug.hflip, auto_augment=aug.randaugment,
            interpolation=meta.interpolation, mean=meta.mean, std=meta.std,
            re_prob=aug.random_erasing, re_mode="pixel", re_count=1,
        )
    size = meta.input_size[-1]
    crop = T.RandomCrop(size, padding=max(1, size // 8)) if aug.crop == "pad" else T.Resize((size, size))
    steps = [crop, T.RandomHorizontalFlip(aug.hflip)]
    if aug.randaugment:
        fill = tuple(round(255 * m) for m in meta.mean)
        steps.append(rand_augment_transform(aug.randaugment, {"img_mean": fill if len(fill) > 1 else fill[0]}))
    steps += [T.ToTensor(), T.Normalize(meta.mean, meta.std)]
    if aug.random_erasing > 0:
        steps.append(RandomErasing(aug.random_erasing, mode="pixel", device="cpu"))
    return T.Compose(steps)


def eval_transform(meta: ModelMeta):
    """Resize to size / crop_pct, centre crop, normalise (240 -> 274 -> 240 for ImageNet models)."""
    return create_transform(meta.input_size, is_training=False, interpolation=meta.interpolation,
                            mean=meta.mean, std=meta.std, crop_pct=meta.crop_pct)
