"""`create_model`: a registered variant, changed as asked, with weights loaded."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from ..errors import CrossViTError
from .checkpoint import StoredCheckpoint, load_checkpoint, read_checkpoint
from .config import CrossViTConfig, apply_overrides
from .crossvit import CrossViT
from .features import CrossViTFeatures
from .pretrained import download_weights
from .hub import download_hub_dir, read_pretrained
from .registry import ModelMeta, get_variant, list_models


def create_model(
    name: str | None = None,
    *,
    pretrained: bool = False,
    pretrained_url: str | None = None,
    checkpoint: str | os.PathLike | StoredCheckpoint | None = None,
    num_classes: int | None = None,
    img_size: int | None = None,
    in_chans: int | Sequence[int] | None = None,
    fusion: str | None = None,
    dynamic_img_size: bool = False,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **overrides: Any,
) -> CrossViT | CrossViTFeatures:
    """Build a CrossViT.

    name: a registered name (`crossvit.list_models()`), or the authors' `*_224` / `*_384`
        names; "local-dir:DIR" or "hf-hub:ORG/NAME" for a model in the Hugging Face Hub layout
        (ours from save_pretrained, or timm's copies); may be left out when `checkpoint` is one
        of ours, which carries its config.
    pretrained: load the published ImageNet weights (downloaded once into torch's hub cache);
        `pretrained_url` fetches them from elsewhere (a mirror, a file:// URL).
    checkpoint: a file to load (ours, the authors' or timm's layout; .pth or .safetensors).
    in_chans: input channels, or one count per branch (then the model takes a list with one
        batch per branch).
    num_classes, img_size, fusion, **overrides: change the architecture; any field
        of CrossViTConfig or BranchConfig (`depth=(1, 4)`, `drop_path_rate=0.1`, ...).
        Weights still load: position embeddings are resampled and heads replaced.
    dynamic_img_size: take any square input size the patches divide, resampling the position
        embeddings per forward (`model.set_input_size(size)` changes the size once, in place).
    features_only: return a CrossViTFeatures backbone (features.py) giving one (B, C, H, W) map
        per branch after each encoder in `out_indices` (default: all), with `feature_info`.
    """
    stored: StoredCheckpoint | None = None
    if checkpoint is not None:
        stored = checkpoint if isinstance(checkpoint, StoredCheckpoint) else read_checkpoint(checkpoint)
    hub_weights: StoredCheckpoint | None = None
    if name is not None and name.startswith(HUB_PREFIXES):
        config, meta, hub_weights = _from_hub_layout(name)
    elif name is not None:
        variant = get_variant(name)
        config, meta = variant.config, variant.meta
    elif stored is not None and stored.config is not None:
        config = stored.config
        meta = ModelMeta.from_dict(stored.meta) if stored.meta.get("name") else _plain_meta("crossvit_custom", config)
    elif stored is not None:
        raise CrossViTError(
            f"checkpoint {stored.origin} is in the {stored.layout} layout, which does not record the architecture; "
            "pass the model name too, e.g. create_model('crossvit_9_240', checkpoint=...)"
        )
    else:
        raise CrossViTError("create_model needs a model name or a checkpoint saved by crossvit")

    for key, value in (("num_classes", num_classes), ("img_size", img_size), ("in_chans", in_chans), ("fusion", fusion)):
        if value is not None:
            overrides[key] = value
    if overrides:
        new_config = apply_overrides(config, overrides)
        meta = _meta_for(meta, new_config, classes_changed=new_config.num_classes != config.num_classes)
        config = new_config

    model = CrossViT(config)
    model.meta = meta
    model.dynamic_img_size = dynamic_img_size
    if pretrained:
        load_checkpoint(model, download_weights(meta, pretrained_url))
    if hub_weights is not None:
        load_checkpoint(model, hub_weights)
    if stored is not None:
        load_checkpoint(model, stored)
    if features_only:
        return CrossViTFeatures(model, out_indices)
    if out_indices is not None:
        raise CrossViTError("out_indices applies with features_only=True; for a classifier leave it out")
    return model


HUB_PREFIXES = ("local-dir:", "hf-hub:")


def _from_hub_layout(name: str) -> tuple[CrossViTConfig, ModelMeta, StoredCheckpoint]:
    """Architecture, metadata and weights of a hub-layout directory (hub.py)."""
    prefix, where = name.split(":", 1)
    directory = Path(where) if prefix == "local-dir" else download_hub_dir(where)
    architecture, config, saved, weights = read_pretrained(directory)
    registered = architecture in list_models()
    if config is None:  # timm's copies name a published variant and its class count only
        if not registered:
            raise CrossViTError(f"{directory}/config.json names architecture {architecture!r}, which is not a CrossViT "
                                f"we know; known: {', '.join(list_models())}")
        config = apply_overrides(get_variant(architecture).config, {"num_classes": saved.get("num_classes", 1000)})
    base = get_variant(architecture).meta if registered else _plain_meta(architecture or "crossvit_custom", config)
    cfg = saved.get("pretrained_cfg", {})
    labels = saved.get("label_names")
    meta = dataclasses.replace(
        base, input_size=(config.in_chans, config.img_size, config.img_size),
        crop_pct=cfg.get("crop_pct", base.crop_pct), interpolation=cfg.get("interpolation", base.interpolation),
        mean=tuple(cfg.get("mean", base.mean)), std=tuple(cfg.get("std", base.std)),
        class_names=tuple(labels) if labels and len(labels) == config.num_classes else base.class_names)
    return config, meta, weights


def _meta_for(meta: ModelMeta, config: Any, classes_changed: bool) -> ModelMeta:
    """The variant's metadata for a changed architecture: its published numbers no longer apply."""
    changes: dict[str, Any] = dict(input_size=(config.in_chans, config.img_size, config.img_size),
                                   params=None, gmacs=None)
    if classes_changed:
        changes["class_names"] = None
    if config.in_chans != meta.input_size[0]:
        changes.update(mean=(sum(meta.mean) / len(meta.mean),) * config.in_chans,
                       std=(sum(meta.std) / len(meta.std),) * config.in_chans)
    return dataclasses.replace(meta, **changes)


def _plain_meta(name: str, config: Any) -> ModelMeta:
    return ModelMeta(name=name, input_size=(config.in_chans, config.img_size, config.img_size))
