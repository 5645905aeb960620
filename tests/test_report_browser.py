"""The report as readers see it: report.html in headless Chromium, report.pdf as page images.

Needs ``chromium`` and poppler's ``pdftoppm``/``pdftotext``/``pdfinfo``
(``apt-get install chromium poppler-utils``; .ci/run installs them); each
test is skipped, with that reason, where its tool is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from report_fixtures import HOSTILE_RACES, rendered_run

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                None)
POPPLER = all(shutil.which(n) for n in ("pdftoppm", "pdftotext", "pdfinfo"))
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                                             "(apt-get install -y chromium)")
needs_poppler = pytest.mark.skipif(not POPPLER, reason="pdftoppm/pdftotext/pdfinfo not installed "
                                                       "(apt-get install -y poppler-utils)")
#: The fixture run's report has a cover, contents, four probes and the method: well over this.
MIN_PAGES = 20
A4_POINTS = (595, 842)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return rendered_run(tmp_path_factory, "full")


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=True)


def _non_trivial(path: Path) -> tuple[int, float]:
    """Distinct colours and the share of non-white pixels of an image."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    inked = float((pixels.min(axis=2) < 235).mean())
    return colours, inked


@pytest.mark.slow
@needs_chromium
def test_html_renders_in_headless_chromium(full, tmp_path):
    run_dir, paths = full
    shot = tmp_path / "screenshot.png"
    profile = tmp_path / "profile"
    _run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1000,1400",
          "--hide-scrollbars", paths["html"].resolve().as_uri()])
    assert shot.is_file()
    assert Image.open(shot).size == (1000, 1400)
    colours, inked = _non_trivial(shot)
    assert colours > 50, "the screenshot is (nearly) a single colour: the page did not render"
    assert inked > 0.02


@pytest.mark.slow
@needs_poppler
def test_pdf_pages_are_a4_numbered_and_not_blank(full, tmp_path):
    _, paths = full
    info = _run(["pdfinfo", str(paths["pdf"])]).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= MIN_PAGES
    width, height = (round(float(v)) for v in re.search(r"Page size:\s+([\d.]+) x ([\d.]+)", info).groups())
    assert (width, height) == A4_POINTS
    _run(["pdftoppm", "-r", "20", "-png", str(paths["pdf"]), str(tmp_path / "page")])
    images = sorted(tmp_path.glob("page-*.png"))
    assert len(images) == pages
    for image in images:
        colours, inked = _non_trivial(image)
        assert inked > 0.005, f"{image.name} is blank"
    # Page numbers in the footer and a table of contents whose page numbers point at the sections.
    last = _run(["pdftotext", "-layout", "-f", str(pages), "-l", str(pages), str(paths["pdf"]), "-"]).stdout
    assert f"Page {pages} of {pages}" in last
    contents = _run(["pdftotext", "-layout", "-f", "2", "-l", "2", str(paths["pdf"]), "-"]).stdout
    assert "Contents" in contents
    listed = dict((name.strip(" ."), int(page)) for name, page in
                  re.findall(r"\d\. ([A-Z][^\n]*?)[ .]+(\d+)\n", contents))
    assert {"Dataset", "Verification bias", "Method and limits"} <= set(listed)
    method_page = _run(["pdftotext", "-f", str(listed["Method and limits"]), "-l",
                        str(listed["Method and limits"]), str(paths["pdf"]), "-"]).stdout
    assert "Method and limits" in method_page


@pytest.mark.slow
@needs_poppler
def test_pdf_shows_hostile_labels_as_text_and_fetches_nothing(tmp_path_factory, monkeypatch):
    from reports import render

    fetched: list[str] = []
    original = render.make_url_fetcher

    def recording_fetcher(run_dir):
        fetcher = original(run_dir)
        inner = fetcher.fetch

        def fetch(url, *args, **kwargs):
            fetched.append(url)
            return inner(url, *args, **kwargs)

        fetcher.fetch = fetch
        return fetcher

    monkeypatch.setattr(render, "make_url_fetcher", recording_fetcher)
    run_dir, paths = rendered_run(tmp_path_factory, "hostile-pdf", formats=("pdf",), races=HOSTILE_RACES,
                                  probes=("detection",))
    assert all(url.startswith("data:") for url in fetched), fetched
    text = _run(["pdftotext", str(paths["pdf"]), "-"]).stdout
    assert "<script>alert(1)</script>" in text
    assert "file:///etc/passwd" in text
    assert "root:x:0:0" not in text
