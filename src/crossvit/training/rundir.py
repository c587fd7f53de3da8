"""What a run directory holds, and reading it back (the run report, the model card and studies do).

    config.yaml    the resolved config (runconfig.save_config)
    command.txt    the command lines that started and resumed the run, each after a comment saying when and where
    metrics.jsonl  one JSON record per epoch
    curves.png     loss, top-1 and learning rate against epochs
    last.pth       everything resuming needs; best.pth: the weights of the best evaluation
    tensorboard/   event files, where the tensorboard package is installed
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

CONFIG, COMMANDS, METRICS, CURVES, LAST, BEST = (
    "config.yaml", "command.txt", "metrics.jsonl", "curves.png", "last.pth", "best.pth")


def record_command(run_dir: Path, command: str) -> None:
    """Add a command line to the run's command.txt, which then reads as the shell commands that made the run."""
    with (Path(run_dir) / COMMANDS).open("a") as f:
        f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')} in {os.getcwd()}\n{command}\n")


def read_commands(run_dir: Path) -> list[str]:
    """The command lines of the run's command.txt, oldest first (none where there is no such file)."""
    path = Path(run_dir) / COMMANDS
    if not path.is_file():
        return []
    return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a line cut short by a kill is left out."""
    records = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return records
