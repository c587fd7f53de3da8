"""The package's layers: the run config is a leaf, data/ never reaches into training/, and each
layer imports by itself in a fresh interpreter (an import cycle shows there first)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The absolute names of the modules `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # `from ..x import y` in crossvit/data/: crossvit.x
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            names |= {base} if node.module else {f"{base}.{alias.name}" for alias in node.names}
    return names


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("module", ["crossvit.data", "crossvit.training", "crossvit.training.trainer"])
def test_imports_alone_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_data_never_imports_training():
    for path in sorted((SRC / "crossvit" / "data").rglob("*.py")):
        wrong = sorted(n for n in imports(path) if within(n, "crossvit.training"))
        assert not wrong, f"{path.name} imports {wrong}"


def test_the_run_config_is_a_leaf():
    """At its top, the standard library, yaml, crossvit.errors and crossvit.files; the checks that
    need the model registry or timm import them where they run; never data/ or training/."""
    path = SRC / "crossvit" / "runconfig.py"
    allowed = {"yaml", "crossvit.errors", "crossvit.files"}
    top = {n for n in imports(path, top_level_only=True)
           if n.split(".")[0] not in sys.stdlib_module_names and n != "__future__"}
    assert top <= allowed, top - allowed
    wrong = sorted(n for n in imports(path) if within(n, "crossvit.data") or within(n, "crossvit.training"))
    assert not wrong, wrong


def test_the_import_scan_resolves_relative_imports():
    """The scan above would pass vacuously if it misread `from ..training import x`."""
    assert "crossvit.training.engine" in imports(SRC / "crossvit" / "training" / "trainer.py")
    assert "crossvit.runconfig" in imports(SRC / "crossvit" / "data" / "__init__.py")
