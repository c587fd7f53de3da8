"""The result of a study, read back from its runs' own files: mean and standard deviation of
top-1 per cell (and per head alone), parameters, MACs and training speed; as Markdown, CSV and
a plot of accuracy against MACs."""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write
from ..runconfig import load_config
from ..training import rundir
from .specs import Cell, Study


@dataclass(frozen=True)
class RunOutcome:
    seed: int
    top1: float
    heads: tuple[float, ...]
    img_per_s: float
    epochs: int


@dataclass(frozen=True)
class CellSummary:
    cell: Cell
    runs: tuple[RunOutcome, ...]
    params: int | None
    macs: int | None

    def top1(self) -> tuple[float, float]:
        return _mean_std([r.top1 for r in self.runs])

    def heads(self) -> list[tuple[float, float]]:
        return [_mean_std([r.heads[i] for r in self.runs]) for i in range(len(self.runs[0].heads))] if self.runs else []


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run_finished(output: Path) -> bool:
    """Whether the run in `output` trained its whole budget and was evaluated at the end."""
    if not (output / rundir.CONFIG).is_file() or not (output / rundir.LAST).is_file():
        return False
    records = rundir.read_metrics(output / rundir.METRICS)
    if not records or "val_top1" not in records[-1]:
        return False
    last = records[-1]
    return last.get("time_limit_reached", False) or last["epoch"] >= load_config(str(output / rundir.CONFIG)).epochs


def outcome(output: Path, seed: int) -> RunOutcome:
    records = rundir.read_metrics(output / rundir.METRICS)
    final = records[-1]
    full = [r["img_per_s"] for r in records if not r.get("time_limit_reached")] or [r["img_per_s"] for r in records]
    return RunOutcome(seed, final["val_top1"], tuple(final["val_branch_top1"]), statistics.fmean(full), final["epoch"])


def collect(study: Study, root: Path, seeds: int) -> list[CellSummary]:
    """Every cell's finished runs; parameters and MACs counted on the model a run saved."""
    from ..analysis.flops import count_params, model_macs
    from ..model.factory import create_model

    summaries = []
    for cell in study.cells:
        folders = [(seed, root / cell.name / f"seed-{seed}") for seed in range(seeds)]
        runs = tuple(outcome(folder, seed) for seed, folder in folders if run_finished(folder))
        params = macs = None
        if runs:
            model = create_model(checkpoint=root / cell.name / f"seed-{runs[0].seed}" / rundir.LAST)
            params, macs = count_params(model), model_macs(model)
        summaries.append(CellSummary(cell, runs, params, macs))
    return summaries


def _pm(mean_std: tuple[float, float], runs: int) -> str:
    mean, std = mean_std
    return f"{mean:.2f} ± {std:.2f}" if runs > 1 else f"{mean:.2f}"


def markdown(study: Study, summaries: list[CellSummary], seeds: int) -> str:
    has_paper = any(s.cell.paper for s in summaries)
    head = "| cell | runs | top-1 % | heads alone % | params (M) | MMACs | train img/s | epochs |"
    rule = "|---|---|---|---|---|---|---|---|"
    if has_paper:
        head += " paper top-1 | paper heads alone | paper GMACs |"
        rule += "---|---|---|"
    lines = [head, rule]
    for s in summaries:
        n = len(s.runs)
        if n:
            heads = " / ".join(_pm(h, n) for h in s.heads())
            row = (f"| {s.cell.name} | {n}/{seeds} | **{_pm(s.top1(), n)}** | {heads} | {s.params / 1e6:.3f} | "
                   f"{s.macs / 1e6:.1f} | {statistics.fmean(r.img_per_s for r in s.runs):.0f} | "
                   f"{'/'.join(str(e) for e in sorted({r.epochs for r in s.runs}))} |")
        else:
            row = f"| {s.cell.name} | 0/{seeds} | not run yet | | | | | |"
        if has_paper:
            p = s.cell.paper
            paper_heads = " / ".join(f"{v:g}" for v in p.get("heads", []))
            row += f" {p.get('top1', '')} | {paper_heads} | {p.get('gmacs', '')} |"
        lines.append(row)
    return "\n".join(lines)


def csv_text(summaries: list[CellSummary]) -> str:
    heads = max((len(s.runs[0].heads) for s in summaries if s.runs), default=0)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["cell", "runs", "top1_mean", "top1_std", *[f"head{i}_{k}" for i in range(heads) for k in ("mean", "std")],
                     "params", "macs", "train_img_per_s", "paper_top1", "paper_heads", "paper_gmacs"])
    for s in summaries:
        if not s.runs:
            continue
        mean, std = s.top1()
        head_values = [v for h in s.heads() for v in h] + [""] * 2 * (heads - len(s.heads()))
        p = s.cell.paper
        writer.writerow([s.cell.name, len(s.runs), f"{mean:.4f}", f"{std:.4f}", *[f"{v:.4f}" if v != "" else "" for v in head_values],
                         s.params, s.macs, f"{statistics.fmean(r.img_per_s for r in s.runs):.1f}", p.get("top1", ""),
                         " ".join(str(v) for v in p.get("heads", [])), p.get("gmacs", "")])
    return out.getvalue()


def plot(study: Study, summaries: list[CellSummary], path: Path) -> None:
    from matplotlib.figure import Figure

    from ..training.plots import save_figure

    done = [s for s in summaries if s.runs]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for s in done:
        mean, std = s.top1()
        ax.errorbar(s.macs / 1e6, mean, yerr=std, fmt="o", capsize=4)
        ax.annotate(s.cell.name, (s.macs / 1e6, mean), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_xlabel("MMACs per image")
    ax.set_ylabel("top-1 % (mean ± std over seeds)")
    ax.set_title(study.title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def write_report(study: Study, root: Path, seeds: int, command: str) -> str:
    """results.md, results.csv and accuracy_vs_macs.png in `root`; returns the Markdown."""
    summaries = collect(study, root, seeds)
    text = f"### {study.title}\n\n{markdown(study, summaries, seeds)}\n\n"
    if study.paper:
        text += f"Paper: {study.paper}.\n\n"
    text += f"Reproduce: `{command}`\n"
    atomic_write(root / "results.md", lambda tmp: Path(tmp).write_text(text))
    table = csv_text(summaries)
    atomic_write(root / "results.csv", lambda tmp: Path(tmp).write_text(table))
    if any(s.runs for s in summaries):
        plot(study, summaries, root / "accuracy_vs_macs.png")
    return text
