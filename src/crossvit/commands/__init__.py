"""The `crossvit` sub-commands, one module each, named after the command. A command parses its
arguments (`add_parser`), calls the library (crossvit.inference, .analysis, .deploy, .studies,
.training) and prints (`run`); the work itself is in the library, so nothing imports these.

Where they can, they import torch and the library inside `run`, so that building the parser stays quick.
"""

from __future__ import annotations

import argparse
from typing import Callable

NAMES = ("train", "eval", "report", "predict", "attention", "export", "quantize", "models", "bench", "ablate", "info",
         "demo", "tour")  # in the order `crossvit --help` lists them


def int_at_least(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `least` (a batch of 0 crashed deep inside the DataLoader)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value
    return parse
