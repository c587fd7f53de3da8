"""Training a study's runs: every (cell, seed) run, or under torchrun this process's share of them,
skipping finished runs and continuing interrupted ones, then the report of all that are finished."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..runconfig import RunConfig
from .report import run_finished, write_report
from .specs import Job, Study, job_config, jobs, process_place, shard

log = logging.getLogger("crossvit")


@dataclass(frozen=True)
class StudyOutcome:
    interrupted: bool  # a run was stopped (Ctrl-C, SIGTERM); running the study again continues it
    report: str | None  # results.md's text; None if interrupted
    finished: int  # runs finished so far, by any process
    total: int


def run_study(study: Study, root: Path, seeds: int, budget: str, extra: list[str], command: str,
              train_runs: bool = True) -> StudyOutcome:
    """Train the study's runs in `root`/CELL/seed-N (this process's share of them under torchrun),
    each with its budget (4ep, 6m), the `extra` KEY=VALUE changes and its seed; then write the
    report (results.md, results.csv, the plot) of the finished ones, with `command` as the way to
    reproduce it. With train_runs=False only the report is written. Every run's config is checked
    before the first one trains."""
    all_jobs = jobs(study, root, seeds)
    configs = {job.output: job_config(study, job, budget, extra) for job in all_jobs}
    interrupted = train_runs and _train_share(study, all_jobs, configs, extra)
    report = None if interrupted else write_report(study, root, seeds, command)
    return StudyOutcome(interrupted, report, sum(run_finished(job.output) for job in all_jobs), len(all_jobs))


def _train_share(study: Study, all_jobs: list[Job], configs: dict[Path, RunConfig], extra: list[str]) -> bool:
    """Train this process's unfinished runs; whether one of them was interrupted."""
    from ..training.distributed import threads_per_process
    from ..training.trainer import start_or_resume, train

    rank, world, local_world = process_place()
    mine = shard(all_jobs, rank, world)
    threads = threads_per_process()
    for i, job in enumerate(mine, 1):
        if run_finished(job.output):
            continue
        config = configs[job.output]
        if local_world > 1 and not any(o.startswith("train.threads=") for o in extra):
            config.train.threads = threads  # the machine's cores shared among its processes
        # a run started before continues as it was
        config, state = start_or_resume(job.output, config, resume="if_started")
        log.info("study %s, run %d/%d of this process: cell %s, seed %d -> %s", study.name, i, len(mine),
                 job.cell.name, job.seed, job.output)
        if train(config, job.output, state, alone=True).interrupted:
            return True
    return False
