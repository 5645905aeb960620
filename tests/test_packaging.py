"""The wheel is the product: built, installed without -e into a fresh environment, it renders a report."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

from report_fixtures import build_run

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_of_the_source_tree():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(REPO), include=["audit*", "probes*", "reports*"]))
    assert found | {"reports.templates", "reports.templates.partials"} == listed, \
        "add the new package to [tool.setuptools] packages"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = out.glob("face_bias_audit-*.whl")
    return path


def test_the_wheel_holds_the_templates_and_stylesheet(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = [REPO / "templates" / "report.html.j2", REPO / "templates" / "report.css",
                 *(REPO / "templates" / "partials").glob("*.j2")]
    for path in templates:
        assert f"reports/templates/{path.relative_to(REPO / 'templates').as_posix()}" in names
    assert not any(n.startswith("templates/") for n in names)    # no top-level 'templates' package
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


@pytest.mark.slow
def test_an_installed_wheel_renders_a_report(wheel, tmp_path):
    """A fresh environment holding only the wheel (its dependencies borrowed from this one)."""
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies (torch, weasyprint...) come from this environment's site-packages, as a plain path:
    # its .pth files (an editable install of this checkout) are not read.
    Path(site, "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    where = subprocess.run([str(python), "-c", "import reports.render as r; print(r.__file__, r.TEMPLATES_DIR)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert str(REPO) not in where and site in where
    run_dir = tmp_path / "run"
    build_run(run_dir)
    result = subprocess.run([str(env / "bin" / "audit"), "report", str(run_dir)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    html = (run_dir / "report.html").read_text()
    assert "<style>" in html and "Inversion" in html
    assert (run_dir / "report.pdf").read_bytes().startswith(b"%PDF")
