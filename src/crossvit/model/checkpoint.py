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
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, first_line
from ..files import atomic_write
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
    progress: dict[str, Any] | None = None  # epochs done and best top-1 so far, in those checkpoints too


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    heads_reset: bool = False


# -- reading ------------------------------------------------------------------------------

def read_raw(path: Path) -> tuple[Any, dict[str, str]]:
    """Safely read a checkpoint file: the file's object and its safetensors metadata (empty for .pth files).
    Anything that is not a readable checkpoint, or that holds NaN or infinite values, is a CheckpointError."""
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; name the .pth or .safetensors file inside it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except OSError as e:  # no permission, a FIFO that vanished, ...
        raise CheckpointError(f"checkpoint {path} cannot be opened: {e.strerror or e}") from None
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): was its download or save interrupted?")
    # A .safetensors name counts as much as the content: a file cut inside its 8-byte header length
    # must not be handed to the unpickler, whose complaint would be about pickles.
    if head[:4] != b"PK\x03\x04" and (head[8:9] == b"{" or path.suffix == ".safetensors"):
        obj, meta = _read_safetensors(path)
    else:
        obj, meta = _read_pickle(path), {}
    bad = _non_finite(obj)
    if bad:
        raise CheckpointError(f"checkpoint {path} has NaN or infinite values in {len(bad)} tensor(s), e.g. {bad[0]}; "
                              "these weights are unusable: take another copy, or an earlier checkpoint of the run")
    return obj, meta


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as e:  # whatever the decoder trips on (a cut header, a tensor past the end), the file is bad
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file (truncated or corrupt?): "
                              f"{_first_sentence(e)}") from None


def _read_pickle(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # torch warns about the protocol of a bare pickle before refusing it; the refusal says enough.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        names_object, detail = _unpickler_refusal(e)
        if names_object:
            raise CheckpointError(
                f"refusing to load {path}: it holds Python objects besides tensors ({detail}), and unpickling them "
                "could run arbitrary code; if you trust the file, re-save its state_dict with torch.save or as safetensors"
            ) from None
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch file (truncated or corrupt?): {detail}") from None
    except Exception as e:  # on junk bytes the weights-only unpickler also fails with IndexError, KeyError, ...
        detail = _first_sentence(e)
        if not isinstance(e, (RuntimeError, OSError)) and detail != type(e).__name__:
            detail = f"{type(e).__name__}: {detail}"  # a bare "pop from empty list" or "24" says nothing
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch file (truncated or corrupt?): {detail}") from None


def _unpickler_refusal(error: pickle.UnpicklingError) -> tuple[bool, str]:
    """Whether torch's weights-only unpickler stopped at a Python object (a global, a call), which
    could run code, rather than at bytes that are no pickle at all; and what it stopped at."""
    detail = str(error).split("WeightsUnpickler error:", 1)[-1].strip()
    detail = first_line(detail) if detail else type(error).__name__
    found = re.search(r"GLOBAL (\S+)", detail)
    if found:
        return True, found.group(1)
    return any(s in detail for s in ("reduce for", "create new object", "Can only build")), _first_sentence(detail)


def _first_sentence(error: Exception | str) -> str:
    """An error's first line, without the advice that torch and miniz append after the first full stop."""
    return first_line(error).split(". ", 1)[0].rstrip(".")


def _non_finite(obj: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in `obj` (nested dicts and lists) that hold NaN or inf."""
    if isinstance(obj, Tensor):
        return [prefix.rstrip(".") or "tensor"] if obj.is_floating_point() and not torch.isfinite(obj).all() else []
    if isinstance(obj, Mapping):
        return [name for k, v in obj.items() for name in _non_finite(v, f"{prefix}{k}.")]
    if isinstance(obj, (list, tuple)):
        return [name for i, v in enumerate(obj) for name in _non_finite(v, f"{prefix}{i}.")]
    return []


def _find_state_dict(obj: Any, path: Path) -> tuple[dict[str, Tensor], Any]:
    """The tensors of a checkpoint object, looking inside the usual wrappers, and our record if it has one."""
    extra: Any = {}
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        extra = obj.get(FORMAT_TAG) or {}
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) and isinstance(v, Tensor)
                                                          for k, v in obj.items()):
        top = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"checkpoint {path} holds no state dict of tensors named by strings (found: {top})")
    return dict(obj), extra


def _parse_record(path: Path, extra: Any, st_meta: dict[str, str]) -> tuple[CrossViTConfig | None, dict[str, Any]]:
    """The architecture and metadata that our files record; a damaged record is a CheckpointError
    naming the file, not a KeyError or JSONDecodeError from deep inside."""
    try:
        if st_meta.get("format") == FORMAT_TAG:
            extra = {"config": json.loads(st_meta["config"]), "meta": json.loads(st_meta.get("meta", "{}"))}
        if not isinstance(extra, Mapping) or not isinstance(extra.get("meta") or {}, Mapping):
            raise TypeError("the record or its meta is not a mapping")
        config = CrossViTConfig.from_dict(extra["config"]) if "config" in extra else None
        return config, dict(extra.get("meta") or {})
    except Exception as e:
        reason = f"missing {e}" if isinstance(e, KeyError) else _first_sentence(e)
        raise CheckpointError(f"checkpoint {path} has a damaged crossvit record ({reason}); "
                              "was the file edited? Re-save it from the model with crossvit.save_checkpoint") from None


def read_checkpoint(path: str | os.PathLike) -> StoredCheckpoint:
    """Read any supported checkpoint file into our layout, refusing non-finite weights."""
    path = Path(path)
    obj, st_meta = read_raw(path)
    state, extra = _find_state_dict(obj, path)
    config, meta = _parse_record(path, extra, st_meta)
    state = strip_wrappers(state)
    layout = layout_of(state)
    run_config = obj.get("run_config") if isinstance(obj, Mapping) else None
    if run_config is not None and not isinstance(run_config, Mapping):
        raise CheckpointError(f"checkpoint {path} has a damaged training config (found {type(run_config).__name__}, "
                              "not a mapping); re-save it with crossvit.save_checkpoint")
    progress = obj.get("progress") if isinstance(obj, Mapping) else None
    progress = dict(progress) if isinstance(progress, Mapping) else None
    return StoredCheckpoint(to_our_layout(state), str(path), layout, config, meta, run_config, progress)


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
    if report.heads_reset:  # said only once the rest fits: a refused file must not also claim to be "kept"
        log.warning("%s: its classifier heads do not fit this model's %d classes; keeping everything but the heads, "
                    "which stay freshly initialised", stored.origin, model.num_classes)
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

def torch_save(payload: Any, path: str | os.PathLike) -> None:
    """torch.save through a Python file, whose write errors name their cause (a full disk); torch's
    own file writer reports them as a bare position mismatch."""
    with open(path, "wb") as f:
        torch.save(payload, f)


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
        atomic_write(path, lambda tmp: torch_save(payload, tmp))
    else:
        from safetensors.torch import save_file

        header = {"format": FORMAT_TAG, "config": json.dumps(record["config"]), "meta": json.dumps(record["meta"])}
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=header))
    return path
