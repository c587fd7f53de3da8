"""Every named CrossViT: its architecture, plus metadata kept apart from it (preprocessing,
where its weights are published, and the paper's numbers)."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass

from ..dataset_classes import CIFAR10_CLASSES, FASHION_MNIST_CLASSES
from ..errors import CrossViTError
from .config import BranchConfig, CrossViTConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_URL = "https://github.com/IBM/CrossViT/releases/download/weights-0.1/{}.pth"
TIMM_URL = "https://huggingface.co/{}/resolve/main/model.safetensors"


@dataclass(frozen=True)
class ModelMeta:
    """What a model needs besides its architecture: preprocessing, weights, published numbers."""

    name: str
    input_size: tuple[int, int, int]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    official_name: str | None = None  # the authors' name, also their release file's name
    hf_hub_id: str | None = None  # timm's copy of the released weights
    params: int | None = None  # exact count at 1000 classes (facts file)
    gmacs: float | None = None  # measured multiply-accumulates per image (facts file)
    paper_params_m: float | None = None
    paper_gflops: float | None = None  # the paper's "FLOPs" are multiply-accumulates
    paper_top1: float | None = None
    timm_top1: float | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def urls(self) -> list[str]:
        """Where the published weights can be fetched, the authors' release first."""
        urls = []
        if self.official_name:
            urls.append(OFFICIAL_URL.format(self.official_name))
        if self.hf_hub_id:
            urls.append(TIMM_URL.format(self.hf_hub_id))
        return urls

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelMeta:
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**data)


@dataclass(frozen=True)
class Variant:
    config: CrossViTConfig
    meta: ModelMeta


_REGISTRY: dict[str, Variant] = {}
_ALIASES: dict[str, str] = {}


def register(config: CrossViTConfig, meta: ModelMeta) -> None:
    _REGISTRY[meta.name] = Variant(config, meta)
    if meta.official_name:
        _ALIASES[meta.official_name] = meta.name


def _imagenet(name: str, dims: tuple[int, int], heads: int, depth: int, mlp_ratio: float, tokenizer: str,
              size: int, params: int, gmacs: float, paper: tuple[float, float, float], timm_top1: float) -> None:
    """One published variant: K=3 encoders, N=1 S-block, L=1 fusion, patches 12 (S) / 16 (L)."""
    large_size = {240: 224, 408: 384}[size]
    config = CrossViTConfig(
        branches=(
            BranchConfig(12, size, dims[0], 1, heads, mlp_ratio, tokenizer),
            BranchConfig(16, large_size, dims[1], depth, heads, mlp_ratio, tokenizer),
        ),
        img_size=size,
    )
    official = name.replace(str(size), str(large_size))
    meta = ModelMeta(
        name=name, input_size=(3, size, size), crop_pct=0.875 if size == 240 else 1.0,
        official_name=official, hf_hub_id=f"timm/{name}.in1k", params=params, gmacs=gmacs,
        paper_params_m=paper[0], paper_gflops=paper[1], paper_top1=paper[2], timm_top1=timm_top1,
    )
    register(config, meta)


#          name                      dims        heads M  r  tokenizer size  exact params  GMACs  paper (M, GFLOPs, top-1)  timm top-1
_imagenet("crossvit_tiny_240",       (96, 192),   3,  4, 4, "linear", 240,   7_014_800,  1.56, (6.9, 1.6, 73.4),   73.35)
_imagenet("crossvit_small_240",      (192, 384),  6,  4, 4, "linear", 240,  26_856_272,  5.62, (26.7, 5.6, 81.0),  81.04)
_imagenet("crossvit_base_240",       (384, 768), 12,  4, 4, "linear", 240, 105_025_232, 21.19, (104.7, 21.2, 82.2), 82.21)
_imagenet("crossvit_9_240",          (128, 256),  4,  3, 3, "linear", 240,   8_553_296,  1.84, (8.6, 1.8, 73.9),   73.99)
_imagenet("crossvit_15_240",         (192, 384),  6,  5, 3, "linear", 240,  27_528_464,  5.79, (27.4, 5.8, 81.5),  81.52)
_imagenet("crossvit_18_240",         (224, 448),  7,  6, 3, "linear", 240,  43_271_408,  9.03, (43.3, 9.0, 82.5),  82.39)
_imagenet("crossvit_9_dagger_240",   (128, 256),  4,  3, 3, "conv3",  240,   8_776_592,  1.98, (8.8, 2.0, 77.1),   76.99)
_imagenet("crossvit_15_dagger_240",  (192, 384),  6,  5, 3, "conv3",  240,  28_209_008,  6.11, (28.2, 6.1, 82.3),  82.30)
_imagenet("crossvit_18_dagger_240",  (224, 448),  7,  6, 3, "conv3",  240,  44_266_976,  9.47, (44.3, 9.5, 82.8),  82.49)
_imagenet("crossvit_15_dagger_408",  (192, 384),  6,  5, 3, "conv3",  408,  28_500_080, 21.40, (28.5, 21.4, 83.5), 83.84)
_imagenet("crossvit_18_dagger_408",  (224, 448),  7,  6, 3, "conv3",  408,  44_606_560, 32.41, (44.6, 32.4, 83.9), 84.20)


def _small(name: str, size: int, in_chans: int, patches: tuple[int, int], mean: tuple[float, ...],
           std: tuple[float, ...], class_names: tuple[str, ...]) -> None:
    """A CrossViT for 28-32 px images that trains in minutes on two CPU cores: 4 px patches in
    the S-branch (the fine detail) and half-image patches in the L-branch (the coarse view), the
    paper's pairing pushed to the scale of these images; widths 64 / 128 with 32-dim heads, as in
    the paper's branches, keep the matmuls large enough for the CPU; the L-branch is the deeper
    (K=3, N=1, M=2). Why these sizes, measured: docs/notes/2026-11-25-fashion-mnist-first-experiments.md.
    """
    config = CrossViTConfig(
        branches=(
            BranchConfig(patches[0], size, 64, 1, 2, 3.0, "linear"),
            BranchConfig(patches[1], size, 128, 2, 4, 3.0, "linear"),
        ),
        img_size=size, in_chans=in_chans, num_classes=len(class_names),
    )
    meta = ModelMeta(name=name, input_size=(in_chans, size, size), crop_pct=1.0, interpolation="bilinear",
                     mean=mean, std=std, class_names=class_names)
    register(config, meta)


# Fashion-MNIST statistics over its 60k training images; CIFAR-10's over its 50k.
_small("crossvit_micro_28", 28, 1, (4, 14), (0.2860,), (0.3530,), FASHION_MNIST_CLASSES)
_small("crossvit_micro_32", 32, 3, (4, 16), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), CIFAR10_CLASSES)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style pattern, in the paper's order."""
    return [name for name in _REGISTRY if fnmatch.fnmatch(name, pattern)]


def get_variant(name: str) -> Variant:
    """The registered variant `name` (the authors' `*_224` / `*_384` names work too)."""
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, [*_REGISTRY, *_ALIASES], n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `crossvit models` lists them"
        raise CrossViTError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]
