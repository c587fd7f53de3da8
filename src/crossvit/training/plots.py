"""Figures of a run: training curves, and the confusion matrix of an evaluation.

Drawn on matplotlib Figures without pyplot: no display, no global state to disturb. `save_figure`
writes one as a PNG file, `png_bytes` returns the PNG (for the HTML run report).
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from ..files import atomic_write


def curves_figure(metrics: list[dict]) -> Figure:
    """Loss, top-1 (each head too) and learning rate against epochs."""
    epochs = [m["epoch"] for m in metrics]
    fig = Figure(figsize=(14, 4))
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    loss_ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train")
    evaluated = [m for m in metrics if "val_top1" in m]
    if evaluated:
        val_epochs = [m["epoch"] for m in evaluated]
        loss_ax.plot(val_epochs, [m["val_loss"] for m in evaluated], "o-", label="val")
        acc_ax.plot(val_epochs, [m["val_top1"] for m in evaluated], "o-", label="heads averaged")
        for b in range(len(evaluated[0]["val_branch_top1"])):
            acc_ax.plot(val_epochs, [m["val_branch_top1"][b] for m in evaluated], ".--", label=f"branch {b} head")
        if "ema_top1" in evaluated[0]:
            acc_ax.plot(val_epochs, [m["ema_top1"] for m in evaluated], "o-", label="EMA weights")
    lr_ax.plot(epochs, [m["lr"] for m in metrics], "o-")
    for ax, title in ((loss_ax, "loss"), (acc_ax, "validation top-1 (%)"), (lr_ax, "learning rate (end of epoch)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    loss_ax.legend()
    if evaluated:
        acc_ax.legend()
    fig.tight_layout()
    return fig


def confusion_figure(confusion: list[list[int]], class_names: list[str], title: str = "") -> Figure:
    """Row-normalised confusion matrix: row = true class, column = prediction."""
    n = len(class_names)
    rates = [[c / max(1, sum(row)) for c in row] for row in confusion]
    size = max(5.0, 0.45 * n + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), class_names, rotation=90)
        ax.set_yticks(range(n), class_names)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if confusion[i][j]:
                        ax.text(j, i, confusion[i][j], ha="center", va="center", fontsize=7,
                                color="white" if rates[i][j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_curves(metrics: list[dict], path: Path) -> None:
    save_figure(curves_figure(metrics), path)


def plot_confusion(confusion: list[list[int]], class_names: list[str], path: Path, title: str = "") -> None:
    save_figure(confusion_figure(confusion, class_names, title), path)


def save_figure(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    return buffer.getvalue()


def per_class_figure(class_names: list[str], accuracies: list[float], overall: float) -> Figure:
    """Top-1 of each class as horizontal bars, worst at the top, with the overall top-1 as a line."""
    order = sorted(range(len(class_names)), key=lambda i: accuracies[i])
    fig = Figure(figsize=(7, max(2.5, 0.28 * len(class_names) + 1)))
    ax = fig.subplots()
    ax.barh(range(len(order)), [accuracies[i] for i in order], color="#4c78a8")
    ax.set_yticks(range(len(order)), [class_names[i] for i in order], fontsize=8 if len(order) <= 40 else 5)
    ax.axvline(overall, color="#e45756", linestyle="--", label=f"all classes: {overall:.2f}%")
    ax.set_xlim(0, 100)
    ax.set_xlabel("validation top-1 (%)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
