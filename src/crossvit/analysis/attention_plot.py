"""Figures of attention maps: each map stretched over the picture the model saw."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # drawn without pyplot: no display, no global state to disturb
from torch import Tensor

from ..model.registry import ModelMeta
from .attention import query_branch


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
