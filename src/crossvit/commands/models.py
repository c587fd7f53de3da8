"""`crossvit models [PATTERN] [--json]`: every registered variant with params and GMACs counted on the real network."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the model variants with params and GMACs counted on the real model")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter, e.g. 'crossvit_15*'")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.models_table import describe, format_table
    from ..model.registry import list_models

    rows = [describe(name) for name in list_models(args.pattern)]
    if not rows:
        print(f"no model matches {args.pattern!r}; `crossvit models` lists them all")
        return 1
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0
