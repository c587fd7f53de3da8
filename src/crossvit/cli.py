"""The `crossvit` command. Each sub-command lives in its own module with `add_parser` and `run`."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .errors import CrossViTError
from .tools import demo, inspect_checkpoint, models_table

COMMANDS = [models_table, inspect_checkpoint, demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossvit", description="CrossViT models: list, build, check.")
    parser.add_argument("--version", action="version", version=f"crossvit {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CrossViTError as e:
        print(f"crossvit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"crossvit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
