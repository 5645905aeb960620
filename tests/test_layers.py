"""The import contract of pyproject.toml holds, and breaking a layer breaks the check.

``lint-imports`` (import-linter) reads every import, those inside functions
included, so a layer cannot be crossed by hiding an import in a function;
and an import inside a function must say why it is there.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("audit", "probes", "reports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    linter = Path(sys.executable).with_name("lint-imports")
    if not linter.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(linter), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def copy_of_the_code(dest: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_layers_hold():
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("module, line", [
    ("audit/errors.py", "from reports import render  # the bottom layer reaching for the top"),
    ("probes/stats.py", "def hidden():\n    from audit.runner import run_audit  # an import hidden in a function"),
    ("audit/results.py", "import torch  # the core must not need torch"),
])
def test_an_import_across_a_layer_breaks_the_check(tmp_path, module, line):
    root = copy_of_the_code(tmp_path)
    path = root / module
    path.write_text(path.read_text() + "\n\n" + line + "\n")
    done = lint_imports(root)
    assert done.returncode != 0, done.stdout
    assert "1 broken" in done.stdout


def test_an_import_inside_a_function_says_why():
    """Imports sit at the top of their module; one of the project's modules imported inside a function
    (a heavy library loaded on use, or a cycle at import time) carries its reason in a comment."""
    silent = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            for function in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(function):
                    module = (node.module if isinstance(node, ast.ImportFrom)
                              else node.names[0].name if isinstance(node, ast.Import) else None)
                    if module is None or module.split(".")[0] not in PACKAGES:
                        continue
                    nearby = lines[max(0, node.lineno - 3):node.lineno]
                    if not any("#" in line for line in nearby):
                        silent.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not silent, "imports inside functions without a reason:\n" + "\n".join(silent)
