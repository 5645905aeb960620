"""The corpus cases: each builds its inputs in a folder and says what the tool must make of them.

A case is one bad (or odd, or perfectly good) input: an image of some kind
in an otherwise clean dataset, a malformed manifest, an import source with
hostile files, a broken attributes CSV, policy, results file or cache.
:func:`all_cases` lists them; ``tests/test_corpus.py`` runs every command
that reads such an input over it (see :mod:`tests.corpus.exercise`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tests.corpus import images
from tests.corpus.datasets import (HOSTILE_LABELS, face_dataset, folders_source, hostile_dataset,
                                   write_manifest_rows)
from tests.corpus.images import IMAGE_CASES, rgb_png


@dataclass
class Inputs:
    """What a case built, and what the tool must make of it."""

    dataset: Path | None = None
    #: Manifest records the dataset has (each must end up usable or excluded), where the case knows.
    expected_rows: int | None = None
    #: image id -> "ok" / "no_face" / "error" (a per-image record) or "excluded" (on load).
    expected_status: dict[str, str] = field(default_factory=dict)
    #: command -> the exit code it must end with (where the case decides it).
    expected_exit: dict[str, int] = field(default_factory=dict)
    #: command -> words its output must contain.
    expected_words: dict[str, str] = field(default_factory=dict)
    #: An import: (kind, source folder, extra options).
    source: tuple[str, Path, list[str]] | None = None
    #: An import into a dataset the case made: (kind, source, destination, options); a failure must leave
    #: the destination as it was.
    import_into: tuple[str, Path, Path, list[str]] | None = None
    #: A run of a clean dataset into an --out folder the case made: (dataset, out); a refusal must leave it intact.
    run_into: tuple[Path, Path] | None = None
    #: (dataset, image id, swap): after a first embed, ``swap`` replaces that image by another face of the same
    #: size and modification time; the next embed must embed it again.
    replaced: tuple[Path, str, Callable[[Path], None]] | None = None
    policy: Path | None = None
    results: str | bytes | None = None
    cache: Path | None = None
    #: A generator folder for 'audit run --generator' (audited with the clean dataset of the session).
    generator: Path | None = None
    #: Command lines (command name -> arguments) the case runs as they are; {DATASET}, {OUT},
    #: {RESULTS} and {POLICY} stand for an empty folder, a fresh output folder, a clean run folder
    #: and a clean policy.
    commands: dict[str, list[str]] = field(default_factory=dict)
    #: Options added to the dataset's 'audit run' (e.g. a probe that reads a file of the case).
    run_options: list[str] = field(default_factory=list)
    #: Render the report of this case's run (slow: only a few cases do).
    report: bool = False
    #: Also run the inversion probe with a tiny generator (slow: only a few cases do).
    train: bool = False
    #: A dataset archive for ``audit dataset fetch lfw --url file://...``: (archive, its MD5).
    archive: tuple[Path, str] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], Inputs]


# --------------------------------------------------------------------------- datasets: images

def _image_case(kind) -> Case:
    def make(root: Path) -> Inputs:
        dataset = face_dataset(root / "ds", people=2, per_person=1)
        image_id = f"img/odd{kind.suffix}"
        (dataset / image_id).write_bytes(kind.make())
        with open(dataset / "manifest.csv", "a", encoding="utf-8") as fh:
            fh.write(f"{image_id},p9,B,M\n")
        return Inputs(dataset=dataset, expected_rows=3, expected_status={image_id: kind.expected},
                      report=kind.name == "png16_grey")
    return Case(f"image-{kind.name}", make)


def _names(root: Path) -> Inputs:
    dataset = root / "ds"
    (dataset / "img").mkdir(parents=True)
    names = ["img/é ü 名前.png", "img/with space.png", "img/new\nline.png", 'img/quote"d.png', "img/com,ma.png",
             "img/'single'.png", "img/<b>bold<b>.png"]
    rows = []
    for i, name in enumerate(names):
        (dataset / name).write_bytes(rgb_png(i))
        rows.append((name, f"p{i}", "AB"[i % 2], "FM"[i // 2 % 2]))
    write_manifest_rows(dataset, rows)
    return Inputs(dataset=dataset, expected_rows=len(names), expected_status={n: "ok" for n in names}, report=True)


def _symlinks(root: Path) -> Inputs:
    dataset = face_dataset(root / "ds", people=2, per_person=1)
    (root / "elsewhere.png").write_bytes(rgb_png(5))
    os.symlink(root / "elsewhere.png", dataset / "img" / "link_out.png")
    os.symlink("p0_0.png", dataset / "img" / "link_in.png")
    os.symlink(root / "nowhere.png", dataset / "img" / "dangling.png")
    os.symlink("loop_b.png", dataset / "img" / "loop_a.png")
    os.symlink("loop_a.png", dataset / "img" / "loop_b.png")
    with open(dataset / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write("img/link_out.png,p5,A,F\nimg/link_in.png,p6,B,F\nimg/dangling.png,p7,A,M\nimg/loop_a.png,p8,B,M\n"
                 "../elsewhere.png,p9,A,F\n" + f"{root / 'elsewhere.png'},p10,B,M\n")
    return Inputs(dataset=dataset, expected_rows=8, expected_status={
        "img/link_out.png": "excluded", "img/dangling.png": "excluded", "img/loop_a.png": "excluded",
        "../elsewhere.png": "excluded", "img/link_in.png": "excluded"})    # link_in: a duplicate of p0_0


def _special_files(root: Path) -> Inputs:
    dataset = face_dataset(root / "ds", people=2, per_person=1)
    os.mkfifo(dataset / "img" / "pipe.jpg")
    (dataset / "img" / "folder.jpg").mkdir()
    with open(dataset / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write("img/pipe.jpg,p5,A,F\nimg/folder.jpg,p6,B,M\n/dev/zero,p7,A,M\nimg/,p8,B,F\n")
    return Inputs(dataset=dataset, expected_rows=6, expected_status={
        "img/pipe.jpg": "excluded", "img/folder.jpg": "excluded", "/dev/zero": "excluded"})


def _planted_hash_cache(root: Path) -> Inputs:
    """A .sha256-cache.csv shipped with the folder gives p0's image the hash of p1's (size and mtime right):
    trusted, p0 would be a "duplicate" of p1, or get p1's cached vector."""
    dataset = face_dataset(root / "ds", people=4, per_person=1)
    import hashlib

    p0, p1 = dataset / "img" / "p0_0.png", dataset / "img" / "p1_1.png"
    st = os.stat(p0)
    (dataset / ".sha256-cache.csv").write_text(
        "path,size,mtime_ns,ctime_ns,inode,sha256\n"
        f"{os.path.realpath(p0)},{st.st_size},{st.st_mtime_ns},1,1,{hashlib.sha256(p1.read_bytes()).hexdigest()}\n")
    return Inputs(dataset=dataset, expected_rows=4, expected_status={"img/p0_0.png": "ok"})


