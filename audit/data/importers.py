"""``audit dataset import``: public face datasets to a dataset folder.

Each importer reads a dataset in the layout its authors publish, turns its
labels into manifest columns, and lists what it could not use in
``DEST/exclusions.csv``.  The images are referenced, not copied, unless
``copy=True``: ``DEST/images`` is then a symlink to the source's image folder
(recorded in ``DEST/dataset.json`` as the folder's one reference outside
itself), so the manifest's paths stay relative to ``DEST``.  The source is
only read, never written.

Label rules (documented for users in ``datasets/README.md``):

* UTKFace: labels from ``AGE_GENDER_RACE_DATETIME.jpg.chip.jpg``; a name that
  does not follow that pattern exactly is excluded, not guessed at.
* LFW: identity from the folder; gender from ``labels/female_names.txt`` and
  ``labels/male_names.txt``; race from ``labels/lfw_race_dict.json`` where it
  has the person, several labels giving ``Multiracial`` (the labels kept in
  ``race_labels``).
* FairFace: its label CSVs (``file, age, gender, race``) as given.
* folders: one folder per identity, attributes from a CSV keyed by identity.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from audit.data.csv_records import read_csv_records
from audit.data.destination import ELSEWHERE as DEST_ELSEWHERE
from audit.data.destination import check_destination, staged_destination
from audit.data.manifest import (IDENTITY_COLUMN, IMAGE_EXTENSIONS, NON_ATTRIBUTE_COLUMNS, PATH_COLUMN,
                                 RESERVED_COLUMNS, SHA256_COLUMN, Resolver, digest_files,
                                 exclusions_frame, is_inside, write_dataset_folder, write_dataset_hash_cache)
from audit.errors import DatasetError
from audit.json_model import read_json
from audit.outputs import writing

#: The folder inside DEST through which the manifest's paths reach the images.
IMAGES_FOLDER = "images"

#: Age bands shared by every importer: FairFace's own bands, so that UTKFace
#: and FairFace results can be compared.
AGE_BANDS = ((0, 2), (3, 9), (10, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 69))
OLDEST_BAND = "70+"

UTKFACE_GENDERS = {"0": "Male", "1": "Female"}
UTKFACE_RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}
UTKFACE_PATTERN = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>\d)_(?P<race>\d)_(?P<datetime>\d+)"
                             r"\.jpg(?:\.chip\.jpg)?$")
UTKFACE_EXAMPLE = "25_1_3_20170104220144127.jpg.chip.jpg"

LFW_IMAGES = "images_deepfunneled"
LFW_LABELS = "labels"
LFW_GENDER_LISTS = (("female_names.txt", "Female"), ("male_names.txt", "Male"))
LFW_RACE_FILE = "lfw_race_dict.json"
#: lfw_race_dict.json's labels, in the words the other datasets use.
LFW_RACES = {"african": "Black", "caucasian": "White", "eastasian": "East Asian",
             "asianindian": "Indian", "latino": "Latino", "nativeamerican": "Native American",
             "pacificislander": "Pacific Islander", "other": "Other"}
#: The race of a person with several labels: one value, not a guess at which one.
LFW_MULTIPLE_RACES = "Multiracial"

FAIRFACE_REQUIRED = ("file", "age", "gender", "race")
FAIRFACE_LABEL_GLOB = "fairface_label_*.csv"

KINDS = ("utkface", "lfw", "fairface", "folders")


def age_band(age: int) -> str:
    """The band of an age in years: ``0-2``, ``3-9``, ``10-19``, ... ``60-69``, ``70+``."""
    for low, high in AGE_BANDS:
        if low <= age <= high:
            return f"{low}-{high}"
    return OLDEST_BAND


@dataclass
class Collected:
    """What an importer found: images to reference, and what it could not use.

    ``rows`` have ``source`` (the image's path relative to ``image_root``,
    posix), then the manifest columns in ``columns``.
    """

    image_root: Path
    columns: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)
    exclusions: list[tuple[Any, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImportSummary:
    """The outcome of one import, for the CLI to print and tests to check."""

    kind: str
    source: Path
    dest: Path
    mode: str                       # "link" or "copy"
    n_images: int
    n_identities: int | None
    exclusions: pd.DataFrame
    notes: tuple[str, ...]
    n_duplicates: int
    seconds: float


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _walk(folder: Path) -> list[str]:
    """Every non-hidden file under ``folder``, as sorted posix paths relative to it.

    Symlinked folders are followed, each real folder once (no loops).
    """
    found = []
    seen = {os.path.realpath(folder)}
    for current, dirs, files in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(current, d))
            if not _is_hidden(d) and real not in seen:
                seen.add(real)
                keep.append(d)
        dirs[:] = keep
        rel = Path(current).relative_to(folder)
        for name in sorted(files):
            if not _is_hidden(name):
                found.append((rel / name).as_posix())
    return sorted(found)


def _relative_to_source(src: Path, path: Path) -> str:
    try:
        return path.relative_to(src).as_posix()
    except ValueError:
        return str(path)


def _not_an_image_reason(name: str) -> str:
    suffix = Path(name).suffix or "(none)"
    return (f"not an image file: its extension is {suffix}; the importer reads "
            f"{', '.join(IMAGE_EXTENSIONS)}")


# --------------------------------------------------------------------------- UTKFace

def parse_utkface_name(name: str) -> tuple[dict[str, str] | None, str | None]:
    """Labels from a UTKFace file name, or why the name cannot be read.

    Only names that follow ``AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`` exactly
    are read: a name with a field missing, a space or a missing dot was
    mangled somewhere, and its labels cannot be trusted.
    """
    match = UTKFACE_PATTERN.match(name)
    if match is None:
        if any(ch.isspace() for ch in name):
            detail = "it contains a space"
        elif not (name.endswith(".jpg.chip.jpg") or (name.endswith(".jpg") and ".chip." not in name)):
            detail = "it does not end in '.jpg.chip.jpg' (a '.' is missing?)"
        else:
            stem = name.split(".", 1)[0]
            fields = stem.split("_")
            if len(fields) != 4:
                detail = (f"it has {len(fields)} '_'-separated fields instead of 4 "
                          "(a label is missing)")
            elif not all(f.isdigit() for f in fields):
                detail = "a field is not a number"
            else:
                detail = "the age has more than 3 digits"
        return None, (f"malformed file name: {detail}; expected AGE_GENDER_RACE_DATETIME.jpg.chip.jpg, "
                      f"e.g. {UTKFACE_EXAMPLE}")
    gender, race = match["gender"], match["race"]
    if gender not in UTKFACE_GENDERS:
        return None, f"malformed file name: gender {gender!r} is not 0 (male) or 1 (female)"
    if race not in UTKFACE_RACES:
        return None, f"malformed file name: race {race!r} is not one of 0-4"
    age = int(match["age"])
    return {"age": str(age), "age_band": age_band(age), "gender": UTKFACE_GENDERS[gender],
            "race": UTKFACE_RACES[race]}, None


def collect_utkface(src: Path) -> Collected:
    collected = Collected(image_root=src, columns=["age", "age_band", "gender", "race"])
    for rel in _walk(src):
        name = rel.rsplit("/", 1)[-1]
        if not _is_image_name(name):
            collected.exclusions.append(("", rel, _not_an_image_reason(name)))
            continue
        labels, reason = parse_utkface_name(name)
        if reason is not None:
            collected.exclusions.append(("", rel, reason))
            continue
        collected.rows.append({"source": rel, **labels})
    return collected


# --------------------------------------------------------------------------- LFW

def _read_lfw_gender_lists(labels: Path, images: dict[str, str], notes: list[str]
                           ) -> dict[str, dict[str, list[str]]]:
    """``image file name -> {gender: ["female_names.txt:LINE", ...]}`` from the two lists."""
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for file_name, gender in LFW_GENDER_LISTS:
        path = labels / file_name
        if not path.is_file():
            notes.append(f"labels/{file_name} not found: no image is labelled {gender} from it")
            continue
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{str(path)!r} cannot be read ({exc}); it must be a text file with "
                               "one image file name per line.") from exc
        for number, line in enumerate(lines, start=1):
            entry = line.strip()
            where = f"labels/{file_name}:{number}"
            if not entry:
                notes.append(f"{where}: blank line, ignored")
                continue
            if not entry.lower().endswith(".jpg"):
                notes.append(f"{where}: {entry!r} lacks '.jpg'; read as {entry + '.jpg'!r}")
                entry += ".jpg"
            if entry not in images:
                notes.append(f"{where}: {entry!r} is not an image of the dataset; ignored")
                continue
            found[entry][gender].append(where)
    return found


def _lfw_genders(rows: list[dict[str, str]], listed: dict[str, dict[str, list[str]]],
                 notes: list[str]) -> None:
    """Set each row's ``gender``: its list's label, else the person's other images' label.

    An image in both lists, or in neither, takes the gender of the same
    person's other images when all of those with a label agree; otherwise
    its gender is left blank (missing).  A note says which rule was used.
    """
    own: dict[str, str | None] = {}
    for row in rows:
        genders = listed.get(row["source"].rsplit("/", 1)[-1], {})
        own[row["source"]] = next(iter(genders)) if len(genders) == 1 else None
    by_person: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if own[row["source"]] is not None:
            by_person[row[IDENTITY_COLUMN]].add(own[row["source"]])
    for person, genders in sorted(by_person.items()):
        if len(genders) > 1:
            notes.append(f"{person}: the gender lists give this person's images different genders "
                         f"({', '.join(sorted(genders))}); each image keeps its own label")
    for row in rows:
        gender = own[row["source"]]
        if gender is None:
            name = row["source"].rsplit("/", 1)[-1]
            genders = listed.get(name, {})
            if genders:
                places = " and ".join(f"{', '.join(w)}" for _, w in sorted(genders.items()))
                why = f"in both gender lists ({places})"
            else:
                why = "in neither gender list"
            others = by_person.get(row[IDENTITY_COLUMN], set())
            if len(others) == 1:
                gender = next(iter(others))
                notes.append(f"{name}: {why}; gender {gender} taken from the person's other images")
            else:
                gender = ""
                notes.append(f"{name}: {why}; gender left blank (the person's other "
                             "images give no single gender)")
        row["gender"] = gender


def _lfw_races(path: Path, people: set[str], notes: list[str]) -> dict[str, tuple[str, str]]:
    """``person -> (race, race_labels)`` from lfw_race_dict.json."""
    raw = read_json(path, error=DatasetError, fix="it must be a JSON object mapping person names to race "
                                                  "labels, e.g. {\"Woody_Allen\": \"caucasian\"}.")
    if not isinstance(raw, dict):
        raise DatasetError(f"{str(path)!r} must be a JSON object mapping person names to race "
                           "labels, e.g. {\"Woody_Allen\": \"caucasian\"}.")
    races: dict[str, tuple[str, str]] = {}
    unknown_people = []
    for person, value in raw.items():
        if person not in people:
            unknown_people.append(person)
            continue
        labels = sorted({part.strip().lower() for part in str(value).split(",") if part.strip()})
        if not labels:
            notes.append(f"labels/{LFW_RACE_FILE}: {person} has an empty race label; left blank")
            continue
        for label in labels:
            if label not in LFW_RACES:
                notes.append(f"labels/{LFW_RACE_FILE}: {person} has the unknown race label "
                             f"{label!r}; kept as {label.title()!r}")
        if len(labels) == 1:
            race = LFW_RACES.get(labels[0], labels[0].title())
        else:
            race = LFW_MULTIPLE_RACES
        races[person] = (race, ",".join(labels))
    if unknown_people:
        notes.append(f"labels/{LFW_RACE_FILE}: {len(unknown_people)} name(s) have no folder of "
                     f"images and were ignored, e.g. {unknown_people[0]!r}")
    return races


def collect_lfw(src: Path, *, images: str = LFW_IMAGES) -> Collected:
    image_root = src / images
    if not image_root.is_dir():
        raise DatasetError(f"No {images}/ folder in {str(src)!r}. The LFW importer reads the "
                           f"deep-funneled layout SRC/{images}/<Name>/<Name>_NNNN.jpg; pass the "
                           "folder that holds it, or name another image folder with --images.")
    collected = Collected(image_root=image_root, columns=[IDENTITY_COLUMN])
    for rel in _walk(image_root):
        parts = rel.split("/")
        where = f"{images}/{rel}"
        if len(parts) != 2:
            reason = ("not in a person's folder: LFW images lie in <Name>/<Name>_NNNN.jpg"
                      if len(parts) == 1 else "nested too deep: LFW images lie in <Name>/<Name>_NNNN.jpg")
            collected.exclusions.append(("", where, reason))
            continue
        person, name = parts
        if not re.fullmatch(re.escape(person) + r"_\d{4}\.jpg", name):
            collected.exclusions.append(("", where, f"file name does not match its folder: expected "
                                                    f"{person}_NNNN.jpg"))
            continue
        collected.rows.append({"source": rel, IDENTITY_COLUMN: person})

    labels = src / LFW_LABELS
    by_name = {row["source"].rsplit("/", 1)[-1]: row["source"] for row in collected.rows}
    if any((labels / f).is_file() for f, _ in LFW_GENDER_LISTS):
        listed = _read_lfw_gender_lists(labels, by_name, collected.notes)
        _lfw_genders(collected.rows, listed, collected.notes)
        collected.columns.append("gender")
    else:
        collected.notes.append(f"no gender lists in {LFW_LABELS}/: the manifest has no gender column")
    race_file = labels / LFW_RACE_FILE
    if race_file.is_file():
        people = {row[IDENTITY_COLUMN] for row in collected.rows}
        races = _lfw_races(race_file, people, collected.notes)
        for row in collected.rows:
            row["race"], row["race_labels"] = races.get(row[IDENTITY_COLUMN], ("", ""))
        collected.columns += ["race", "race_labels"]
        n_people = len({p for p in races})
        collected.notes.append(f"race is known for {n_people} of {len(people)} people "
                               f"(labels/{LFW_RACE_FILE}); the others' race is blank")
    else:
        collected.notes.append(f"no {LFW_LABELS}/{LFW_RACE_FILE}: the manifest has no race column")
    return collected


# --------------------------------------------------------------------------- FairFace

def _fairface_age_band(age: str) -> str:
    text = age.strip().lower()
    if text.startswith("more than"):
        return OLDEST_BAND
    return age.strip()


def _read_csv_rows(path: Path, *, what: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    header_record, records = read_csv_records(path, what=what)
    header = [h.strip() for h in header_record.fields] if header_record is not None else []
    if not header:
        raise DatasetError(f"The {what} {str(path)!r} is empty; its first line must name the columns.")
    parsed = []
    for record in records:
        if record.problem is not None:
            parsed.append((record.line, {"__malformed__": f"malformed row: {record.problem}"}))
        elif len(record.fields) != len(header):
            parsed.append((record.line, {"__malformed__": f"malformed row: {len(record.fields)} fields where "
                                                          f"the header has {len(header)}"}))
        else:
            parsed.append((record.line, {h: v.strip() for h, v in zip(header, record.fields)}))
    return header, parsed


def collect_fairface(src: Path, *, labels: Sequence[Path] = ()) -> Collected:
    label_files = [Path(p) for p in labels] or sorted(src.glob(FAIRFACE_LABEL_GLOB))
    if not label_files:
        raise DatasetError(f"No FairFace label CSV in {str(src)!r} (looked for "
                           f"{FAIRFACE_LABEL_GLOB}); pass it with --labels FILE.")
    collected = Collected(image_root=src, columns=["age", "age_band", "gender", "race"])
    extra_columns: list[str] = []
    seen: dict[str, str] = {}
    for label_file in label_files:
        header, rows = _read_csv_rows(label_file, what="FairFace label file")
        missing = [c for c in FAIRFACE_REQUIRED if c not in header]
        if missing:
            raise DatasetError(f"The FairFace label file {str(label_file)!r} lacks the column(s) "
                               f"{', '.join(missing)}; it has {', '.join(header)}. FairFace's CSVs "
                               f"have {', '.join(FAIRFACE_REQUIRED)}.")
        for name in header:
            if name not in FAIRFACE_REQUIRED and name not in extra_columns:
                if name in NON_ATTRIBUTE_COLUMNS or name in RESERVED_COLUMNS or name == "age_band":
                    raise DatasetError(f"The FairFace label file {str(label_file)!r} has a column "
                                       f"named {name!r}, which the manifest uses itself; rename it.")
                extra_columns.append(name)
        for line, values in rows:
            where = f"{label_file.name}:{line}"
            if "__malformed__" in values:
                collected.exclusions.append((where, "", values["__malformed__"]))
                continue
            file = values["file"].replace("\\", "/")
            normal = os.path.normpath(file) if file else ""
            if not file:
                collected.exclusions.append((where, "", "empty file column"))
            elif os.path.isabs(file) or normal == ".." or normal.startswith("../"):
                collected.exclusions.append((where, file, "path leaves the source folder: FairFace "
                                                          "paths are relative, e.g. train/1.jpg"))
            elif normal in seen:
                collected.exclusions.append((where, file, f"repeated row: the same file as {seen[normal]}"))
            elif not (src / normal).is_file():
                collected.exclusions.append((where, file, "missing file: no such image under the "
                                                          "source folder"))
            else:
                seen[normal] = where
                row = {"source": Path(normal).as_posix(), "age": values["age"],
                       "age_band": _fairface_age_band(values["age"]), "gender": values["gender"],
                       "race": values["race"]}
                row.update({c: values.get(c, "") for c in extra_columns})
                collected.rows.append(row)
    collected.columns += extra_columns
    blank = Counter(c for row in collected.rows for c in ("age", "gender", "race") if not row[c])
    for column, n in sorted(blank.items()):
        collected.notes.append(f"{n} image(s) have a blank {column}")
    return collected


# --------------------------------------------------------------------------- folders

def collect_folders(src: Path, *, attributes: Path | None = None, key: str = IDENTITY_COLUMN) -> Collected:
    collected = Collected(image_root=src, columns=[IDENTITY_COLUMN])
    by_identity: dict[str, list[str]] = defaultdict(list)
    for rel in _walk(src):
        if attributes is not None and (src / rel).resolve() == Path(attributes).resolve():
            continue
        parts = rel.split("/")
        if len(parts) == 1:
            collected.exclusions.append(("", rel, "not inside an identity folder: put each person's "
                                                  "images in a folder named after them"))
            continue
        if not _is_image_name(parts[-1]):
            collected.exclusions.append(("", rel, _not_an_image_reason(parts[-1])))
            continue
        by_identity[parts[0]].append(rel)
    columns: list[str] = []
    table: dict[str, dict[str, str]] = {}
    if attributes is not None:
        header, rows = _read_csv_rows(Path(attributes), what="attributes file")
        if key not in header:
            raise DatasetError(f"The attributes file {str(attributes)!r} has no {key!r} column (it has "
                               f"{', '.join(header)}); name the column of identities with --key.")
        for name in header:
            if name == key:
                continue
            if name in NON_ATTRIBUTE_COLUMNS or name in RESERVED_COLUMNS:
                raise DatasetError(f"The attributes file {str(attributes)!r} has a column named "
                                   f"{name!r}, which the manifest uses itself; rename it.")
            columns.append(name)
        first_line: dict[str, int] = {}
        name = Path(attributes).name
        for line, values in rows:
            where = f"{name}:{line}"
            if "__malformed__" in values:
                collected.exclusions.append((where, "", values["__malformed__"]))
            elif not values[key]:
                collected.exclusions.append((where, "", f"empty {key}: the row names no identity"))
            elif values[key] in first_line:
                collected.exclusions.append((where, values[key], f"repeated identity: already on line "
                                                                 f"{first_line[values[key]]}"))
            elif values[key] not in by_identity:
                first_line[values[key]] = line
                collected.exclusions.append((where, values[key], "no images: the source has no folder "
                                                                 "of images for this identity"))
            else:
                first_line[values[key]] = line
                table[values[key]] = {c: values[c] for c in columns}
        unlabelled = sorted(set(by_identity) - set(table))
        if unlabelled:
            collected.notes.append(f"{len(unlabelled)} identity folder(s) have no row in "
                                   f"{name}: their attributes are blank, e.g. {unlabelled[0]!r}")
    collected.columns += columns
    for identity in sorted(by_identity):
        labels = table.get(identity, {c: "" for c in columns})
        for rel in by_identity[identity]:
            collected.rows.append({"source": rel, IDENTITY_COLUMN: identity, **labels})
    return collected


# --------------------------------------------------------------------------- writing

def _collect(kind: str, src: Path, options: dict[str, Any]) -> Collected:
    collectors: dict[str, Callable[..., Collected]] = {
        "utkface": collect_utkface, "lfw": collect_lfw, "fairface": collect_fairface,
        "folders": collect_folders}
    if kind not in collectors:
        raise DatasetError(f"Unknown dataset kind {kind!r}; choose one of: {', '.join(KINDS)}.")
    return collectors[kind](src, **{k: v for k, v in options.items() if v is not None})


def _no_wider_than(copy: Path, original: Path) -> None:
    """A copied face is never readable by more people than its original (an owner-only photo stays so)."""
    try:
        allowed = stat.S_IMODE(os.stat(original).st_mode)
    except OSError:   # gone since it was read: the copy keeps the umask's mode
        return
    current = stat.S_IMODE(os.stat(copy).st_mode)
    if current & ~allowed:
        os.chmod(copy, current & allowed)


def _read_images(collected, image_root: Path, images_dir: Path, *, prefix: str, copy: bool,
                 show_progress: bool) -> list[dict[str, str]]:
    """Hash (and with ``copy``, copy) every collected image; a file that cannot be read is excluded
    with its reason.  Returns one manifest row per image read."""
    rows_out: list[dict[str, str]] = []
    sources = [str(image_root / row["source"]) for row in collected.rows]
    made_dirs: set[Path] = set()
    for row, digest in zip(collected.rows, digest_files(
            sources, keep_data=copy, progress_label="Reading images" if show_progress else None)):
        if digest.reason is not None:
            collected.exclusions.append(("", prefix + row["source"], digest.reason))
            continue
        if copy:
            target = images_dir / row["source"]
            if target.parent not in made_dirs:
                target.parent.mkdir(parents=True, exist_ok=True)
                made_dirs.add(target.parent)
            target.write_bytes(digest.data)
            _no_wider_than(target, image_root / row["source"])
        out = {PATH_COLUMN: f"{IMAGES_FOLDER}/{row['source']}", SHA256_COLUMN: digest.sha256}
        out.update({c: row.get(c, "") for c in collected.columns})
        rows_out.append(out)
    return rows_out


def _link_references(build: Path, dest: Path, image_root: Path, rows_out: list[dict[str, str]]) -> list[str]:
    """The folders a linked dataset reads from: the image root, and the real folder of any source
    file that is itself a link elsewhere (the file alone where that folder holds ``dest``: loading
    refuses a reference that would open everything beside the dataset)."""
    references = [str(image_root)]
    real_dest = os.path.realpath(dest)
    resolve = Resolver()
    for out in rows_out:
        real = resolve(os.path.join(build, out[PATH_COLUMN]))
        if not is_inside(real, references):
            folder = os.path.dirname(real)
            references.append(real if is_inside(real_dest, [folder]) else folder)
    return references


def import_dataset(kind: str, src: str | os.PathLike, dest: str | os.PathLike, *, copy: bool = False,
                   overwrite: bool = False, show_progress: bool = False, **options: Any) -> ImportSummary:
    """Import the dataset at ``src`` (of ``kind``) into the dataset folder ``dest``.

    ``options`` are the importer's own: ``images`` (lfw), ``labels``
    (fairface: label CSVs), ``attributes`` and ``key`` (folders).
    """
    started = time.monotonic()
    if kind not in KINDS:
        raise DatasetError(f"Unknown dataset kind {kind!r}; choose one of: {', '.join(KINDS)}.")
    src = Path(src).expanduser()
    if not src.is_dir():
        raise DatasetError(f"No source folder at {str(src)!r}; pass the folder the dataset was "
                           "unpacked into.")
    src = src.resolve()
    dest = check_destination(dest, sources=[src], overwrite=overwrite)   # before reading anything
    collected = _collect(kind, src, options)
    if not collected.rows:
        raise DatasetError(f"No usable image found in {str(src)!r} for the {kind!r} importer "
                           f"({len(collected.exclusions)} file(s) excluded). Check the kind and the "
                           "folder: see datasets/README.md for each layout.")
    image_root = collected.image_root.resolve()
    prefix = _relative_to_source(src, image_root)
    prefix = "" if prefix == "." else prefix + "/"

    # Built beside DEST and swapped in at the end: a failure or a kill never
    # touches the dataset that was there (see audit.data.destination).
    with staged_destination(dest, sources=[src], overwrite=overwrite) as build, \
            writing(dest, what="the dataset folder", elsewhere=DEST_ELSEWHERE, prefer_path=True):
        images_dir = build / IMAGES_FOLDER
        rows_out = _read_images(collected, image_root, images_dir, prefix=prefix, copy=copy,
                                show_progress=show_progress)
        if not rows_out:
            raise DatasetError(f"None of the {len(collected.rows)} image(s) in {str(src)!r} could be read; "
                               "see the reasons in the exclusions.")
        references: list[str] = []
        if not copy:
            os.symlink(image_root, images_dir, target_is_directory=True)
            references = _link_references(build, dest, image_root, rows_out)

        table = pd.DataFrame(rows_out, columns=[PATH_COLUMN, SHA256_COLUMN, *collected.columns])
        exclusions = exclusions_frame(collected.exclusions)
        shas = Counter(out[SHA256_COLUMN] for out in rows_out)
        n_duplicates = sum(n - 1 for n in shas.values() if n > 1)
        info = {
            "created_by": f"audit dataset import {kind}",
            "kind": kind,
            "source": str(src),
            "images": {"mode": "copy" if copy else "link", "folder": IMAGES_FOLDER,
                       "target": None if copy else str(image_root)},
            "references": references,
            "options": {k: (str(v) if isinstance(v, Path) else
                            [str(x) for x in v] if isinstance(v, (list, tuple)) else v)
                        for k, v in options.items() if v not in (None, (), [])},
            "notes": collected.notes,
        }
        write_dataset_folder(build, manifest=table, exclusions=exclusions, info=info)
    write_dataset_hash_cache(dest, [r[PATH_COLUMN] for r in rows_out], [r[SHA256_COLUMN] for r in rows_out])
    has_identities = IDENTITY_COLUMN in collected.columns
    return ImportSummary(
        kind=kind, source=src, dest=dest, mode="copy" if copy else "link", n_images=len(rows_out),
        n_identities=len({r[IDENTITY_COLUMN] for r in rows_out}) if has_identities else None,
        exclusions=exclusions, notes=tuple(collected.notes), n_duplicates=n_duplicates,
        seconds=time.monotonic() - started)


__all__ = ["AGE_BANDS", "KINDS", "ImportSummary", "age_band", "collect_fairface", "collect_folders",
           "collect_lfw", "collect_utkface", "import_dataset", "parse_utkface_name"]
