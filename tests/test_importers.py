"""The importers, on small datasets each test makes, and on the real ones where present."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from audit.data.importers import age_band, import_dataset, parse_utkface_name
from audit.data.manifest import load_dataset
from audit.errors import DatasetError


def write_image(path: Path, index: int = 0) -> Path:
    """A tiny JPEG whose bytes are unique to ``index``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256)
    Image.new("RGB", (8, 8), colour).save(path, format="JPEG", comment=f"image {index}".encode())
    return path


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` with its hash and modification time."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            found[path.relative_to(folder).as_posix()] = (
                hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return found


def read_manifest(dest: Path) -> pd.DataFrame:
    return pd.read_csv(dest / "manifest.csv", dtype=str, keep_default_na=False)


def read_exclusions(dest: Path) -> list[dict[str, str]]:
    return pd.read_csv(dest / "exclusions.csv", dtype=str, keep_default_na=False).to_dict("records")


# --------------------------------------------------------------------------- UTKFace

UTK_GOOD = ["25_0_0_20170116174525125.jpg.chip.jpg", "31_1_1_20170116174525126.jpg.chip.jpg",
            "2_1_2_20170116174525127.jpg.chip.jpg", "64_0_3_20170116174525128.jpg.chip.jpg",
            "80_1_4_2017011617452512.jpg.chip.jpg"]
UTK_BAD = {
    "39_1_20170116174525125.jpg.chip.jpg":
        "malformed file name: it has 3 '_'-separated fields instead of 4 (a label is missing); "
        "expected AGE_GENDER_RACE_DATETIME.jpg.chip.jpg, e.g. 25_1_3_20170104220144127.jpg.chip.jpg",
    "24_0_1_20170116220224657 .jpg.chip.jpg":
        "malformed file name: it contains a space; expected AGE_GENDER_RACE_DATETIME.jpg.chip.jpg, "
        "e.g. 25_1_3_20170104220144127.jpg.chip.jpg",
    "55_0_0_20170116232725357jpg.chip.jpg":
        "malformed file name: it does not end in '.jpg.chip.jpg' (a '.' is missing?); expected "
        "AGE_GENDER_RACE_DATETIME.jpg.chip.jpg, e.g. 25_1_3_20170104220144127.jpg.chip.jpg",
    "30_2_0_20170116232725357.jpg.chip.jpg":
        "malformed file name: gender '2' is not 0 (male) or 1 (female)",
    "30_0_7_20170116232725357.jpg.chip.jpg": "malformed file name: race '7' is not one of 0-4",
}


@pytest.fixture
def utk_src(tmp_path) -> Path:
    src = tmp_path / "UTKFace"
    for i, name in enumerate(UTK_GOOD + list(UTK_BAD)):
        write_image(src / name, i)
    # A byte-identical copy of the first image, under other labels (as in UTKFace).
    (src / "26_1_0_20170116174525199.jpg.chip.jpg").write_bytes((src / UTK_GOOD[0]).read_bytes())
    (src / "notes.txt").write_text("not an image")
    return src


@pytest.mark.parametrize("name, labels", [
    ("25_0_0_20170116174525125.jpg.chip.jpg", {"age": "25", "age_band": "20-29", "gender": "Male", "race": "White"}),
    ("1_1_1_20170116174525125.jpg.chip.jpg", {"age": "1", "age_band": "0-2", "gender": "Female", "race": "Black"}),
    ("116_1_4_20170116174525125.jpg", {"age": "116", "age_band": "70+", "gender": "Female", "race": "Others"}),
    ("45_0_3_201701161745251253.jpg.chip.jpg", {"age": "45", "age_band": "40-49", "gender": "Male", "race": "Indian"}),
])
def test_utkface_names_give_labels(name, labels):
    assert parse_utkface_name(name) == (labels, None)


@pytest.mark.parametrize("name", list(UTK_BAD))
def test_malformed_utkface_names_say_why(name):
    assert parse_utkface_name(name) == (None, UTK_BAD[name])


@pytest.mark.parametrize("age, band", [(0, "0-2"), (2, "0-2"), (3, "3-9"), (9, "3-9"), (10, "10-19"),
                                       (69, "60-69"), (70, "70+"), (116, "70+")])
def test_age_bands_are_fairfaces(age, band):
    assert age_band(age) == band


def test_utkface_import_writes_manifest_exclusions_and_a_link(utk_src, tmp_path):
    before = snapshot(utk_src)
    dest = tmp_path / "utk"
    summary = import_dataset("utkface", utk_src, dest)
    assert snapshot(utk_src) == before
    assert (dest / "images").is_symlink() and os.readlink(dest / "images") == str(utk_src.resolve())

    manifest = read_manifest(dest)
    assert list(manifest.columns) == ["path", "sha256", "age", "age_band", "gender", "race"]
    assert manifest["path"].tolist() == sorted(f"images/{n}" for n in
                                               UTK_GOOD + ["26_1_0_20170116174525199.jpg.chip.jpg"])
    first = manifest.set_index("path").loc[f"images/{UTK_GOOD[1]}"]
    assert first[["age", "age_band", "gender", "race"]].tolist() == ["31", "30-39", "Female", "Black"]
    assert set(manifest["race"]) == {"White", "Black", "Asian", "Indian", "Others"}

    excluded = {row["path"]: row["reason"] for row in read_exclusions(dest)}
    assert excluded == {**UTK_BAD, "notes.txt": (
        "not an image file: its extension is .txt; the importer reads .jpg, .jpeg, .png, .bmp, .webp, "
        ".tif, .tiff")}
    assert summary.n_images == 6 and summary.n_duplicates == 1 and summary.n_identities is None
    info = json.loads((dest / "dataset.json").read_text())
    assert info["kind"] == "utkface" and info["references"] == [str(utk_src.resolve())]


def test_utkface_duplicates_stay_in_the_manifest_and_loading_keeps_the_first(utk_src, tmp_path):
    import_dataset("utkface", utk_src, tmp_path / "utk")
    dataset = load_dataset(tmp_path / "utk")
    assert dataset.exclusions.to_dict("records") == [{
        "row": 3, "path": "images/26_1_0_20170116174525199.jpg.chip.jpg",
        "reason": f"duplicate of images/{UTK_GOOD[0]}"}]
    assert len(dataset.table) == 5
    assert dataset.has_identities is False
    assert len(dataset.import_exclusions) == len(UTK_BAD) + 1


def test_copy_makes_a_self_contained_folder(utk_src, tmp_path):
    dest = tmp_path / "utk"
    summary = import_dataset("utkface", utk_src, dest, copy=True)
    assert summary.mode == "copy"
    assert (dest / "images").is_dir() and not (dest / "images").is_symlink()
    assert (dest / "images" / UTK_GOOD[0]).read_bytes() == (utk_src / UTK_GOOD[0]).read_bytes()
    assert json.loads((dest / "dataset.json").read_text())["references"] == []
    moved = tmp_path / "moved"
    dest.rename(moved)
    assert len(load_dataset(moved).table) == 5


def test_destination_rules(utk_src, tmp_path):
    with pytest.raises(DatasetError, match="is inside the source .*would modify the source"):
        import_dataset("utkface", utk_src, utk_src / "out")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="is not empty; choose a new folder, or pass --overwrite"):
        import_dataset("utkface", utk_src, busy)
    with pytest.raises(DatasetError, match="holds no dataset.json, so it was not written by"):
        import_dataset("utkface", utk_src, busy, overwrite=True)
    assert (busy / "mine.txt").read_text() == "keep me"

    dest = tmp_path / "utk"
    import_dataset("utkface", utk_src, dest, copy=True)
    import_dataset("utkface", utk_src, dest, overwrite=True)
    assert (dest / "images").is_symlink()
    import_dataset("utkface", utk_src, dest, overwrite=True, copy=True)
    assert not (dest / "images").is_symlink()


@pytest.mark.parametrize("copy", [True, False], ids=["copied", "linked"])
def test_a_source_inside_the_destination_is_refused_before_anything_is_deleted(tmp_path, copy):
    from audit.cli import cli
    from click.testing import CliRunner

    src = tmp_path / "people"
    for i, person in enumerate(["ann", "bob"]):
        write_image(src / person / "1.jpg", i)
    dest = tmp_path / "ds"
    import_dataset("folders", src, dest, copy=copy)
    before = snapshot(dest)
    result = CliRunner().invoke(cli, ["dataset", "import", "folders", str(dest / "images"), str(dest),
                                      "--overwrite", *(["--copy"] if copy else [])])
    if copy:   # before: exit 0, and DEST/images became a symlink to itself, every image gone
        assert result.exit_code == 2, result.output
        assert "lies inside the destination" in result.output and "would delete the images" in result.output
        assert snapshot(dest) == before
        assert load_dataset(dest).table["path"].tolist() == ["images/ann/1.jpg", "images/bob/1.jpg"]
    else:      # DEST/images is a link to the source outside: importing through it again is fine
        assert result.exit_code == 0, result.output
        assert len(load_dataset(dest).table) == 2


def test_a_source_with_no_usable_image_is_an_error(tmp_path):
    src = tmp_path / "src"
    write_image(src / "not_a_utkface_name.jpg")
    with pytest.raises(DatasetError, match="No usable image found in .* for the 'utkface' importer "
                                           r"\(1 file\(s\) excluded\)"):
        import_dataset("utkface", src, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_unreadable_image_is_excluded_at_import(tmp_path):
    src = tmp_path / "src"
    write_image(src / "25_0_0_20170116174525125.jpg.chip.jpg", 1)
    (src / "26_0_0_20170116174525125.jpg.chip.jpg").write_text("truncated download")
    import_dataset("utkface", src, tmp_path / "dest")
    assert read_exclusions(tmp_path / "dest") == [{
        "row": "", "path": "26_0_0_20170116174525125.jpg.chip.jpg",
        "reason": "not an image: it is not one of the image formats the tool reads "
                  "(JPEG, PNG, GIF, BMP, WebP or TIFF)"}]


# --------------------------------------------------------------------------- LFW

@pytest.fixture
def lfw_src(tmp_path) -> Path:
    src = tmp_path / "lfw"
    images = src / "images_deepfunneled"
    people = {"Ann_Lee": 3, "Bob_Stone": 2, "Cy_Twombly": 1, "Dee_Dee": 1, "Eve_Arden": 1}
    index = 0
    for person, n in people.items():
        for k in range(1, n + 1):
            write_image(images / person / f"{person}_{k:04d}.jpg", index)
            index += 1
    write_image(images / "stray.jpg", 99)                      # not in a person's folder
    write_image(images / "Ann_Lee" / "Someone_Else_0001.jpg", 98)  # name does not match folder
    labels = src / "labels"
    labels.mkdir()
    # CRLF endings, a line without .jpg, a blank line, a name of no image, and conflicts:
    # Ann_Lee_0003 in both lists (her other images say Female); Dee_Dee_0001 in both (no other
    # image); Bob_Stone_0002 in neither (his other image says Male); Eve_Arden_0001 in neither.
    (labels / "female_names.txt").write_bytes(
        b"Ann_Lee_0001.jpg\r\nAnn_Lee_0002\r\nAnn_Lee_0003.jpg\r\nDee_Dee_0001.jpg\r\n")
    (labels / "male_names.txt").write_bytes(
        b"Bob_Stone_0001.jpg\r\nCy_Twombly_0001.jpg\r\nAnn_Lee_0003.jpg\r\nDee_Dee_0001.jpg\r\n"
        b"Nobody_0001.jpg\r\n\r\n")
    (labels / "lfw_race_dict.json").write_text(json.dumps({
        "Ann_Lee": "eastasian", "Bob_Stone": "african,caucasian", "Cy_Twombly": "caucasian",
        "Not_In_Lfw": "latino"}))
    (src / "pairs.txt").write_text("10\t300\n")
    return src


def test_lfw_import_takes_identities_from_folders_and_labels_from_the_lists(lfw_src, tmp_path):
    before = snapshot(lfw_src)
    dest = tmp_path / "out"
    summary = import_dataset("lfw", lfw_src, dest)
    assert snapshot(lfw_src) == before
    assert os.readlink(dest / "images") == str((lfw_src / "images_deepfunneled").resolve())
    manifest = read_manifest(dest)
    assert list(manifest.columns) == ["path", "identity", "sha256", "gender", "race", "race_labels"]
    rows = {r["path"].split("/")[-1]: (r["identity"], r["gender"], r["race"], r["race_labels"])
            for r in manifest.to_dict("records")}
    assert rows == {
        "Ann_Lee_0001.jpg": ("Ann_Lee", "Female", "East Asian", "eastasian"),
        "Ann_Lee_0002.jpg": ("Ann_Lee", "Female", "East Asian", "eastasian"),
        "Ann_Lee_0003.jpg": ("Ann_Lee", "Female", "East Asian", "eastasian"),
        "Bob_Stone_0001.jpg": ("Bob_Stone", "Male", "Multiracial", "african,caucasian"),
        "Bob_Stone_0002.jpg": ("Bob_Stone", "Male", "Multiracial", "african,caucasian"),
        "Cy_Twombly_0001.jpg": ("Cy_Twombly", "Male", "White", "caucasian"),
        "Dee_Dee_0001.jpg": ("Dee_Dee", "", "", ""),
        "Eve_Arden_0001.jpg": ("Eve_Arden", "", "", ""),
    }
    assert summary.n_images == 8 and summary.n_identities == 5
    assert {r["path"]: r["reason"] for r in read_exclusions(dest)} == {
        "images_deepfunneled/stray.jpg": "not in a person's folder: LFW images lie in <Name>/<Name>_NNNN.jpg",
        "images_deepfunneled/Ann_Lee/Someone_Else_0001.jpg":
            "file name does not match its folder: expected Ann_Lee_NNNN.jpg",
    }
    assert summary.notes == (
        "labels/female_names.txt:2: 'Ann_Lee_0002' lacks '.jpg'; read as 'Ann_Lee_0002.jpg'",
        "labels/male_names.txt:5: 'Nobody_0001.jpg' is not an image of the dataset; ignored",
        "labels/male_names.txt:6: blank line, ignored",
        "Ann_Lee_0003.jpg: in both gender lists (labels/female_names.txt:3 and "
        "labels/male_names.txt:3); gender Female taken from the person's other images",
        "Bob_Stone_0002.jpg: in neither gender list; gender Male taken from the person's other images",
        "Dee_Dee_0001.jpg: in both gender lists (labels/female_names.txt:4 and labels/male_names.txt:4); "
        "gender left blank (the person's other images give no single gender)",
        "Eve_Arden_0001.jpg: in neither gender list; gender left blank (the person's other images "
        "give no single gender)",
        "labels/lfw_race_dict.json: 1 name(s) have no folder of images and were ignored, e.g. 'Not_In_Lfw'",
        "race is known for 3 of 5 people (labels/lfw_race_dict.json); the others' race is blank",
    )
    dataset = load_dataset(dest, group_by=["gender"])
    assert dataset.has_identities and len(dataset.table) == 6
    assert set(dataset.exclusions["reason"]) == {"missing value: 'gender' is blank; fill it in, or "
                                                 "group by other attributes"}


def test_lfw_person_with_conflicting_labels_is_noted(lfw_src, tmp_path):
    labels = lfw_src / "labels"
    (labels / "female_names.txt").write_text("Ann_Lee_0001.jpg\n")
    (labels / "male_names.txt").write_text("Ann_Lee_0002.jpg\n")
    summary = import_dataset("lfw", lfw_src, tmp_path / "out")
    assert ("Ann_Lee: the gender lists give this person's images different genders (Female, Male); "
            "each image keeps its own label") in summary.notes
    assert ("Ann_Lee_0003.jpg: in neither gender list; gender left blank (the person's other "
            "images give no single gender)") in summary.notes
    genders = read_manifest(tmp_path / "out").set_index("path")["gender"]
    assert genders["images/Ann_Lee/Ann_Lee_0001.jpg"] == "Female"
    assert genders["images/Ann_Lee/Ann_Lee_0002.jpg"] == "Male"


def test_lfw_without_labels_has_no_gender_or_race_columns(lfw_src, tmp_path):
    for f in (lfw_src / "labels").iterdir():
        f.unlink()
    summary = import_dataset("lfw", lfw_src, tmp_path / "out")
    assert list(read_manifest(tmp_path / "out").columns) == ["path", "identity", "sha256"]
    assert summary.notes == ("no gender lists in labels/: the manifest has no gender column",
                             "no labels/lfw_race_dict.json: the manifest has no race column")


def test_lfw_errors(lfw_src, tmp_path):
    with pytest.raises(DatasetError, match="No images_deepfunneled/ folder in .*--images"):
        import_dataset("lfw", lfw_src / "labels", tmp_path / "a")
    (lfw_src / "labels" / "lfw_race_dict.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="must be a JSON object mapping person names"):
        import_dataset("lfw", lfw_src, tmp_path / "b")


def test_lfw_other_image_folder(lfw_src, tmp_path):
    (lfw_src / "images_deepfunneled").rename(lfw_src / "lfw_funneled")
    summary = import_dataset("lfw", lfw_src, tmp_path / "out", images="lfw_funneled")
    assert summary.n_images == 8


# --------------------------------------------------------------------------- FairFace

@pytest.fixture
def fairface_src(tmp_path) -> Path:
    src = tmp_path / "fairface"
    for i in range(1, 4):
        write_image(src / "train" / f"{i}.jpg", i)
    write_image(src / "val" / "1.jpg", 10)
    (src / "fairface_label_train.csv").write_text(
        "file,age,gender,race,service_test\n"
        "train/1.jpg,20-29,Male,East Asian,True\n"
        "train/2.jpg,more than 70,Female,Latino_Hispanic,False\n"
        "train/3.jpg,3-9,Female,Indian\n"               # malformed: a field short
        "train/4.jpg,3-9,Female,Indian,True\n"          # no such file
        "train/1.jpg,20-29,Male,East Asian,True\n"      # repeated
        "../escape.jpg,20-29,Male,White,True\n"         # leaves the source
        ",20-29,Male,White,True\n")
    (src / "fairface_label_val.csv").write_text(
        "file,age,gender,race,service_test\nval/1.jpg,0-2,Male,Black,True\n")
    return src


def test_fairface_import_reads_its_csvs(fairface_src, tmp_path):
    before = snapshot(fairface_src)
    summary = import_dataset("fairface", fairface_src, tmp_path / "ff")
    assert snapshot(fairface_src) == before
    manifest = read_manifest(tmp_path / "ff")
    assert list(manifest.columns) == ["path", "sha256", "age", "age_band", "gender", "race", "service_test"]
    assert manifest[["path", "age", "age_band", "gender", "race"]].values.tolist() == [
        ["images/train/1.jpg", "20-29", "20-29", "Male", "East Asian"],
        ["images/train/2.jpg", "more than 70", "70+", "Female", "Latino_Hispanic"],
        ["images/val/1.jpg", "0-2", "0-2", "Male", "Black"],
    ]
    assert read_exclusions(tmp_path / "ff") == [
        {"row": "fairface_label_train.csv:4", "path": "",
         "reason": "malformed row: 4 fields where the header has 5"},
        {"row": "fairface_label_train.csv:5", "path": "train/4.jpg",
         "reason": "missing file: no such image under the source folder"},
        {"row": "fairface_label_train.csv:6", "path": "train/1.jpg",
         "reason": "repeated row: the same file as fairface_label_train.csv:2"},
        {"row": "fairface_label_train.csv:7", "path": "../escape.jpg",
         "reason": "path leaves the source folder: FairFace paths are relative, e.g. train/1.jpg"},
        {"row": "fairface_label_train.csv:8", "path": "", "reason": "empty file column"},
    ]
    assert summary.n_identities is None


def test_fairface_labels_option_and_errors(fairface_src, tmp_path):
    summary = import_dataset("fairface", fairface_src, tmp_path / "val",
                             labels=[fairface_src / "fairface_label_val.csv"])
    assert summary.n_images == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("file,age,race\ntrain/1.jpg,3-9,White\n")
    with pytest.raises(DatasetError, match=r"lacks the column\(s\) gender; it has file, age, race"):
        import_dataset("fairface", fairface_src, tmp_path / "x", labels=[bad])
    for csv_file in fairface_src.glob("*.csv"):
        csv_file.unlink()
    with pytest.raises(DatasetError, match=r"No FairFace label CSV .*fairface_label_\*.csv.*--labels"):
        import_dataset("fairface", fairface_src, tmp_path / "y")


# --------------------------------------------------------------------------- folders

@pytest.fixture
def folders_src(tmp_path) -> Path:
    src = tmp_path / "people"
    write_image(src / "alice" / "1.jpg", 1)
    write_image(src / "alice" / "holiday" / "2.png", 2)
    write_image(src / "bob" / "1.jpg", 3)
    write_image(src / "carol" / "1.jpg", 4)
    write_image(src / "loose.jpg", 5)
    (src / "bob" / "notes.docx").write_text("x")
    (src / ".DS_Store").write_text("x")
    return src


def test_folders_import_with_attributes_keyed_by_identity(folders_src, tmp_path):
    attributes = tmp_path / "people.csv"
    attributes.write_text("name,gender,skin_type\nalice,Female,IV\nbob,Male,II\n"
                          "dave,Male,I\nbob,Male,III\n,Female,V\n")
    before = snapshot(folders_src)
    summary = import_dataset("folders", folders_src, tmp_path / "ds", attributes=attributes, key="name")
    assert snapshot(folders_src) == before
    manifest = read_manifest(tmp_path / "ds")
    assert list(manifest.columns) == ["path", "identity", "sha256", "gender", "skin_type"]
    assert manifest[["path", "identity", "gender", "skin_type"]].values.tolist() == [
        ["images/alice/1.jpg", "alice", "Female", "IV"],
        ["images/alice/holiday/2.png", "alice", "Female", "IV"],
        ["images/bob/1.jpg", "bob", "Male", "II"],
        ["images/carol/1.jpg", "carol", "", ""],
    ]
    assert read_exclusions(tmp_path / "ds") == [
        {"row": "", "path": "bob/notes.docx", "reason": "not an image file: its extension is .docx; "
                                                         "the importer reads .jpg, .jpeg, .png, .bmp, "
                                                         ".webp, .tif, .tiff"},
        {"row": "", "path": "loose.jpg", "reason": "not inside an identity folder: put each person's "
                                                    "images in a folder named after them"},
        {"row": "people.csv:4", "path": "dave", "reason": "no images: the source has no folder of "
                                                          "images for this identity"},
        {"row": "people.csv:5", "path": "bob", "reason": "repeated identity: already on line 3"},
        {"row": "people.csv:6", "path": "", "reason": "empty name: the row names no identity"},
    ]
    assert summary.notes == ("1 identity folder(s) have no row in people.csv: their attributes are "
                             "blank, e.g. 'carol'",)
    assert summary.n_identities == 3


def test_folders_without_attributes_and_key_errors(folders_src, tmp_path):
    summary = import_dataset("folders", folders_src, tmp_path / "ds")
    assert summary.n_images == 4
    assert list(read_manifest(tmp_path / "ds").columns) == ["path", "identity", "sha256"]
    attributes = tmp_path / "a.csv"
    attributes.write_text("person,gender\nalice,Female\n")
    with pytest.raises(DatasetError, match="has no 'identity' column .*--key"):
        import_dataset("folders", folders_src, tmp_path / "x", attributes=attributes)
    attributes.write_text("identity,path\nalice,x\n")
    with pytest.raises(DatasetError, match="has a column named 'path', which the manifest uses itself"):
        import_dataset("folders", folders_src, tmp_path / "y", attributes=attributes)


def test_attributes_csv_inside_the_source_is_not_an_exclusion(folders_src, tmp_path):
    attributes = folders_src / "people.csv"
    attributes.write_text("identity,gender\nalice,Female\nbob,Male\ncarol,Female\n")
    try:
        import_dataset("folders", folders_src, tmp_path / "ds", attributes=attributes)
    finally:
        attributes.unlink()
    assert [r["path"] for r in read_exclusions(tmp_path / "ds")] == ["bob/notes.docx", "loose.jpg"]


def test_source_made_of_symlinks_elsewhere_loads_through_recorded_references(tmp_path):
    library = tmp_path / "library"
    write_image(library / "2019" / "a.jpg", 1)
    write_image(library / "2020" / "b.jpg", 2)
    src = tmp_path / "people"
    (src / "ann").mkdir(parents=True)
    os.symlink(library / "2019" / "a.jpg", src / "ann" / "a.jpg")
    os.symlink(library / "2020", src / "ben")            # a symlinked identity folder
    os.symlink(src, src / "ann" / "loop")                 # a loop: followed once, not forever
    import_dataset("folders", src, tmp_path / "ds")
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert info["references"] == [str(src.resolve()), str((library / "2019").resolve()),
                                  str((library / "2020").resolve())]
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.table["path"].tolist() == ["images/ann/a.jpg", "images/ben/b.jpg"]
    assert dataset.exclusions.empty


def test_a_source_file_linked_beside_the_destination_is_referenced_alone_not_by_its_folder(tmp_path):
    """Its folder holds the new dataset: as a reference it would admit every file beside the dataset."""
    write_image(tmp_path / "stray.jpg", 3)
    src = tmp_path / "people"
    write_image(src / "ann" / "a.jpg", 1)
    os.symlink(tmp_path / "stray.jpg", src / "ann" / "b.jpg")
    import_dataset("folders", src, tmp_path / "ds")
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert info["references"] == [str(src.resolve()), str((tmp_path / "stray.jpg").resolve())]
    assert load_dataset(tmp_path / "ds").table["path"].tolist() == ["images/ann/a.jpg", "images/ann/b.jpg"]


def test_a_copied_face_is_never_readable_by_more_people_than_its_original(tmp_path):
    src = tmp_path / "people"
    write_image(src / "ann" / "private.jpg", 1).chmod(0o600)
    write_image(src / "ann" / "shared.jpg", 2).chmod(0o644)
    old = os.umask(0o022)
    try:
        import_dataset("folders", src, tmp_path / "ds", copy=True)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ds" / "images" / "ann").iterdir()}
    assert modes == {"private.jpg": 0o600, "shared.jpg": 0o644}


def test_unknown_kind(tmp_path):
    with pytest.raises(DatasetError, match="Unknown dataset kind 'celeba'; choose one of: utkface, lfw, "
                                           "fairface, folders"):
        import_dataset("celeba", tmp_path, tmp_path / "out")


# --------------------------------------------------------------------------- the real datasets

UTKFACE_RACES = {"White": 10_077, "Black": 4_524, "Indian": 3_975, "Asian": 3_434, "Others": 1_692}


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_utkface_counts(utkface_dir, tmp_path):
    summary = import_dataset("utkface", utkface_dir, tmp_path / "utk")
    assert summary.n_images == 23_702
    assert len(summary.exclusions) == 5
    assert set(summary.exclusions["reason"].str.split(":").str[0]) == {"malformed file name"}
    dataset = load_dataset(tmp_path / "utk", group_by=["race", "gender"])
    assert dataset.manifest_rows["race"].value_counts().to_dict() == UTKFACE_RACES
    white = dataset.manifest_rows[dataset.manifest_rows["race"] == "White"]
    assert white["gender"].value_counts().to_dict() == {"Male": 5_476, "Female": 4_601}
    assert len(dataset.exclusions) == summary.n_duplicates == 390
    assert dataset.exclusions["reason"].str.startswith("duplicate of images/").all()
    assert len(dataset.table) == 23_702 - 390
    assert dataset.table["age"].astype(int).between(0, 116).all()


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_lfw_counts(lfw_dir, tmp_path):
    summary = import_dataset("lfw", lfw_dir, tmp_path / "out")
    assert (summary.n_images, summary.n_identities) == (13_233, 5_749)
    assert summary.exclusions.empty
    in_both = [n for n in summary.notes if "in both gender lists" in n]
    assert len(in_both) == 5
    assert any("lacks '.jpg'" in n for n in summary.notes)
    dataset = load_dataset(tmp_path / "out")
    per_identity = dataset.table.groupby("identity").size()
    assert (per_identity >= 2).sum() == 1_680 and per_identity[per_identity >= 2].sum() == 9_164
    people_with_race = dataset.table.loc[dataset.table["race"] != "", "identity"].nunique()
    assert people_with_race == 866
