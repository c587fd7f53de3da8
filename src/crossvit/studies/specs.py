"""Studies for `crossvit ablate`: a grid of cells (model options) trained over several seeds,
each run by the normal training code, so that a study resumes, logs and checkpoints like any run.

A study file (configs/studies/*.yaml, or any YAML file) names a base recipe, a budget, the seeds
and the cells; each cell is a list of KEY=VALUE changes to the recipe, with the paper's numbers
for it where the study maps to one of the paper's tables.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import CrossViTError
from ..runconfig import RECIPES_DIR, RunConfig, load_config, named_yaml

STUDIES_DIR = RECIPES_DIR / "studies"
STUDY_KEYS = ("title", "recipe", "budget", "seeds", "overrides", "paper", "cells")


@dataclass(frozen=True)
class Cell:
    name: str
    overrides: tuple[str, ...]
    paper: dict = field(default_factory=dict)  # {"top1": 81.0, "heads": [47.2, 68.1], "gmacs": 5.6}


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    recipe: str
    budget: str
    seeds: int
    overrides: tuple[str, ...]
    paper: str  # what the paper's numbers are (model, dataset, table)
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Job:
    """One training run: a cell with one seed, in its own run directory."""

    cell: Cell
    seed: int
    output: Path


def study_names() -> list[str]:
    return sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))


def study_path(study: str) -> Path:
    """A study file's path, given the path itself or a study's name (vs-vit or vs_vit)."""
    return Path(study) if Path(study).is_file() else named_yaml(study.replace("-", "_"), STUDIES_DIR, "study")


def load_study(study: str) -> Study:
    """A checked study from its name or file."""
    path = study_path(study)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CrossViTError(f"study {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), dict) or not raw["cells"]:
        raise CrossViTError(f"study {path} must be a mapping with a non-empty `cells:` mapping (name: {{overrides: [...]}})")
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    if unknown:
        raise CrossViTError(f"study {path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(STUDY_KEYS)}")
    cells = []
    for name, spec in raw["cells"].items():
        spec = spec or {}
        if not isinstance(spec, dict) or set(spec) - {"overrides", "paper"}:
            raise CrossViTError(f"study {path}: cell {name!r} must be a mapping with `overrides:` (and optionally `paper:`)")
        cells.append(Cell(str(name), _strings(spec.get("overrides"), f"{path}: cell {name!r}"), dict(spec.get("paper") or {})))
    seeds = raw.get("seeds", 3)
    if not isinstance(seeds, int) or seeds < 1:
        raise CrossViTError(f"study {path}: seeds must be a positive whole number, got {seeds!r}")
    result = Study(name=path.stem, title=str(raw.get("title", path.stem)), recipe=str(raw.get("recipe", "fashion_mnist")),
                   budget=str(raw.get("budget", "3ep")), seeds=seeds,
                   overrides=_strings(raw.get("overrides"), f"{path}: overrides"), paper=str(raw.get("paper", "")),
                   cells=tuple(cells))
    budget_overrides(result.budget)
    return result


def _strings(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise CrossViTError(f"{where}: overrides must be a list of KEY=VALUE strings, got {value!r}")
    return tuple(value)


def budget_overrides(budget: str) -> list[str]:
    """'4ep': four epochs for every run; '6m': six minutes of training (train.time_limit)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ep|m)\s*", budget)
    if not match or float(match.group(1)) <= 0:
        raise CrossViTError(f"budget {budget!r} is neither epochs nor minutes: write e.g. 4ep or 6m")
    amount, unit = match.groups()
    if unit == "ep":
        if not amount.isdigit():
            raise CrossViTError(f"budget {budget!r}: epochs must be a whole number, e.g. 4ep")
        return [f"epochs={amount}", "train.time_limit=null"]
    return [f"train.time_limit={amount}", "epochs=1000"]  # the minutes end the run


def jobs(study: Study, root: Path, seeds: int) -> list[Job]:
    """Every (cell, seed) run, seed by seed: an interrupted study has whole seeds of every cell first."""
    return [Job(cell, seed, root / cell.name / f"seed-{seed}") for seed in range(seeds) for cell in study.cells]


def shard(all_jobs: list[Job], rank: int, world: int) -> list[Job]:
    """The jobs of process `rank` of `world` (torchrun): every world-th one."""
    return all_jobs[rank::world]


def job_config(study: Study, job: Job, budget: str, extra: list[str]) -> RunConfig:
    return load_config(study.recipe, [*study.overrides, *budget_overrides(budget), *job.cell.overrides,
                                      f"seed={job.seed}", *extra])


def process_place() -> tuple[int, int, int]:
    """(rank, world size, processes on this machine) that torchrun gives this process."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_WORLD_SIZE", "1"))