def _duplicates(root: Path) -> Inputs:
    dataset = face_dataset(root / "ds", people=2, per_person=1)
    (dataset / "img" / "copy.png").write_bytes((dataset / "img" / "p0_0.png").read_bytes())
    with open(dataset / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write("img/copy.png,p0,B,M\nimg/p1_1.png,p1,A,M\n")      # other labels; a repeated row
    return Inputs(dataset=dataset, expected_rows=4, expected_status={"img/copy.png": "excluded"},
                  expected_words={"describe": '"duplicates_with_other_labels"'})


def _many_problems(root: Path) -> Inputs:
    """Every per-row reason at once: nothing may go missing between them."""
    dataset = face_dataset(root / "ds", people=4, per_person=1)
    with open(dataset / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write(",p9,A,F\n"                      # empty path
                 "img/missing.png,p9,A,F\n"       # missing file
                 "img/p0_0.png,,A,F\n"            # missing identity, and a repeated path
                 "img/p1_1.png,p1\n"              # too few fields
                 "img/p1_1.png,p1,A,F,extra\n"    # too many
                 'img/x.png,"p"1,A,F\n'           # a stray quote
                 "\n\n"                           # blank lines: not rows
                 "img/p2_2.png,p2, A ,F\n")       # spaces: trimmed; a repeated path
    return Inputs(dataset=dataset, expected_rows=11)


# --------------------------------------------------------------------------- datasets: manifests

def _raw_manifest(name: str, text: str | bytes, *, expected_rows: int | None, exit_code: int | None = None,
                  words: str | None = None, images: int = 4) -> Case:
    def make(root: Path) -> Inputs:
        dataset = face_dataset(root / "ds", people=images, per_person=1)
        data = text.encode("utf-8") if isinstance(text, str) else text
        (dataset / "manifest.csv").write_bytes(data)
        expected_exit = {c: exit_code for c in ("describe", "embed", "run", "balance")} if exit_code else {}
        # An error is the same line from every command; an exclusion shows in describe's JSON.
        expected_words = {c: words for c in (("describe", "run") if exit_code else ("describe",))} if words else {}
        return Inputs(dataset=dataset, expected_rows=expected_rows, expected_exit=expected_exit,
                      expected_words=expected_words)
    return Case(f"manifest-{name}", make)


def _rows(n: int = 4) -> list[str]:
    return [f"img/p{i}_{i}.png,p{i},{'AB'[i % 2]},{'FM'[i // 2 % 2]}" for i in range(n)]


HEADER = "path,identity,race,gender"


def _lines(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def _quote_left_open() -> str:
    rows = _rows(4)
    rows[1] = 'img/p1_1.png,"p1,B,F'
    return _lines(HEADER, *rows)


def _quote_runs_on() -> str:
    rows = _rows(4)
    rows[0] = 'img/p0_0.png,"p0,A,F'
    rows[3] = 'img/p3_3.png,p3,"B",M'
    return _lines(HEADER, *rows)


MANIFEST_CASES = (
    _raw_manifest("quote-left-open", _quote_left_open(), expected_rows=None, exit_code=2,
                  words="the quote opened on line 3 is never closed"),
    _raw_manifest("quote-runs-on", _quote_runs_on(), expected_rows=None, exit_code=2,
                  words="the quote opened on line 2 is only closed on line 5"),
    _raw_manifest("one-megabyte-field", _lines(HEADER, *_rows(3), "img/p3_3.png,p3,B," + "M" * (1 << 20)),
                  expected_rows=4, words="malformed row: a value longer than"),
    _raw_manifest("bom-crlf-blank-lines", b"\xef\xbb\xbf" + _lines(HEADER, "", *_rows(4), "").replace(
        "\n", "\r\n").encode(), expected_rows=4),
    _raw_manifest("no-path-column", _lines("file,identity,race,gender", *_rows(4)), expected_rows=None,
                  exit_code=2, words="has no 'path' column"),
    _raw_manifest("duplicate-column", _lines("path,race,race,gender", *_rows(4)), expected_rows=None,
                  exit_code=2, words="appears twice"),
    _raw_manifest("reserved-column", _lines("path,image_id,race,gender", *_rows(4)), expected_rows=None,
                  exit_code=2, words="is reserved"),
    _raw_manifest("empty-file", b"", expected_rows=None, exit_code=2, words="is empty"),
    _raw_manifest("header-only", _lines(HEADER), expected_rows=None, exit_code=2, words="has a header but no rows"),
    _raw_manifest("not-utf8", HEADER.encode() + b"\nimg/p0_0.png,p\xe90,A,F\n", expected_rows=None, exit_code=2,
                  words="is not UTF-8 text"),
    _raw_manifest("binary", bytes(range(256)) * 8, expected_rows=None, exit_code=2),
    _raw_manifest("nul-bytes", _lines(HEADER, *_rows(3), "img/p3_3.png,p\x003,B,M"), expected_rows=4),
    _raw_manifest("every-row-bad", _lines(HEADER, "img/none.png,p0,A,F", "../up.png,p1,B,F"), expected_rows=None,
                  exit_code=2, words="No usable image"),
    _raw_manifest("no-attributes", _lines("path,identity", *[r.rsplit(",", 2)[0] for r in _rows(4)]),
                  expected_rows=4),
    _raw_manifest("huge-line-count", _lines(HEADER, *_rows(4), *["img/none.png,p9,A,F"] * 5000), expected_rows=5004),
)


def _blank_group_column(root: Path) -> Inputs:
    dataset = face_dataset(root / "ds", people=4, per_person=1)
    write_manifest_rows(dataset, [r.split(",")[:2] + ["", r.split(",")[3]] for r in _rows(4)])
    return Inputs(dataset=dataset, expected_rows=4, expected_exit={"describe-group-by": 2, "run": 2},
                  expected_words={"describe-group-by": "blank in every row"})


def _trainable(root: Path) -> Inputs:
    """A clean dataset big enough to train a tiny generator on: the whole audit runs."""
    dataset = face_dataset(root / "ds", people=12, per_person=1)
    return Inputs(dataset=dataset, expected_rows=12, train=True, report=True)


#: Ages the attributes probe's age bands must survive: overflowing, negative, fractional, not a number,
#: a formula, a non-ASCII digit, blank.
ODD_AGES = ("1e400", "-3", "nan", "=1+1", "2.5", "", "inf", "25", "9" * 30, "0x10", "  ", "\u0663")


def _odd_ages(root: Path) -> Inputs:
    """An age column of numbers that are not ages: the whole audit (attributes probe included) runs."""
    dataset = face_dataset(root / "ds", people=12, per_person=1)
    rows = [r.split(",") + [ODD_AGES[i % len(ODD_AGES)]] for i, r in enumerate(_rows(12))]
    write_manifest_rows(dataset, rows, header=(*HEADER.split(","), "age"))
    return Inputs(dataset=dataset, expected_rows=12, train=True)


# --------------------------------------------------------------------------- datasets: hostile labels

def _file_name(label: str) -> str:
    """The label as a file name (no '/' or NUL, which no file name can hold)."""
    return label.replace("/", "_").replace("\0", "") + ".png"


def _hostile_labels_case(name: str, keys: tuple[str, ...], *, report: bool = False) -> Case:
    """Labels, an identity and a file name that mean something to an output (tests/corpus/datasets.py)."""
    labels = [HOSTILE_LABELS[k] for k in keys]

    def make(root: Path) -> Inputs:
        race = labels[:2] if len(labels) > 1 else [labels[0], "B"]
        gender = [labels[-1], "F"]
        dataset = hostile_dataset(root / "ds", race=race, gender=gender, identity=labels[0],
                                  file_name=_file_name(labels[-1]))
        failed = f"img/{_file_name(labels[0])}"       # an image without a face: named by embed, listed in failures
        (dataset / failed).write_bytes(images.one_pixel())
        with open(dataset / "manifest.csv", "a", encoding="utf-8", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerow([failed, labels[-1], race[0], gender[0]])
        return Inputs(dataset=dataset, expected_rows=5, expected_status={failed: "no_face"}, report=report)
    return Case(f"labels-{name}", make)


LABEL_CASES = (
    _hostile_labels_case("spreadsheet-formulas", ("formula", "dde", "at", "minus")),
    _hostile_labels_case("terminal-controls", ("title", "clipboard", "carriage-return", "bidi")),
    _hostile_labels_case("xml-forbidden", ("xml-forbidden", "title")),
    _hostile_labels_case("chart-mathtext", ("mathtext", "legend-hidden"), report=True),
    _hostile_labels_case("markup", ("markup", "title"), report=True),
    _hostile_labels_case("markdown", ("md-table", "md-code")),
)


def _hostile_attribute_names(root: Path) -> Inputs:
    """Attribute (column) names are the dataset's too: they become groupings and CSV headers."""
    dataset = root / "ds"
    rows = [(f"img/p{i}_{i}.png", f"p{i}", "AB"[i % 2], "FM"[i // 2 % 2]) for i in range(4)]
    face_dataset(dataset, people=4, per_person=1)
    write_manifest_rows(dataset, rows, header=("path", "identity", HOSTILE_LABELS["formula"],
                                               HOSTILE_LABELS["title"]))
    return Inputs(dataset=dataset, expected_rows=4)


# --------------------------------------------------------------------------- datasets: dataset.json

def _info_case(name: str, info: Callable[[Path], dict], words: str) -> Case:
    """A dataset.json field of the wrong type, or reaching outside: the symlinked face beyond is never read."""
    def make(root: Path) -> Inputs:
        dataset = face_dataset(root / "ds", people=4, per_person=1)
        (root / "srv" / "faces").mkdir(parents=True)
        (root / "srv" / "faces" / "someone.png").write_bytes(rgb_png(60))
        os.symlink(root / "srv" / "faces" / "someone.png", dataset / "img" / "someone.png")
        with open(dataset / "manifest.csv", "a", encoding="utf-8") as fh:
            fh.write("img/someone.png,p9,B,M\n")
        (dataset / "dataset.json").write_text(json.dumps(info(root)))
        commands = ("describe", "embed", "run", "balance")
        return Inputs(dataset=dataset, expected_exit={c: 2 for c in commands},
                      expected_words={c: words for c in ("describe", "run")})
    return Case(f"dataset-info-{name}", make)


INFO_CASES = (
    _info_case("references-a-string", lambda root: {"references": str(root / "srv" / "faces")},
               "'references' is str"),
    _info_case("references-the-filesystem-root", lambda root: {"references": ["/"]},
               "holds the dataset folder itself"),
    _info_case("references-the-parent-folder", lambda root: {"references": [str(root)]},
               "holds the dataset folder itself"),
    _info_case("references-relative", lambda root: {"references": ["../srv/faces"]}, "is not an absolute path"),
    _info_case("images-a-string", lambda root: {"images": "copy"}, "'images' is str"),
)


def _trainable_everyone_alone(root: Path) -> Inputs:
    """An extra attribute that gives each person a label combination of their own: the identity-signal
    test, which compares people only within shared labels, has nobody to compare; the run still ends
    (the test untested, its figures flagged) and the report renders."""
    dataset = face_dataset(root / "ds", people=12, per_person=1)
    rows = [r.split(",") for r in (dataset / "manifest.csv").read_text(encoding="utf-8").splitlines()[1:]]
    write_manifest_rows(dataset, [[*r, f"band{i}"] for i, r in enumerate(rows)],
                        header=[*HEADER.split(","), "age_band"])
    return Inputs(dataset=dataset, expected_rows=12, train=True, report=True, expected_exit={"run": 0})


# --------------------------------------------------------------------------- import sources

def _hostile_folders_source(root: Path) -> Inputs:
    src, attributes = folders_source(root / "src", people=4)
    for kind in IMAGE_CASES:
        (src / "person0" / f"{kind.name}{kind.suffix}").write_bytes(kind.make())
    os.mkfifo(src / "person1" / "pipe.jpg")
    (root / "outside.png").write_bytes(rgb_png(30))
    os.symlink(root / "outside.png", src / "person1" / "link_out.png")
    os.symlink(root / "missing.png", src / "person1" / "dangling.png")
    (src / "person2" / "notes.txt").write_text("not an image")
    (src / "person2" / "é ü 名前 new\nline.png").write_bytes(rgb_png(31))
    (src / "person2" / "deeper").mkdir()
    (src / "person2" / "deeper" / "nested.png").write_bytes(rgb_png(32))
    (src / "loose.png").write_bytes(rgb_png(33))
    (src / ".hidden.png").write_bytes(rgb_png(34))
    (src / "person3" / "copy.png").write_bytes((src / "person0" / "0.png").read_bytes())
    return Inputs(source=("folders", src, ["--attributes", str(attributes)]))


def _hostile_labels_source(root: Path) -> Inputs:
    """Identities (folder names), file names and attribute values of an import that mean something to an output."""
    src = root / "src"
    labels = [HOSTILE_LABELS[k] for k in ("formula", "title", "mathtext", "markup")]
    people = [_file_name(label)[:-4] for label in labels]
    for k, person in enumerate(people):
        (src / person).mkdir(parents=True)
        (src / person / f"{_file_name(labels[-1 - k])}").write_bytes(rgb_png(60 + k))
    (src / people[0] / "broken \x1b[2J.jpg").write_bytes(images.truncated_jpeg())
    attributes = root / "attributes.csv"
    with open(attributes, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["identity", "race"])
        for k, person in enumerate(people):
            writer.writerow([person, labels[(k + 1) % len(labels)]])
        writer.writerow([HOSTILE_LABELS["clipboard"], "no such folder"])
    return Inputs(source=("folders", src, ["--attributes", str(attributes)]))


def _attributes_case(name: str, text: str | bytes, *, exit_code: int | None = None, words: str | None = None) -> Case:
    def make(root: Path) -> Inputs:
        src, attributes = folders_source(root / "src", people=4)
        attributes.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        return Inputs(source=("folders", src, ["--attributes", str(attributes)]),
                      expected_exit={"import": exit_code} if exit_code else {},
                      expected_words={"import": words} if words else {})
    return Case(f"attributes-{name}", make)


ATTRIBUTE_CASES = (
    _attributes_case("quote-left-open", 'identity,race\nperson0,"A\nperson1,B\nperson2,A\n', exit_code=2,
                     words="the quote opened on line 2 is never closed"),
    _attributes_case("repeated-and-unknown", "identity,race\nperson0,A\nperson0,B\nnobody,A\n,B\nperson1,B,extra\n"),
    _attributes_case("no-key-column", "name,race\nperson0,A\n", exit_code=2, words="has no 'identity' column"),
    _attributes_case("empty", b"", exit_code=2, words="is empty"),
    _attributes_case("bom", b"\xef\xbb\xbfidentity,race\nperson0,A\nperson1,B\n"),
    _attributes_case("not-utf8", b"identity,race\nperson0,\xff\n", exit_code=2, words="is not UTF-8 text"),
    _attributes_case("reserved-column", "identity,path\nperson0,x\n", exit_code=2, words="which the manifest uses"),
)


def _utkface_source(root: Path) -> Inputs:
    src = root / "src"
    src.mkdir()
    for i, name in enumerate(["25_0_0_20170116174525125.jpg.chip.jpg", "31_1_1_20170116174525126.jpg.chip.jpg",
                              "39_1_20170116174525125.jpg.chip.jpg", "24_0_1_2017011622022465 .jpg.chip.jpg",
                              "30_2_0_20170116232725357.jpg.chip.jpg", "1000_0_0_20170116232725357.jpg.chip.jpg"]):
        (src / name).write_bytes(rgb_png(40 + i))
    os.mkfifo(src / "26_0_0_20170116174525999.jpg.chip.jpg")
    (src / "27_0_0_20170116174525998.jpg.chip.jpg").write_bytes(b"")
    return Inputs(source=("utkface", src, []))


def _lfw_source(root: Path) -> Inputs:
    src = root / "src"
    images_dir = src / "images_deepfunneled"
    for person, n in (("Ann_Lee", 2), ("Bo_Ray", 1)):
        (images_dir / person).mkdir(parents=True)
        for k in range(1, n + 1):
            (images_dir / person / f"{person}_{k:04d}.jpg").write_bytes(images.jpeg())
    (images_dir / "Bo_Ray" / "wrong_name.jpg").write_bytes(images.jpeg())
    (images_dir / "loose.jpg").write_bytes(images.jpeg())
    (src / "labels").mkdir()
    (src / "labels" / "female_names.txt").write_text("Ann_Lee_0001.jpg\nAnn_Lee_0002\n\n")
    (src / "labels" / "male_names.txt").write_text("Bo_Ray_0001.jpg\nNobody_0001.jpg\n")
    (src / "labels" / "lfw_race_dict.json").write_text('{"Ann_Lee": "eastasian,caucasian", "Bo_Ray": ""}')
    return Inputs(source=("lfw", src, []))


def _lfw_bad_race_file(root: Path) -> Inputs:
    inputs = _lfw_source(root)
    (inputs.source[1] / "labels" / "lfw_race_dict.json").write_text('["not", "an", "object"]')
    inputs.expected_exit = {"import": 2}
    return inputs


# --------------------------------------------------------------------------- archives (audit dataset fetch)

def _tar_member(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
                link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _archive_case(name: str, hostile: tuple[str, bytes, str] | None = None, *, truncate: bool = False,
                  expected_exit: int | None = None, words: str | None = None) -> Case:
    """An archive laid out like lfw-deepfunneled.tgz, with one hostile member or cut short."""
    def make(root: Path) -> Inputs:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for person, n in (("Ann_Lee", 2), ("Bo_Ray", 1)):
                for k in range(1, n + 1):
                    _tar_member(tar, f"lfw-deepfunneled/{person}/{person}_{k:04d}.jpg", data=images.jpeg())
            if hostile is not None:
                member, kind, link = hostile
                member = member.format(root=root)        # an absolute path inside the case, to see the write
                _tar_member(tar, member, kind, data=b"not an image" if kind == tarfile.REGTYPE else b"", link=link)
        data = buffer.getvalue()
        data = data[: len(data) // 2] if truncate else data
        archive = root / "mirror" / "lfw-deepfunneled.tgz"
        archive.parent.mkdir(parents=True)
        archive.write_bytes(data)
        return Inputs(archive=(archive, hashlib.md5(data).hexdigest()),
                      expected_exit={"fetch": expected_exit} if expected_exit is not None else {},
                      expected_words={"fetch": words} if words else {})
    return Case(f"archive-{name}", make)


ARCHIVE_CASES = (
    _archive_case("clean", expected_exit=0),
    _archive_case("path-traversal", ("lfw-deepfunneled/../../../escaped.jpg", tarfile.REGTYPE, ""),
                  expected_exit=2, words="refusing to unpack"),
    _archive_case("absolute-path", ("{root}/absolute-escape.jpg", tarfile.REGTYPE, ""),
                  expected_exit=2, words="refusing to unpack"),
    _archive_case("symlink-out", ("lfw-deepfunneled/Ann_Lee/Ann_Lee_0009.jpg", tarfile.SYMTYPE, "/etc/passwd"),
                  expected_exit=2, words="refusing to unpack"),
    _archive_case("hardlink-out", ("lfw-deepfunneled/Ann_Lee/Ann_Lee_0009.jpg", tarfile.LNKTYPE, "/etc/passwd"),
                  expected_exit=2, words="refusing to unpack"),
    _archive_case("device", ("lfw-deepfunneled/Ann_Lee/Ann_Lee_0009.jpg", tarfile.CHRTYPE, ""),
                  expected_exit=2, words="refusing to unpack"),
    _archive_case("truncated", truncate=True, expected_exit=2, words="cannot be unpacked"),
)


def _fairface_source(root: Path) -> Inputs:
    src = root / "src"
    (src / "train").mkdir(parents=True)
    for i in range(3):
        (src / "train" / f"{i}.jpg").write_bytes(rgb_png(50 + i))
    (src / "fairface_label_train.csv").write_text(
        "file,age,gender,race,service_test\n"
        "train/0.jpg,20-29,Female,White,True\n"
        "train/1.jpg,more than 70,Male,Black,False\n"
        "train/1.jpg,30-39,Male,Black,False\n"          # repeated
        "../escape.jpg,30-39,Male,Black,False\n"        # leaves the source
        "train/9.jpg,30-39,Male,Black,False\n"          # missing
        ",30-39,Male,Black,False\n"                     # empty file column
        'train/2.jpg,"3-9,Female,Indian,True\n')         # a quote left open: refused with its line
    return Inputs(source=("fairface", src, []), expected_exit={"import": 2},
                  expected_words={"import": "the quote opened on line 8 is never closed"})


def _fairface_clean_but_odd(root: Path) -> Inputs:
    inputs = _fairface_source(root)
    label = inputs.source[1] / "fairface_label_train.csv"
    label.write_text(label.read_text().replace('"3-9', "3-9"))
    inputs.expected_exit, inputs.expected_words = {}, {}
    return inputs


# --------------------------------------------------------------------------- imports that overlap their destination

def _overlap_case(name: str, source: Callable[[Path], Path], *, copy: bool, words: str) -> Case:
    """An earlier import DS, then an import whose source lies in (or is) DS, with --overwrite: DS must survive."""
    def make(root: Path) -> Inputs:
        from audit.data.importers import import_dataset

        src, _ = folders_source(root / "people", people=2)
        dest = root / "ds"
        import_dataset("folders", src, dest, copy=copy)
        return Inputs(import_into=("folders", source(root), dest, ["--overwrite", *(["--copy"] if copy else [])]),
                      expected_exit={"import-into": 2}, expected_words={"import-into": words})
    return Case(f"source-overlap-{name}", make)


def _link_into_destination(root: Path) -> Path:
    os.symlink(root / "ds" / "images", root / "shortcut")
    return root / "shortcut"


OVERLAP_CASES = (
    _overlap_case("its-own-copied-images", lambda root: root / "ds" / "images", copy=True,
                  words="lies inside the destination"),
    _overlap_case("a-link-to-its-copied-images", _link_into_destination, copy=True,
                  words="lies inside the destination"),
    _overlap_case("the-destination-itself", lambda root: root / "ds", copy=True, words="is inside the source"),
    _overlap_case("the-destination-itself-linked", lambda root: root / "ds", copy=False, words="is inside the source"),
)


# --------------------------------------------------------------------------- output folders

def _output_case(name: str, build: Callable[[Path, Path], Path], *, exit_code: int, words: str | None = None) -> Case:
    """``audit run --out`` into a folder that exists already: the user's own files are never written over."""
    def make(root: Path) -> Inputs:
        dataset = face_dataset(root / "ds", people=4, per_person=1)
        out = build(root, dataset)
        return Inputs(run_into=(dataset, out), expected_exit={"run-into": exit_code},
                      expected_words={"run-into": words} if words else {})
    return Case(f"output-{name}", make)


def _users_own(root: Path, dataset: Path) -> Path:
    out = root / "mine"
    out.mkdir()
    (out / "results.json").write_text('{"my": "own results"}\n')
    (out / "groups.csv").write_text("mine\n")
    return out


def _link_to_users_own(root: Path, dataset: Path) -> Path:
    os.symlink(_users_own(root, dataset), root / "link")
    return root / "link"


def _marked(kind: str, *files: str) -> Callable[[Path, Path], Path]:
    def build(root: Path, dataset: Path) -> Path:
        from audit.outputs import mark_own_folder

        out = root / "earlier"
        out.mkdir()
        for name in files:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(b"from an earlier command of the tool")
        mark_own_folder(out, kind=kind)
        return out
    return build


def _empty(root: Path, dataset: Path) -> Path:
    (root / "empty").mkdir()
    return root / "empty"


OUTPUT_CASES = (
    _output_case("users-own-results", _users_own, exit_code=2, words="did not write (groups.csv, results.json)"),
    _output_case("link-to-users-own-results", _link_to_users_own, exit_code=2, words="did not write"),
    _output_case("the-dataset-folder", lambda root, dataset: dataset, exit_code=2, words="did not write (img"),
    _output_case("a-generator-folder", _marked("generator", "last.pt"), exit_code=2,
                 words="holds a generator folder of this tool"),
    _output_case("an-interrupted-run", _marked("run", "checkpoints/inversion/last.pt"), exit_code=0),
    _output_case("empty", _empty, exit_code=0),
)


# --------------------------------------------------------------------------- files replaced behind the cache

def _replaced_case(name: str, swap: Callable[[Path, bytes], None]) -> Case:
    def make(root: Path) -> Inputs:
        dataset = face_dataset(root / "ds", people=4, per_person=1, make=images.bmp)
        image_id = "img/p0_0.png"      # BMP bytes under the name face_dataset gives: the format is read, not named

        def replace_it(folder: Path) -> None:
            path = folder / image_id
            before = os.stat(path)
            swap(path, images.bmp(20))          # same face, other brightness: another file of the same size
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        return Inputs(replaced=(dataset, image_id, replace_it))
    return Case(f"cache-replaced-{name}", make)


def _in_place(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _renamed_over(path: Path, data: bytes) -> None:
    path.with_name("new.tmp").write_bytes(data)
    os.replace(path.with_name("new.tmp"), path)


REPLACED_CASES = (
    _replaced_case("in-place-same-size-and-mtime", _in_place),
    _replaced_case("renamed-over-same-size-and-mtime", _renamed_over),
)


# --------------------------------------------------------------------------- policies

def _policy_case(name: str, text: str | bytes | None, *, exit_code: int | None = 2, words: str | None = None,
                 special: str | None = None) -> Case:
    def make(root: Path) -> Inputs:
        path = root / "policy.toml"
        if special == "folder":
            path.mkdir()
        elif special == "fifo":
            os.mkfifo(path)
        else:
            path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        return Inputs(policy=path, expected_exit={"gate": exit_code} if exit_code is not None else {},
                      expected_words={"gate": words} if words else {})
    return Case(f"policy-{name}", make)


RULE = '[[rule]]\nid = "r"\nmetric = "detection.failure_rate"\nmax = 1.0\n'

POLICY_CASES = (
    _policy_case("hostile-names", '[policy]\nname = "gate\\u001b]0;owned\\u0007"\n' + RULE.replace(
        'id = "r"', 'id = "=r\\u001b[2J"\ndescription = "<b>\\u0000</b>"'), exit_code=0),
    _policy_case("valid", RULE, exit_code=0),
    _policy_case("byte-order-mark", b"\xef\xbb\xbf" + RULE.encode(), exit_code=0),
    _policy_case("empty", "", words="no rules"),
    _policy_case("not-toml", "[[rule]\nid = ", words="is not valid TOML"),
    _policy_case("binary", bytes(range(256)), words="Policy"),
    _policy_case("utf16", RULE.encode("utf-16"), words="Policy"),
    _policy_case("unknown-key", RULE + "colour = 'red'\n", words="unknown key 'colour'"),
    _policy_case("rule-not-array", '[rule]\nid = "r"\nmetric = "detection.failure_rate"\nmax = 1.0\n',
                 words="must be an array of tables"),
    _policy_case("string-bound", RULE.replace("max = 1.0", 'max = "0.5"'), words="must be a finite number"),
    _policy_case("nan-bound", RULE.replace("max = 1.0", "max = nan"), words="must be a finite number"),
    _policy_case("min-above-max", RULE + "min = 2.0\n", words="is above max"),
    _policy_case("unknown-metric", RULE.replace("detection.failure_rate", "detection.nothing"),
                 words="no figures for metric"),
    _policy_case("unknown-group", RULE + 'grouping = "race"\ngroup = "Martian"\n', words="Martian"),
    _policy_case("baseline-without-baseline", RULE.replace("max = 1.0", "baseline = { max_worsening = 0.1 }"),
                 words="baseline"),
    _policy_case("deeply-nested", "a = " + "[" * 5000 + "]" * 5000 + "\n", words="Policy"),
    _policy_case("latin-1", RULE.replace('id = "r"', 'id = "r\u00e9gle"').encode("latin-1"),
                 words="is not valid TOML ('utf-8' codec can't decode byte 0xe9"),
    _policy_case("a-5000-digit-bound", RULE.replace("max = 1.0", "max = " + "9" * 5000), words="Policy"),
    _policy_case("a-folder", None, special="folder", words="No policy file"),
    _policy_case("a-fifo", None, special="fifo", words="No policy file"),
)


# --------------------------------------------------------------------------- results files

def _results_case(name: str, make_text: Callable[[dict], str | bytes], *, exit_code: int | None = 2,
                  words: str | None = None, gate: int | None = None, gate_words: str | None = None) -> Case:
    """A results file for gate, report and a later run's --baseline (``gate``/``gate_words``: the gate's
    own verdict where it differs from the report's, as for a figure no rule may pass)."""
    def make(root: Path) -> Inputs:
        # gate and report read the file alike: refused by both, or read by both
        exits = {"gate": exit_code, "report": exit_code, "baseline": exit_code} if exit_code is not None else {}
        said = {"gate": words, "report": words, "baseline": words} if words else {}
        if gate is not None:
            exits["gate"] = exits["baseline"] = gate
        if gate_words is not None:
            said["gate"] = gate_words
        return Inputs(results=make_text, expected_exit=exits, expected_words=said)
    return Case(f"results-{name}", make)


def _edit(change: Callable[[dict], None]) -> Callable[[dict], str]:
    def text(results: dict) -> str:
        data = json.loads(json.dumps(results))
        change(data)
        return json.dumps(data)
    return text


def _set(key, value):
    return _edit(lambda d: d.__setitem__(key, value))


def _first_figure(key, value):
    return _edit(lambda d: d["figures"][0].__setitem__(key, value))


def _hostile_groups(results: dict) -> None:
    """Every group of the results renamed to a hostile label: gate and report read them as they are."""
    names = list(HOSTILE_LABELS.values())
    renamed: dict[str, str] = {}
    for figure in results["figures"]:
        if figure["grouping"] != "all":
            figure["group"] = renamed.setdefault(figure["group"], names[len(renamed) % len(names)])
    for disparity in results.get("disparities", []):
        for key in ("worst_group", "best_group", "group_a", "group_b"):
            if disparity.get(key) in renamed:
                disparity[key] = renamed[disparity[key]]


#: A number no figure of a run has, replaced in the text by a token Python's json reads as a float.
_MARK = 123456.789


def _non_finite_figure(token: str, key: str = "value") -> Callable[[dict], str]:
    """Every figure of the detection probe's failure rate (the gate's rule) with ``key`` = ``token``."""
    def text(results: dict) -> str:
        data = json.loads(json.dumps(results))
        for item in data["figures"]:
            if item["metric"] == "failure_rate":
                item[key] = _MARK
        return json.dumps(data).replace(str(_MARK), token)
    return text


def _non_finite_disparity(token: str, key: str = "value") -> Callable[[dict], str]:
    def text(results: dict) -> str:
        data = json.loads(json.dumps(results))
        for item in data["disparities"]:
            item[key] = _MARK
        return json.dumps(data).replace(str(_MARK), token)
    return text


RESULTS_CASES = (
    _results_case("hostile-group-labels", _edit(_hostile_groups), exit_code=None),
    _results_case("valid", lambda r: json.dumps(r), exit_code=0),
    _results_case("byte-order-mark", lambda r: b"\xef\xbb\xbf" + json.dumps(r).encode(), exit_code=0),
    _results_case("empty", lambda r: "", words="is not valid JSON"),
    _results_case("truncated", lambda r: json.dumps(r)[:200], words="is not valid JSON"),
    _results_case("not-an-object", lambda r: "[1, 2, 3]", words="no 'schema_version'"),
    _results_case("future-schema", _set("schema_version", "9.0"), words="schema_version '9.0'"),
    _results_case("figures-not-a-list", _set("figures", {"a": 1}), words="lacks the list 'figures'"),
    _results_case("figure-not-an-object", _edit(lambda d: d["figures"].insert(0, "a string")),
                  words="figures[0] is str 'a string', not an object"),
    _results_case("figure-value-a-string", _first_figure("value", "high"), exit_code=None),
    _results_case("figure-nan", _first_figure("value", float("nan")), exit_code=None),
    _results_case("figure-missing-keys", _edit(lambda d: d["figures"][0].pop("group")), exit_code=None),
    _results_case("flags-not-a-list", _first_figure("flags", "unstable"), words="not a list of names"),
    _results_case("probe-section-not-an-object", _set("probes", {"verification": "skipped"}),
                  words="probes.verification is str 'skipped', not an object"),
    _results_case("section-field-wrong-type", _edit(lambda d: d["target"].__setitem__("name", 5)),
                  words="target.name is int 5, not text"),
    _results_case("tests-p-value-text", _set("tests", {"detection.failure_rate": {"race": {"p_value": "low"}}}),
                  words="tests.detection.failure_rate.race.p_value is str 'low', not a number"),
    _results_case("deeply-nested", lambda r: json.dumps(r)[:-1] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}",
                  words="nests JSON more than 100 levels deep"),
    _results_case("nested-past-the-limit", lambda r: json.dumps(r)[:-1] + ', "x": ' + "[" * 150 + "]" * 150 + "}",
                  words="nests JSON more than 100 levels deep"),
    _results_case("a-5000-digit-number", lambda r: json.dumps(r)[:-1] + ', "x": ' + "9" * 5000 + "}",
                  words="is not valid JSON (Exceeds the limit"),
    _results_case("latin-1", lambda r: json.dumps(r, ensure_ascii=False).replace('"tool"', '"t\u00f6ol"', 1)
                  .encode("latin-1", errors="replace"), words="is not UTF-8 text"),
    _results_case("a-string", lambda r: '"results"', words="no 'schema_version'"),
    _results_case("null", lambda r: "null", words="no 'schema_version'"),
    _results_case("figures-a-list-of-lists", _set("figures", [[1, 2]]), words="figures[0] is list"),
    *(_results_case(f"figure-{name}", _non_finite_figure(token), exit_code=0, gate=1,
                    gate_words="not a finite number")
      for name, token in (("minus-infinity", "-Infinity"), ("infinity", "Infinity"), ("1e999", "1e999"),
                          ("minus-1e999", "-1e999"))),
    _results_case("figure-nan-token", _non_finite_figure("NaN"), exit_code=0, gate=1,
                  gate_words="the figure is undefined (NaN"),
    _results_case("interval-minus-infinity", _non_finite_figure("-Infinity", key="ci_low"), exit_code=0),
    _results_case("interval-infinity", _non_finite_figure("Infinity", key="ci_high"), exit_code=0),
    _results_case("disparity-minus-infinity", _non_finite_disparity("-Infinity"), exit_code=0),
    _results_case("p-value-minus-infinity", _non_finite_disparity("-Infinity", key="p_value"), exit_code=0),
    _results_case("count-1e999", _first_figure("n_people", 1e999), words="not a number"),
    _results_case("binary", lambda r: bytes(range(256)), words="is not UTF-8 text"),
)


# --------------------------------------------------------------------------- caches

def _cache_case(name: str, build: Callable[[Path], None], *, exit_code: int | None = 2,
                words: str | None = None) -> Case:
    def make(root: Path) -> Inputs:
        path = root / "cache" / "cache.sqlite"
        path.parent.mkdir()
        build(path)
        return Inputs(cache=path, expected_exit={"embed": exit_code} if exit_code is not None else {},
                      expected_words={"embed": words} if words else {})
    return Case(f"cache-{name}", make)


def _valid_cache(path: Path) -> None:
    from audit.cache import EmbeddingCache

    EmbeddingCache(path).close()


def _damaged_cache(path: Path) -> None:
    from audit.cache import CachedEmbedding, EmbeddingCache
    import numpy as np

    with EmbeddingCache(path) as cache:
        cache.put_embeddings([(f"h{i:05d}", CachedEmbedding("ok", 1, "", np.full(128, i, np.float32)))
                              for i in range(2000)], target="t", preprocessing="p")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = len(data) // 4096 - 3
    data[page * 4096 + 100:page * 4096 + 400] = bytes(range(256)) + bytes(44)
    path.write_bytes(bytes(data))


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()


def _old_version(path: Path) -> None:
    _valid_cache(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '0' WHERE key = 'version'")
    conn.commit()
    conn.close()


CACHE_CASES = (
    _cache_case("valid", _valid_cache, exit_code=0),
    _cache_case("zero-bytes", lambda p: p.write_bytes(b""), exit_code=0),
    _cache_case("not-sqlite", lambda p: p.write_text("a text file"), words="is not a cache file"),
    _cache_case("truncated-header", lambda p: p.write_bytes(b"SQLite format 3\x00" + bytes(50)), words="cache"),
    _cache_case("foreign-sqlite", _foreign_sqlite, words="an SQLite file of another program"),
    _cache_case("old-version", _old_version, words="is cache version '0'"),
    _cache_case("damaged-pages", _damaged_cache, words="is damaged"),
    _cache_case("a-folder", lambda p: p.mkdir(), words="is a directory"),
    _cache_case("a-fifo", lambda p: os.mkfifo(p), words="is not a file"),
)


# --------------------------------------------------------------------------- dataset.json, pairs, LFW files

def _dataset_info_case(name: str, text: str | bytes, words: str) -> Case:
    """A dataset whose dataset.json is damaged: every command that loads the dataset refuses it alike."""
    def make(root: Path) -> Inputs:
        dataset = face_dataset(root / "ds", people=4, per_person=1)
        (dataset / "dataset.json").write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        commands = ("describe", "embed", "run", "balance")
        return Inputs(dataset=dataset, expected_rows=None, expected_exit={c: 2 for c in commands},
                      expected_words={c: words for c in ("describe", "run")})
    return Case(f"dataset-info-{name}", make)


DATASET_INFO_CASES = (
    _dataset_info_case("deeply-nested", '{"kind": ' + "[" * 100000 + "]" * 100000 + "}", "nests JSON more than"),
    _dataset_info_case("nested-past-the-limit", '{"kind": "folders", "x": ' + "[" * 150 + "]" * 150 + "}",
                       "nests JSON more than 100 levels deep"),
    _dataset_info_case("latin-1", '{"source": "caf\u00e9"}'.encode("latin-1"), "is not UTF-8 text (byte 0xe9"),
    _dataset_info_case("a-list", "[1, 2]", "is not a JSON object"),
    _dataset_info_case("images-not-an-object", '{"images": "copy"}', "'images' is str 'copy', not an object"),
    _dataset_info_case("references-not-a-list", '{"references": 5}', "'references' is int 5, not a list of text"),
    _dataset_info_case("a-5000-digit-number", '{"x": ' + "9" * 5000 + "}", "is not valid JSON (Exceeds the limit"),
)


def _pairs_case(name: str, data: bytes, words: str, *, in_folder: bool = False) -> Case:
    """A verification pairs file (--pairs, or the dataset folder's pairs.txt) refused before any embedding."""
    def make(root: Path) -> Inputs:
        dataset = face_dataset(root / "ds", people=2, per_person=2)
        pairs = dataset / "pairs.txt" if in_folder else root / "pairs.txt"
        pairs.write_bytes(data)
        options = ["--probes", "detection,verification"] + ([] if in_folder else ["--pairs", str(pairs)])
        return Inputs(dataset=dataset, expected_rows=4, run_options=options, expected_exit={"run": 2},
                      expected_words={"run": words})
    return Case(f"pairs-{name}", make)


PAIRS_CASES = (
    _pairs_case("latin-1", "p0 1 2\nJos\u00e9 1 2\n".encode("latin-1"), "line 2: byte 0xe9 is not UTF-8 text"),
    _pairs_case("latin-1-in-the-folder", "Jos\u00e9 1 2\n".encode("latin-1"), "byte 0xe9 is not UTF-8 text",
                in_folder=True),
    _pairs_case("utf16", "p0 1 2\n".encode("utf-16"), "is not UTF-8 text"),
    _pairs_case("superscript-digit", "p0 1 \u00b2\n".encode(), "is not 'Name i j'"),
    _pairs_case("a-5000-digit-number", b"p0 1 " + b"9" * 5000 + b"\n", "is not 'Name i j'"),
    _pairs_case("no-pair", b"10 300\n", "holds no pair"),
)


def _lfw_file_case(name: str, relative: str, data: bytes, words: str) -> Case:
    def make(root: Path) -> Inputs:
        inputs = _lfw_source(root)
        (inputs.source[1] / relative).write_bytes(data)
        inputs.expected_exit = {"import": 2}
        inputs.expected_words = {"import": words}
        return inputs
    return Case(f"source-lfw-{name}", make)


LFW_FILE_CASES = (
    _lfw_file_case("race-dict-deeply-nested", "labels/lfw_race_dict.json", b"[" * 100000 + b"]" * 100000,
                   "nests JSON more than"),
    _lfw_file_case("race-dict-nested-values", "labels/lfw_race_dict.json",
                   b'{"Ann_Lee": ' + b"[" * 500 + b"]" * 500 + b"}", "nests JSON more than 100 levels deep"),
    _lfw_file_case("race-dict-latin-1", "labels/lfw_race_dict.json", '{"Ann_L\u00e9e": "x"}'.encode("latin-1"),
                   "is not UTF-8 text"),
    _lfw_file_case("names-latin-1", "labels/female_names.txt", "Ann_L\u00e9e_0001.jpg\n".encode("latin-1"),
                   "female_names.txt' cannot be read"),
)


def _fairface_latin1(root: Path) -> Inputs:
    inputs = _fairface_clean_but_odd(root)
    label = inputs.source[1] / "fairface_label_train.csv"
    label.write_bytes(label.read_text().replace("Female", "F\u00e9male", 1).encode("latin-1"))
    inputs.expected_exit, inputs.expected_words = {"import": 2}, {"import": "is not UTF-8 text"}
    return inputs


def _exclusions_latin1(root: Path) -> Inputs:
    dataset = face_dataset(root / "ds", people=4, per_person=1)
    (dataset / "exclusions.csv").write_bytes("row,path,reason\n2,x.png,caf\u00e9\n".encode("latin-1"))
    return Inputs(dataset=dataset, expected_exit={c: 2 for c in ("describe", "embed", "run", "balance")},
                  expected_words={"describe": "exclusions.csv"})


# --------------------------------------------------------------------------- generator folders

#: A clean generator folder, trained once per session (seconds: a tiny network on 30 random chips)
#: in the folder of the first case that needs it (the session's temporary folders outlive it).
_CLEAN_GENERATOR: list[Path] = []


def _clean_generator(root: Path) -> Path:
    if not _CLEAN_GENERATOR:
        from tests.test_generator_artifact import make

        folder = root.parent / "clean-generator"
        make(folder)
        _CLEAN_GENERATOR.append(folder)
    return _CLEAN_GENERATOR[0]


def _generator_case(name: str, damage: Callable[[Path], None] | None, words: str) -> Case:
    def make(root: Path) -> Inputs:
        import shutil

        folder = root / "gen"
        shutil.copytree(_clean_generator(root), folder)
        if damage is not None:
            damage(folder)
        return Inputs(generator=folder, expected_exit={"run-generator": 2}, expected_words={"run-generator": words})
    return Case(f"generator-{name}", make)


def generator_cases() -> list[Case]:
    """Every damage of tests/test_generator_damage.py, each file of the folder, through 'audit run --generator'."""
    from tests.test_generator_damage import DAMAGES

    # The clean folder was trained against a stand-in model: a real target refuses it by its fingerprint.
    return [_generator_case("clean-for-another-target", None, "was trained against target"),
            *(_generator_case(name, damage, "is damaged (") for name, (damage, _) in DAMAGES.items())]


# --------------------------------------------------------------------------- number options

def option_cases() -> list[Case]:
    """Every number option of every command, with the values numpy and torch cannot take.

    A whole number gets one below its least value, 10**30 and -10**30; a
    float nan, inf and -inf.  Each must be refused when the options are
    parsed (exit 2 naming the option), before the command reads anything.
    """
    import click

    from audit.cli import cli

    def commands(group, path=()):
        for name, command in sorted(group.commands.items()):
            if isinstance(command, click.Group):
                yield from commands(command, (*path, name))
            else:
                yield (*path, name), command

    cases = []
    for words, command in commands(cli):
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            kind = param.type
            if isinstance(kind, click.types.IntParamType):
                values = [str(min(-1, (getattr(kind, "min", None) or 0) - 1)), str(10 ** 30), str(-10 ** 30)]
            elif isinstance(kind, click.types.FloatParamType):
                values = ["nan", "inf", "-inf"]
            else:
                continue
            option = param.opts[0]

            def make(root: Path, words=words, option=option, values=values) -> Inputs:
                required = _REQUIRED.get(words, [])
                if option in required:          # given once only: a second one would win over the bad value
                    at = required.index(option)
                    required = required[:at] + required[at + 2:]
                lines = {f"{' '.join(words)} {option}={v}": [*words, f"{option}={v}", *required] for v in values}
                return Inputs(commands=lines, expected_exit={c: 2 for c in lines},
                              expected_words={c: f"Invalid value for '{option}'" for c in lines})
            cases.append(Case(f"option-{'-'.join(words)}{option}", make))
    return cases


#: What each command needs besides the bad option.  {DATASET} is an empty folder: a command whose
#: option is left unchecked then fails on it at once, with another message (an expectation that
#: fails), instead of starting work that a value such as 10**30 would never let end.
_REQUIRED = {
    ("run",): ["--dataset", "{DATASET}", "--out", "{OUT}", "--probes", "detection", "--no-report", "-q"],
    ("embed",): ["--dataset", "{DATASET}", "-q"],
    ("generator", "train"): ["--dataset", "{DATASET}", "--out", "{OUT}", "-q"],
    ("dataset", "balance"): ["{DATASET}", "{OUT}", "--by", "race", "--per-group", "1"],
    ("dataset", "describe"): ["{DATASET}"],
    ("gate",): ["{RESULTS}", "--policy", "{POLICY}"],
    ("report",): ["{RESULTS}"],
}


def all_cases() -> list[Case]:
    return [
        *(_image_case(kind) for kind in IMAGE_CASES),
        Case("dataset-names", _names),
        Case("dataset-symlinks", _symlinks),
        Case("dataset-special-files", _special_files),
        Case("dataset-duplicates-with-other-labels", _duplicates),
        Case("dataset-planted-hash-cache", _planted_hash_cache),
        Case("dataset-every-row-reason", _many_problems),
        Case("dataset-blank-group-column", _blank_group_column),
        Case("dataset-trainable", _trainable),
        Case("dataset-odd-ages", _odd_ages),
        *LABEL_CASES,
        Case("labels-attribute-names", _hostile_attribute_names),
        Case("dataset-trainable-everyone-alone-in-their-labels", _trainable_everyone_alone),
        *MANIFEST_CASES,
        *INFO_CASES,
        Case("source-folders-hostile", _hostile_folders_source),
        Case("source-folders-hostile-labels", _hostile_labels_source),
        *ATTRIBUTE_CASES,
        Case("source-utkface", _utkface_source),
        Case("source-lfw", _lfw_source),
        Case("source-lfw-bad-race-file", _lfw_bad_race_file),
        Case("source-fairface-quote-left-open", _fairface_source),
        Case("source-fairface-odd-rows", _fairface_clean_but_odd),
        *OVERLAP_CASES,
        *OUTPUT_CASES,
        *REPLACED_CASES,
        *ARCHIVE_CASES,
        *POLICY_CASES,
        *RESULTS_CASES,
        *CACHE_CASES,
        *DATASET_INFO_CASES,
        Case("dataset-exclusions-latin-1", _exclusions_latin1),
        *PAIRS_CASES,
        *LFW_FILE_CASES,
        Case("source-fairface-latin-1", _fairface_latin1),
        *generator_cases(),
        *option_cases(),
    ]
