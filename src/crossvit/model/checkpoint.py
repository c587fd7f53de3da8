"""Reading, writing and fitting checkpoints: ours, the authors' release and timm's.

Loading never runs code from the file: `.pth` files go through `torch.load(weights_only=True)`
and safetensors files hold nothing but tensors and strings. Writing is atomic: a crash or a
full disk leaves the previous file in place.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError
from .config import CrossViTConfig
from .layouts import layout_of, strip_wrappers, to_our_layout

log = logging.getLogger("crossvit")

FORMAT_TAG = "crossvit"
_WRAPPER_KEYS = ("model", "state_dict", "model_ema", "module")


@dataclass
class StoredCheckpoint:
    """A checkpoint's tensors in our layout, and the model description if it is one of ours."""

    state: dict[str, Tensor]
    origin: str
    layout: str
    config: CrossViTConfig | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    run_config: dict[str, Any] | None = None  # the training recipe, in checkpoints written by `crossvit train`


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    heads_reset: bool = False


# -- reading ------------------------------------------------------------------------------

def read_raw(path: Path) -> tuple[Any, dict[str, str]]:
    """Safely read a checkpoint file: the file's object and its safetensors metadata (empty for .pth files)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    with path.open("rb") as f:
        head = f.read(9)
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): was its download or save interrupted?")
    if head[:4] != b"PK\x03\x04" and head[8:9] == b"{":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file (truncated or corrupt?): {e}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True), {}
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CheckpointError(
                f"refusing to load {path}: it holds Python objects besides tensors, and unpickling them could run "
                "arbitrary code; if you trust the file, re-save its state_dict with torch.save or as safetensors"
            ) from None
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch file (truncated or corrupt?): {e}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch file (truncated or corrupt?): {first_line}") from None


def _find_state_dict(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors of a checkpoint object, looking inside the usual wrappers."""
    extra: dict[str, Any] = {}
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        extra = dict(obj.get(FORMAT_TAG) or {})
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        top = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors (found: {top})")
    return dict(obj), extra


def read_checkpoint(path: str | os.PathLike) -> StoredCheckpoint:
    """Read any supported checkpoint file into our layout, refusing non-finite weights."""
    path = Path(path)
    obj, st_meta = read_raw(path)
    state, extra = _find_state_dict(obj, path)
    if st_meta.get("format") == FORMAT_TAG:
        extra = {"config": json.loads(st_meta["config"]), "meta": json.loads(st_meta.get("meta", "{}"))}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path} has NaN or infinite values in {len(bad)} tensor(s), e.g. {bad[0]}")
    state = strip_wrappers(state)
    layout = layout_of(state)
    config = CrossViTConfig.from_dict(extra["config"]) if "config" in extra else None
    run_config = obj.get("run_config") if isinstance(obj, Mapping) else None
    return StoredCheckpoint(to_our_layout(state), str(path), layout, config, dict(extra.get("meta") or {}), run_config)


# -- fitting into a model -----------------------------------------------------------------

def resample_pos_embed(pos: Tensor, num_prefix: int, grid: int) -> Tensor:
    """Bicubic resampling of a (1, prefix + g*g, C) position embedding to a grid x grid one."""
    prefix, patches = pos[:, :num_prefix], pos[:, num_prefix:]
    old = round(patches.shape[1] ** 0.5)
    if old * old != patches.shape[1]:
        raise CheckpointError(f"cannot resample a position embedding of {patches.shape[1]} patches: not a square grid")
    image = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = image.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)
    return torch.cat([prefix, patches], dim=1)


