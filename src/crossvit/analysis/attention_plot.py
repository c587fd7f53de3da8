"""Figures of attention maps: each map stretched over the picture the model saw.

`save_attention_figures` writes what `crossvit attention` does: the figures, and the maps as .npy.
Everything is drawn in a hidden folder beside the output and moved in only once it is all
there, so a failure (a full disk, say) leaves no half-written results.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from matplotlib.figure import Figure  # drawn without pyplot: no display, no global state to disturb
from torch import Tensor

from ..inference import probabilities
from ..model.crossvit import CrossViT
from ..model.registry import ModelMeta
from .attention import attention_maps, query_branch


def unnormalise(x: Tensor, meta: ModelMeta) -> np.ndarray:
    """The model's input as a picture in [0, 1]: (H, W, 3), or (H, W) for grey."""
    mean = torch.tensor(meta.mean).view(-1, 1, 1)
    std = torch.tensor(meta.std).view(-1, 1, 1)
    picture = (x.cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
    return picture[..., 0] if picture.shape[-1] == 1 else picture


def _overlay(ax, picture: np.ndarray, weights: np.ndarray | None, title: str) -> None:
    """The picture, with a map (any grid) stretched over it; each panel has its own colour scale."""
    h, w = picture.shape[:2]
    if weights is not None and picture.ndim == 3:
        picture = picture.mean(-1)  # grey under the colour map, so the map's colours read alone
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
    if weights is not None:
        ax.imshow(weights, cmap="inferno", alpha=0.6, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    ax.set_title("\n".join(textwrap.wrap(title.replace("_", " "), 20)), fontsize=7)
    ax.axis("off")


def plot_overview(picture: np.ndarray, maps: dict[str, np.ndarray], path: Path, title: str) -> None:
    """One row per branch: the input, then each map whose query is that branch's CLS token, heads averaged."""
    rows: dict[int, list[str]] = {}
    for name in maps:
        rows.setdefault(query_branch(name), []).append(name)
    cols = 1 + max(len(names) for names in rows.values())
    fig = Figure(figsize=(1.8 * cols, 2.3 * len(rows) + 0.4))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (branch, names) in enumerate(sorted(rows.items())):
        _overlay(axes[r, 0], picture, None, f"branch {branch}: input")
        for c, name in enumerate(names, start=1):
            _overlay(axes[r, c], picture, maps[name].mean(0), name)
        for ax in axes[r, len(names) + 1:]:
            ax.axis("off")
    _save(fig, title, path)


def strip_figure(picture: np.ndarray, maps: dict[str, np.ndarray], titles: dict[str, str] | None = None) -> Figure:
    """One row: the input, then each map (heads averaged) over it; `titles` name the panels (default: the map names)."""
    fig = Figure(figsize=(1.6 * (1 + len(maps)), 2.0))
    axes = fig.subplots(1, 1 + len(maps), squeeze=False)[0]
    _overlay(axes[0], picture, None, "input")
    for ax, (name, heads) in zip(axes[1:], maps.items()):
        _overlay(ax, picture, heads.mean(0), (titles or {}).get(name, name))
    fig.tight_layout()
    return fig


def plot_heads(picture: np.ndarray, heads: np.ndarray, path: Path, title: str) -> None:
    """One map, each head alone."""
    cols = min(6, len(heads))
    rows = -(-len(heads) // cols)
    fig = Figure(figsize=(1.8 * cols, 2.3 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h < len(heads):
            _overlay(ax, picture, heads[h], f"head {h}")
        else:
            ax.axis("off")
    _save(fig, title, path)


def _save(fig: Figure, title: str, path: Path) -> None:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def save_attention_figures(model: CrossViT, image: Tensor, out: Path, class_names: list[str], *, image_name: str,
                           source: str, per_head: bool = False, with_rollout: bool = False) -> list[tuple[Path, str]]:
    """Attention maps of one preprocessed image (C, H, W) written into folder `out`: attention.png
    (a row per branch, heads averaged), each map as MAP.npy, and with `per_head` each head alone
    (MAP_heads.png, MAP_heads.npy). The title names the image, the model's top class and the
    `source` (the checkpoint). Returns each file written with a few words on what it holds."""
    maps = attention_maps(model, image, with_rollout=with_rollout)
    probs = probabilities(model, image.unsqueeze(0))[0]
    best = int(probs.argmax())
    title = f"{image_name}: {class_names[best]} {100 * probs[best]:.1f}%  ({source})"
    picture = unnormalise(image, model.meta)

    def draw(folder: Path) -> None:
        plot_overview(picture, maps, folder / "attention.png", title)
        for name, heads in maps.items():
            np.save(folder / f"{name}.npy", heads.mean(0))
            if per_head and len(heads) > 1:  # a single head (rollout) is its own average
                np.save(folder / f"{name}_heads.npy", heads)
                plot_heads(picture, heads, folder / f"{name}_heads.png", f"{name}  ({title})")

    return [(path, _contents(path, maps)) for path in _write_all(out, draw)]


def _contents(path: Path, maps: dict[str, np.ndarray]) -> str:
    """What a written file holds, for the list printed at the end."""
    if path.name == "attention.png":
        return "overview: a row per branch, heads averaged"
    heads = maps[path.stem.removesuffix("_heads")]
    if path.suffix == ".png":
        return f"{len(heads)} heads"
    shape = heads.shape if path.stem.endswith("_heads") else heads.shape[1:]
    return "array " + "x".join(map(str, shape))


def _write_all(out: Path, draw: Callable[[Path], None]) -> list[Path]:
    """Call draw(folder) on a hidden folder beside `out`, then move what it wrote into `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        draw(staging)
        out.mkdir(exist_ok=True)
        names = sorted(os.listdir(staging))
        for name in names:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / name for name in names]
