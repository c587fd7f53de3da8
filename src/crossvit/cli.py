"""The `crossvit` command. Each sub-command is a module of crossvit.commands, with `add_parser` and `run`."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
from typing import NoReturn

from . import __version__
from .commands import NAMES
from .errors import CrossViTError

COMMANDS = [importlib.import_module(f".commands.{name}", __package__) for name in NAMES]


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line, `crossvit COMMAND: error: ...`, like every other error of the
    command (its usage block is what `crossvit COMMAND --help` shows). Sub-commands inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="crossvit", description="CrossViT: train, evaluate and inspect multi-scale vision transformers.")
    parser.add_argument("--version", action="version", version=f"crossvit {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    # KEY=VALUE overrides may come after options (`train fashion_mnist --data X epochs=5`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        prog = f"{parser.prog} {args.command}"
        if not hasattr(args, "overrides") or any(a.startswith("-") for a in extra):
            print(f"{prog}: error: unrecognized arguments: {' '.join(extra)} (see {prog} --help)", file=sys.stderr)
            return 2
        bare = [a for a in extra if "=" not in a]
        if bare:  # after an option, a word without '=' is no override; say what one looks like
            print(f"{prog}: error: argument {bare[0]!r} is not KEY=VALUE (e.g. epochs=5 optim.lr=1e-3)", file=sys.stderr)
            return 2
        args.overrides = [*args.overrides, *extra]
    args.command_line = shlex.join(["crossvit", *(sys.argv[1:] if argv is None else argv)])  # a run records it
    try:
        return args.run(args)
    except CrossViTError as e:
        print(f"crossvit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"crossvit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `crossvit predict ... | head`: the reader left, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