def _adapt_in_chans(weight: Tensor, in_chans: int) -> Tensor:
    """First-convolution weights for another number of input channels: grey from RGB sums
    the colour filters; more channels repeat them, scaled to keep the response."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def fit_state_dict(model: nn.Module, stored: StoredCheckpoint, strict: bool = True) -> tuple[dict[str, Tensor], LoadReport]:
    """Make a checkpoint's tensors fit `model`: resample position embeddings, adapt the
    first convolutions to the channel count, drop heads of another class count."""
    target = model.state_dict()
    state = dict(stored.state)
    report = LoadReport()
    num_prefix = 1 if model.config.cls_token else 0
    for i, grid in enumerate(model.grids):
        key = f"pos_embeds.{i}"
        if key in state and key in target and state[key].shape != target[key].shape \
                and state[key].shape[-1] == target[key].shape[-1]:
            state[key] = resample_pos_embed(state[key], num_prefix, grid)
            report.resampled.append(key)
    for key, value in list(state.items()):
        if key.startswith("tokenizers.") and key.endswith("weight") and value.ndim == 4 and key in target:
            want = target[key].shape
            if value.shape != want and value.shape[0] == want[0] and value.shape[2:] == want[2:]:
                state[key] = _adapt_in_chans(value, want[1])
                report.adapted.append(key)
    head_keys = [k for k in state if k.startswith("heads.")]
    if any(k not in target or state[k].shape != target[k].shape for k in head_keys):
        for k in head_keys:
            del state[k]
        report.heads_reset = True
        log.warning("%s: its classifier heads do not fit this model's %d classes; keeping everything but the heads, "
                    "which stay freshly initialised", stored.origin, model.num_classes)
    report.missing = sorted(k for k in target if k not in state and not (report.heads_reset and k.startswith("heads.")))
    report.unexpected = sorted(k for k in state if k not in target)
    mismatched = sorted(k for k in state if k in target and state[k].shape != target[k].shape)
    if strict and (report.missing or report.unexpected or mismatched):
        raise CheckpointError(
            f"checkpoint {stored.origin} ({stored.layout} layout) does not fit this model: "
            + "; ".join(
                f"{what} {_some(keys)}" for what, keys in (
                    ("missing keys", report.missing), ("unexpected keys", report.unexpected),
                    ("shape mismatches", [f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in mismatched]),
                ) if keys
            )
            + "; is it a checkpoint of another architecture?"
        )
    state = {k: v for k, v in state.items() if k in target and k not in mismatched}
    return state, report


def _some(keys: list[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return f"[{shown}{f', ... and {len(keys) - n} more' if len(keys) > n else ''}]"


def load_checkpoint(model: nn.Module, path: str | os.PathLike | StoredCheckpoint, strict: bool = True) -> LoadReport:
    """Load a checkpoint of any supported layout and format into `model`.

    Position embeddings are resampled to the model's grids and heads of another class count
    are left out (and said so). Anything else that does not fit raises CheckpointError
    naming the missing and unexpected keys, unless `strict=False`.
    """
    stored = path if isinstance(path, StoredCheckpoint) else read_checkpoint(path)
    state, report = fit_state_dict(model, stored, strict)
    model.load_state_dict(state, strict=False)
    return report


# -- writing ------------------------------------------------------------------------------

def atomic_write(path: Path, write: Any) -> None:
    """Call write(tmp_path), then move the finished file over `path` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_record(model: nn.Module, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What rebuilds the model from a file alone: its config and metadata (plus `meta`)."""
    config = model.config.to_dict()
    config["num_classes"] = model.num_classes  # reset_classifier may have changed it
    info = dict(model.meta.to_dict() if getattr(model, "meta", None) is not None else {})
    info.update(meta or {})
    return {"config": config, "meta": info}


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Save weights with the model's config (and metadata: name, preprocessing, class names),
    as safetensors unless the name ends in .pth / .pt; `create_model(checkpoint=path)` rebuilds it."""
    path = Path(path)
    record = model_record(model, meta)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix in (".pth", ".pt"):
        payload = {"state_dict": state, FORMAT_TAG: record}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    else:
        from safetensors.torch import save_file

        header = {"format": FORMAT_TAG, "config": json.dumps(record["config"]), "meta": json.dumps(record["meta"])}
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=header))
    return path
