"""datasets/README.md tells a user where every supported dataset is published and what to pass to its importer."""

from __future__ import annotations

import re
from pathlib import Path

from audit.data.importers import KINDS

README = Path(__file__).resolve().parents[1] / "datasets" / "README.md"
NAMES = {"utkface": "UTKFace", "lfw": "LFW", "fairface": "FairFace"}


def where_to_get_rows() -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Where to get each dataset", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| dataset")]
    return {row[0]: row for row in rows}


def test_every_public_dataset_importer_has_its_source_terms_and_command():
    rows = where_to_get_rows()
    for kind in KINDS:
        if kind == "folders":                      # the user's own data
            continue
        row = next((r for name, r in rows.items() if name.startswith(NAMES[kind])), None)
        assert row is not None, kind
        _, published, terms, command = row
        assert re.search(r"<https?://[^>]+>", published), row
        assert terms, row
        assert f"audit dataset import {kind} " in command, row


def test_the_published_addresses_are_the_authors():
    rows = where_to_get_rows()
    text = " ".join(" ".join(r) for r in rows.values())
    for url in ("https://susanqq.github.io/UTKFace/", "http://vis-www.cs.umass.edu/lfw/",
                "https://github.com/joojs/fairface"):
        assert f"<{url}>" in text, url
