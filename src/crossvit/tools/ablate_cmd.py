"""`crossvit ablate STUDY --data PATH --budget 4ep|6m [--seeds N] [KEY=VALUE ...]`: re-run one of
the paper's comparisons (or a grid of your own) on your data and budget, with error bars.

Under `torchrun --nproc_per_node=N` (and across machines) each process trains every N-th run by
itself; run the same command again to resume an interrupted study or to rebuild its report."""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

log = logging.getLogger("crossvit")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ablate", help="re-run a comparison of the paper's ablations over several seeds, with error bars",
        description="Studies: fusion, patches, width, depth, fusion_layers, cls, tokenizer, vs_vit (files in "
                    "crossvit/configs/studies), or a YAML file of your own. Each cell x seed is a normal training run "
                    "in OUTPUT/CELL/seed-N; the table (results.md, results.csv) and the plot are written into OUTPUT.")
    p.add_argument("study", nargs="?", help="study name or YAML file (leave out with --list)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config changes for every run")
    p.add_argument("--data", help="dataset location (sets data.path)")
    p.add_argument("--recipe", help="base recipe instead of the study's (e.g. small_folder)")
    p.add_argument("--budget", help="per run: epochs (4ep) or minutes of training (6m); default: the study's")
    p.add_argument("--seeds", type=int, help="runs per cell, seeds 0..N-1 (default: the study's)")
    p.add_argument("--output", help="study directory (default: runs/ablate-STUDY); an existing one is continued")
    p.add_argument("--report-only", action="store_true", help="write the table from the finished runs, train nothing")
    p.add_argument("--list", action="store_true", help="list the studies and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from ..errors import CrossViTError
    from ..training.distributed import threads_per_process
    from ..training.trainer import start_or_resume, train
    from .ablation import budget_overrides, job_config, jobs, load_study, process_place, shard, study_names
    from .ablation_report import run_finished, write_report

    if args.list:
        for name in study_names():
            print(f"{name:15s} {load_study(name).title}")
        return 0
    if not args.study:
        raise CrossViTError("name a study (e.g. crossvit ablate fusion --data PATH), or use --list")
    study = load_study(args.study)
    if args.recipe:
        study = dataclasses.replace(study, recipe=args.recipe)
    budget = args.budget or study.budget
    budget_overrides(budget)  # checked before anything runs
    seeds = args.seeds if args.seeds is not None else study.seeds
    if seeds < 1:
        raise CrossViTError(f"--seeds must be at least 1, got {seeds}")
    extra = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])
    root = Path(args.output or f"runs/ablate-{study.name}")
    command = " ".join(["crossvit ablate", shlex.quote(args.study), *(["--recipe", args.recipe] if args.recipe else []),
                        *(["--data", shlex.quote(args.data)] if args.data else []), "--budget", budget,
                        "--seeds", str(seeds), *map(shlex.quote, args.overrides)])
    all_jobs = jobs(study, root, seeds)
    configs = {job.output: job_config(study, job, budget, extra) for job in all_jobs}  # all checked before any run

    rank, world, local_world = process_place()
    if not args.report_only:
        mine = shard(all_jobs, rank, world)
        threads = threads_per_process()
        for i, job in enumerate(mine, 1):
            if run_finished(job.output):
                continue
            config = configs[job.output]
            if local_world > 1 and not any(o.startswith("train.threads=") for o in extra):
                config.train.threads = threads  # the machine's cores shared among its processes
            # A run started before continues as it was.
            config, state = start_or_resume(job.output, config, resume="if_started")
            log.info("study %s, run %d/%d of this process: cell %s, seed %d -> %s", study.name, i, len(mine),
                     job.cell.name, job.seed, job.output)
            result = train(config, job.output, state, alone=True)
            if result.interrupted:
                print(f"study stopped; run the same command again to continue: {command} --output {root}")
                return 130
    text = write_report(study, root, seeds, command)
    print(text)
    done = sum(run_finished(job.output) for job in all_jobs)
    if done < len(all_jobs):  # under torchrun, the last process to finish writes the whole table
        print(f"{done} of {len(all_jobs)} runs finished so far; the others are training in other processes or were "
              "never started: the table is rewritten when they finish (or run the command again)")
    print(f"study directory {root}: results.md, results.csv, accuracy_vs_macs.png, one run directory per cell and seed")
    return 0
