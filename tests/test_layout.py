"""The source layout: commands are a thin layer on top of the library, never a library themselves.

Only cli.py and crossvit/commands/ may import crossvit.commands; every command module there is
listed for the `crossvit` command and has `add_parser` and `run`.
"""

import ast
from pathlib import Path

import pytest

import crossvit
from crossvit.cli import COMMANDS

PACKAGE = Path(crossvit.__file__).parent
COMMANDS_DIR = PACKAGE / "commands"
ROOT = PACKAGE.parents[1]


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module a source file imports, relative imports resolved against its `package`."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # `from crossvit import commands` imports the package as surely as `import crossvit.commands`
            modules.update([base, *(f"{base}.{alias.name}" for alias in node.names)])
    return modules


def package_of(path: Path) -> str:
    """The dotted package a file of src/ belongs to (its own name for an __init__.py)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1])


def sources_outside_the_commands() -> list[tuple[Path, str]]:
    library = [(p, package_of(p)) for p in PACKAGE.rglob("*.py") if COMMANDS_DIR not in p.parents and p.name != "cli.py"]
    scripts = [(p, "") for folder in ("tests", "benchmarks") for p in (ROOT / folder).rglob("*.py")]
    return library + scripts


def test_nothing_but_the_cli_imports_a_command_module():
    offenders = [f"{path.relative_to(ROOT)} imports {module}"
                 for path, package in sources_outside_the_commands()
                 for module in sorted(imported_modules(path, package))
                 if module == "crossvit.commands" or module.startswith("crossvit.commands.")]
    assert offenders == [], "commands only parse, call the library and print; move what is shared into the library"


def test_every_command_module_is_listed_and_has_add_parser_and_run():
    files = sorted(p.stem for p in COMMANDS_DIR.glob("*.py") if p.name != "__init__.py")
    assert sorted(module.__name__.removeprefix("crossvit.commands.") for module in COMMANDS) == files
    for module in COMMANDS:
        assert callable(getattr(module, "add_parser", None)) and callable(getattr(module, "run", None)), module.__name__


@pytest.mark.parametrize("source, package, found", [
    ("from ..commands import predict", "crossvit.analysis", {"crossvit.commands", "crossvit.commands.predict"}),
    ("from .commands.eval import run", "crossvit", {"crossvit.commands.eval", "crossvit.commands.eval.run"}),
    ("import crossvit.commands.bench as b", "", {"crossvit.commands.bench"}),
    ("from crossvit import commands", "", {"crossvit", "crossvit.commands"}),
])
def test_the_scan_resolves_every_form_of_import(source, package, found, tmp_path):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imported_modules(path, package) == found
