"""Dataset folders and import sources for the corpus and the fault tests, made from one real face.

Every image is the astronaut's face with a small, distinct change of
brightness (or a mirror), so that files differ byte for byte and the face
detector finds a face in each; groups and identities are assigned in turn.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Sequence

from tests.corpus.images import rgb_png

RACES = ("A", "B")
GENDERS = ("F", "M")
HEADER = ("path", "identity", "race", "gender")

#: Labels that mean something to one of the tool's outputs: a spreadsheet formula (and a DDE call),
#: terminal control sequences (a window title, OSC 52 writing the clipboard, a carriage return that
#: rewrites the line, a bidirectional override), matplotlib mathtext and its legend's "hidden" prefix,
#: HTML markup, a character XML 1.0 forbids.
HOSTILE_LABELS = {
    "formula": '=HYPERLINK("http://x.invalid/?"&A1,"open")',
    "dde": "+cmd|' /C calc'!A0",
    "at": "@SUM(1+1)*cmd|' /C calc'!A0",
    "minus": "-2+3+cmd|' /C calc'!A0",
    "title": "B\x1b]0;owned\x07",
    "clipboard": "\x1b]52;c;ZWNobyBvd25lZA==\x07C",
    "carriage-return": "FAIL\rpass",
    "bidi": "\u202eetihW",
    "mathtext": "$\\frac{a$",
    "legend-hidden": "_hidden",
    "markup": '<img src=x onerror="alert(1)">',
    "xml-forbidden": "nul\x00vt\x0b",
    "md-table": "x | **FAIL** | pass\n| y \\| z",
    "md-code": "`a|b` [l](http://x.invalid) <b>@all</b> # h $x$ #12 !3 www.x.invalid",
}


def person_labels(person: int) -> tuple[str, str]:
    return RACES[person % 2], GENDERS[(person // 2) % 2]


def face_dataset(root: Path, *, people: int = 4, per_person: int = 2,
                 make: Callable[[int], bytes] = rgb_png) -> Path:
    """A clean dataset folder: ``people`` x ``per_person`` face images and their manifest."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    index = 0
    for person in range(people):
        race, gender = person_labels(person)
        for _ in range(per_person):
            name = f"img/p{person}_{index}.png"
            (root / name).write_bytes(make(index))
            rows.append((name, f"p{person}", race, gender))
            index += 1
    write_manifest_rows(root, rows)
    return root


def write_manifest_rows(root: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> Path:
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return root / "manifest.csv"


def hostile_dataset(root: Path, *, race: Sequence[str], gender: Sequence[str], identity: str,
                    file_name: str) -> Path:
    """Four people, one face each, whose labels, first identity and first file name are hostile."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for person in range(4):
        name = f"img/{file_name}" if person == 0 else f"img/p{person}.png"
        (root / name).write_bytes(rgb_png(person))
        rows.append((name, identity if person == 0 else f"p{person}", race[person % len(race)],
                     gender[(person // 2) % len(gender)]))
    write_manifest_rows(root, rows)
    return root


def folders_source(root: Path, *, people: int = 4, per_person: int = 2) -> tuple[Path, Path]:
    """An import source for the ``folders`` importer, and its attributes CSV (beside it)."""
    index = 0
    lines = ["identity,race,gender"]
    for person in range(people):
        folder = root / f"person{person}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_person):
            (folder / f"{k}.png").write_bytes(rgb_png(index))
            index += 1
        race, gender = person_labels(person)
        lines.append(f"person{person},{race},{gender}")
    attributes = root.parent / f"{root.name}-attributes.csv"
    attributes.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root, attributes
