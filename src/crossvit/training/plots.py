"""PNG figures of a run: training curves, and the confusion matrix of an evaluation."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from ..files import atomic_write  # noqa: E402


def plot_curves(metrics: list[dict], path: Path) -> None:
    """Loss, top-1 (each head too) and learning rate against epochs."""
    epochs = [m["epoch"] for m in metrics]
    fig, (loss_ax, acc_ax, lr_ax) = plt.subplots(1, 3, figsize=(14, 4))
    loss_ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train")
    evaluated = [m for m in metrics if "val_top1" in m]
    if evaluated:
        val_epochs = [m["epoch"] for m in evaluated]
        loss_ax.plot(val_epochs, [m["val_loss"] for m in evaluated], "o-", label="val")
        acc_ax.plot(val_epochs, [m["val_top1"] for m in evaluated], "o-", label="heads averaged")
        for b in range(len(evaluated[0]["val_branch_top1"])):
            acc_ax.plot(val_epochs, [m["val_branch_top1"][b] for m in evaluated], "--", label=f"branch {b} head")
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
    save_figure(fig, path)


def plot_confusion(confusion: list[list[int]], class_names: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix: row = true class, column = prediction."""
    n = len(class_names)
    rates = [[c / max(1, sum(row)) for c in row] for row in confusion]
    size = max(5.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
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
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
