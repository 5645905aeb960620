"""The manifest format: loading, every validation rule, writing, the hash cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from audit.data import csv_records as csv_records_module
from audit.data import manifest as manifest_module
from audit.data.manifest import (EXCLUSION_COLUMNS, HASH_CACHE_FILE, INFO_FILE, Dataset, load_dataset,
                                 write_manifest)
from audit.errors import DatasetError


def write_image(path: Path, index: int = 0) -> Path:
    """A tiny JPEG whose bytes are unique to ``index`` (the comment makes sure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256)
    Image.new("RGB", (8, 8), colour).save(path, format="JPEG", comment=f"image {index}".encode())
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def make_dataset(root: Path, rows: list[tuple[str, str, str, str]] | None = None) -> Path:
    """A dataset folder: images/a.jpg ... with identity, race, gender."""
    rows = rows or [("images/a.jpg", "p1", "Black", "Female"),
                    ("images/b.jpg", "p1", "Black", "Female"),
                    ("images/c.jpg", "p2", "White", "Male")]
    for i, (path, *_rest) in enumerate(rows):
        write_image(root / path, i)
    lines = ["path,identity,race,gender"] + [",".join(r) for r in rows]
    write_csv(root / "manifest.csv", "\n".join(lines) + "\n")
    return root


def reasons(dataset: Dataset) -> dict[object, str]:
    return dict(zip(dataset.exclusions["row"], dataset.exclusions["reason"]))


# --------------------------------------------------------------------------- loading

def test_load_gives_one_row_per_image_with_ids_identities_hashes_and_attributes(tmp_path):
    root = make_dataset(tmp_path / "ds")
    dataset = load_dataset(root)
    assert list(dataset.table.columns) == ["image_id", "path", "identity", "sha256", "race", "gender"]
    assert dataset.table["image_id"].tolist() == ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    assert dataset.table["identity"].tolist() == ["p1", "p1", "p2"]
    assert dataset.table["sha256"].iloc[0] == hashlib.sha256((root / "images/a.jpg").read_bytes()).hexdigest()
    assert dataset.attributes == ("race", "gender")
    assert dataset.has_identities is True
    assert dataset.root == root.resolve()
    assert list(dataset.exclusions.columns) == list(EXCLUSION_COLUMNS)
    assert dataset.exclusions.empty
    assert dataset.absolute_path("images/c.jpg") == root.resolve() / "images/c.jpg"


def test_without_identity_column_each_image_is_its_own_person(tmp_path):
    root = tmp_path / "ds"
    write_image(root / "x.jpg", 1)
    write_image(root / "y.jpg", 2)
    write_csv(root / "manifest.csv", "path,race\nx.jpg,Asian\ny.jpg,Asian\n")
    dataset = load_dataset(root)
    assert dataset.has_identities is False
    assert dataset.table["identity"].tolist() == ["x.jpg", "y.jpg"]


def test_values_are_trimmed_strings_and_blank_lines_and_bom_are_accepted(tmp_path):
    root = tmp_path / "ds"
    write_image(root / "x.jpg", 1)
    (root / "manifest.csv").write_bytes("\ufeffpath, age \n\n x.jpg , 007 \n\n".encode("utf-8"))
    dataset = load_dataset(root)
    assert dataset.attributes == ("age",)
    assert dataset.table["age"].tolist() == ["007"]  # text, not a number
    assert dataset.table["image_id"].tolist() == ["x.jpg"]


def test_dot_segments_are_normalised_in_path_but_image_id_keeps_the_manifest_text(tmp_path):
    root = tmp_path / "ds"
    write_image(root / "images/x.jpg", 1)
    write_csv(root / "manifest.csv", "path\n./images/../images/x.jpg\n")
    dataset = load_dataset(root)
    assert dataset.table["image_id"].tolist() == ["./images/../images/x.jpg"]
    assert dataset.table["path"].tolist() == ["images/x.jpg"]


# --------------------------------------------------------------------------- dataset-level errors

def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="No dataset folder at .*nowhere.*audit dataset import"):
        load_dataset(tmp_path / "nowhere")


def test_folder_without_manifest_is_an_error(tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(DatasetError, match=r"No manifest.csv in .*datasets/README.md"):
        load_dataset(tmp_path / "ds")


def test_a_file_instead_of_a_folder_is_an_error(tmp_path):
    path = write_csv(tmp_path / "manifest.csv", "path\n")
    with pytest.raises(DatasetError, match="is a file, not a dataset folder"):
        load_dataset(path)


@pytest.mark.parametrize("text, message", [
    ("", "is empty. Its first line must name the columns"),
    ("path,race\n", "has a header but no rows"),
    ("file,race\nx.jpg,White\n", "has no 'path' column \\(its header is file, race\\)"),
    ("path,,race\nx.jpg,,White\n", "column 2 of the header has no name"),
    ("path,race,race\nx.jpg,White,White\n", "the column 'race' appears twice"),
    ("path,image_id\nx.jpg,1\n", "the column name 'image_id' is reserved"),
])
def test_malformed_manifests_are_errors_that_say_what_to_fix(tmp_path, text, message):
    root = tmp_path / "ds"
    write_image(root / "x.jpg")
    write_csv(root / "manifest.csv", text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_manifest_that_is_not_utf8_is_an_error(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "manifest.csv").write_bytes("path,race\nJosé.jpg,White\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="is not UTF-8 text .*save it as UTF-8 CSV"):
        load_dataset(root)


def test_unreadable_manifest_is_an_error(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds")
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if str(path).endswith("manifest.csv"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(csv_records_module, "open", refusing_open, raising=False)
    with pytest.raises(DatasetError, match="cannot be read: permission denied"):
        load_dataset(root)


def test_unknown_group_by_attribute_names_it_and_lists_the_columns(tmp_path):
    root = make_dataset(tmp_path / "ds")
    with pytest.raises(DatasetError) as caught:
        load_dataset(root, group_by=["race", "ethnicity"])
    assert str(caught.value) == (
        f"Unknown attribute 'ethnicity': the manifest '{root.resolve() / 'manifest.csv'}' has no such "
        "column. Its attribute columns are: race, gender.")


def test_group_by_on_identity_or_path_is_refused(tmp_path):
    root = make_dataset(tmp_path / "ds")
    with pytest.raises(DatasetError, match="'identity' cannot be a grouping attribute"):
        load_dataset(root, group_by=["identity"])


def test_group_by_attribute_blank_in_every_row_is_an_error(tmp_path):
    root = tmp_path / "ds"
    write_image(root / "x.jpg")
    write_csv(root / "manifest.csv", "path,race,skin\nx.jpg,White,\n")
    with pytest.raises(DatasetError, match="The attribute 'skin' is blank in every row .* group by "
                                           "another of: race"):
        load_dataset(root, group_by=["skin"])


def test_no_usable_row_is_an_error_that_counts_the_reasons(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    write_csv(root / "manifest.csv", "path\ngone1.jpg\ngone2.jpg\n")
    with pytest.raises(DatasetError, match=r"No usable image in .*all 2 manifest rows were excluded "
                                           r"\(missing file: 2\)\. Example: row 2: missing file"):
        load_dataset(root)


def test_dataset_json_that_is_not_json_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "ds")
    write_csv(root / INFO_FILE, "{not json")
    with pytest.raises(DatasetError, match="dataset.json' is not valid JSON"):
        load_dataset(root)


# --------------------------------------------------------------------------- row exclusions

def test_malformed_row_is_excluded_with_its_line_number(tmp_path):
    root = make_dataset(tmp_path / "ds")
    with open(root / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write("images/d.jpg,p3,Asian,Female,extra\nimages/e.jpg,p4\n")
    dataset = load_dataset(root)
    assert reasons(dataset) == {
        5: "malformed row: 5 fields where the header has 4; quote values that contain commas",
        6: "malformed row: 2 fields where the header has 4; quote values that contain commas"}
    assert len(dataset.table) == 3


def test_empty_path_is_excluded(tmp_path):
    root = make_dataset(tmp_path / "ds")
    with open(root / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write(",p3,Asian,Female\n")
    assert reasons(load_dataset(root))[5].startswith("empty path: every row needs")


def test_paths_that_leave_the_folder_are_excluded(tmp_path):
    outside = write_image(tmp_path / "outside.jpg", 9)
    root = make_dataset(tmp_path / "ds")
    with open(root / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write(f"../outside.jpg,p3,Asian,Female\n{outside},p4,Asian,Male\n"
                 f"images/../../outside.jpg,p5,Asian,Male\n")
    found = reasons(load_dataset(root))
    assert found[5] == ("path leaves the dataset folder: '../outside.jpg' goes above it with '..'; "
                        "put the image inside the folder and write its relative path")
    assert found[6] == (f"path leaves the dataset folder: {str(outside)!r} is an absolute path outside "
                        "it; put the image inside the folder and write its relative path")
    assert found[7].startswith("path leaves the dataset folder: 'images/../../outside.jpg' goes above")


def test_absolute_path_inside_the_folder_is_accepted(tmp_path):
    root = make_dataset(tmp_path / "ds")
    inside = (root / "images/a.jpg").resolve()
    write_csv(root / "manifest.csv", f"path\n{inside}\n")
    dataset = load_dataset(root)
    assert dataset.table["path"].tolist() == ["images/a.jpg"]
    assert dataset.table["image_id"].tolist() == [str(inside)]


def test_symlink_out_of_the_folder_is_excluded_unless_it_is_a_recorded_reference(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_image(elsewhere / "x.jpg", 5)
    root = tmp_path / "ds"
    root.mkdir()
    os.symlink(elsewhere, root / "images")
    os.symlink(elsewhere / "x.jpg", root / "direct.jpg")
    write_csv(root / "manifest.csv", "path\nimages/x.jpg\ndirect.jpg\n")
    with pytest.raises(DatasetError, match="path leaves the dataset folder: it is a symlink to"):
        load_dataset(root)
    write_csv(root / INFO_FILE, json.dumps({"references": [str(elsewhere)]}))
    dataset = load_dataset(root)
    assert dataset.table["path"].tolist() == ["images/x.jpg"]
    assert reasons(dataset) == {3: "duplicate of images/x.jpg"}


def test_symlink_inside_the_folder_is_fine(tmp_path):
    root = make_dataset(tmp_path / "ds")
    os.symlink(root / "images/a.jpg", root / "alias.jpg")
    write_csv(root / "manifest.csv", "path\nalias.jpg\n")
    assert load_dataset(root).table["path"].tolist() == ["alias.jpg"]


def test_repeated_path_is_excluded_naming_the_first_row(tmp_path):
    root = make_dataset(tmp_path / "ds")
    with open(root / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write("images/./a.jpg,p1,Black,Female\n")
    assert reasons(load_dataset(root)) == {5: "repeated row: the same path as row 2; remove one of the two rows"}


def test_blank_identity_is_excluded(tmp_path):
    root = make_dataset(tmp_path / "ds", [("images/a.jpg", "p1", "Black", "Female"),
                                          ("images/b.jpg", "", "Black", "Male")])
    assert reasons(load_dataset(root)) == {3: manifest_module.REASON_MISSING_IDENTITY}


def test_blank_group_value_is_excluded_only_when_grouping_by_it(tmp_path):
    root = make_dataset(tmp_path / "ds", [("images/a.jpg", "p1", "Black", "Female"),
                                          ("images/b.jpg", "p2", "", "Male")])
    assert len(load_dataset(root).table) == 2
    dataset = load_dataset(root, group_by=["race", "gender"])
    assert reasons(dataset) == {3: "missing value: 'race' is blank; fill it in, or group by other attributes"}
    assert dataset.table["image_id"].tolist() == ["images/a.jpg"]


def test_missing_empty_folder_and_non_image_files_are_excluded(tmp_path):
    root = make_dataset(tmp_path / "ds")
    (root / "images/folder.jpg").mkdir()
    (root / "images/empty.jpg").write_bytes(b"")
    (root / "images/text.jpg").write_text("not an image")
    with open(root / "manifest.csv", "a", encoding="utf-8") as fh:
        for i, name in enumerate(["gone.jpg", "folder.jpg", "empty.jpg", "text.jpg"]):
            fh.write(f"images/{name},q{i},Asian,Male\n")
    found = reasons(load_dataset(root))
    assert found == {5: "missing file: nothing at this path; fix the path or remove the row",
                     6: ("not a file: the path is a folder, a named pipe or a device (it was not opened); "
                         "point the row at an image file"),
                     7: "unreadable file: the file is empty (0 bytes)",
                     8: "not an image: it is not one of the image formats the tool reads "
                        "(JPEG, PNG, GIF, BMP, WebP or TIFF)"}


def test_unreadable_file_is_excluded(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds")
    real_read = manifest_module.read_regular_file

    def refusing_read(path, *args, **kwargs):
        if str(path).endswith("b.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(manifest_module, "read_regular_file", refusing_read)
    assert reasons(load_dataset(root)) == {3: "unreadable file: Permission denied"}


def test_images_in_other_formats_are_accepted(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(root / "a.png")
    Image.new("RGB", (4, 4), (4, 5, 6)).save(root / "b.webp")
    Image.new("RGB", (4, 4), (7, 8, 9)).save(root / "c.tif")
    Image.new("RGB", (4, 4), (7, 8, 9)).save(root / "d.ppm")  # Pillow reads it; the tool does not
    write_csv(root / "manifest.csv", "path\na.png\nb.webp\nc.tif\nd.ppm\n")
    dataset = load_dataset(root)
    assert dataset.table["path"].tolist() == ["a.png", "b.webp", "c.tif"]
    assert dataset.exclusions["path"].tolist() == ["d.ppm"]


def test_byte_identical_files_keep_the_first_and_exclude_the_others(tmp_path):
    root = make_dataset(tmp_path / "ds")
    (root / "images/copy1.jpg").write_bytes((root / "images/b.jpg").read_bytes())
    (root / "images/copy2.jpg").write_bytes((root / "images/b.jpg").read_bytes())
    with open(root / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write("images/copy1.jpg,p9,White,Male\nimages/copy2.jpg,p9,White,Male\n")
    dataset = load_dataset(root)
    assert reasons(dataset) == {5: "duplicate of images/b.jpg", 6: "duplicate of images/b.jpg"}
    assert dataset.table["image_id"].tolist() == ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    assert dataset.manifest_rows["image_id"].tolist()[-2:] == ["images/copy1.jpg", "images/copy2.jpg"]


def test_file_that_changed_since_the_manifest_was_written_is_excluded(tmp_path):
    root = make_dataset(tmp_path / "ds")
    sha_a = hashlib.sha256((root / "images/a.jpg").read_bytes()).hexdigest()
    write_csv(root / "manifest.csv", f"path,sha256\nimages/a.jpg,{sha_a}\nimages/b.jpg,{'0' * 64}\n")
    dataset = load_dataset(root)
    sha_b = hashlib.sha256((root / "images/b.jpg").read_bytes()).hexdigest()
    assert reasons(dataset) == {3: f"changed since the manifest was written: its sha256 is {sha_b}, "
                                   f"the manifest says {'0' * 64}; re-import the dataset or clear "
                                   "that sha256 cell"}
    assert "sha256" not in dataset.attributes


def test_nothing_is_dropped_silently(tmp_path):
    root = make_dataset(tmp_path / "ds")
    (root / "images/dup.jpg").write_bytes((root / "images/a.jpg").read_bytes())
    with open(root / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write("images/dup.jpg,p1,Black,Female\ngone.jpg,p1,Black,Female\n../x.jpg,p1,Black,Female\n"
                 "a,b\n")
    dataset = load_dataset(root)
    n_rows = len((root / "manifest.csv").read_text().strip().splitlines()) - 1
    assert len(dataset.table) + len(dataset.exclusions) == n_rows


# --------------------------------------------------------------------------- cache, check_files

def test_second_load_reads_no_image_and_a_changed_file_is_read_again(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "ds")
    first = load_dataset(root)
    assert (root / HASH_CACHE_FILE).is_file()
    read = []
    real_digest = manifest_module.digest_file
    monkeypatch.setattr(manifest_module, "digest_file",
                        lambda path, **kw: read.append(path) or real_digest(path, **kw))
    second = load_dataset(root)
    assert read == []
    assert second.table["sha256"].tolist() == first.table["sha256"].tolist()

    write_image(root / "images/c.jpg", 42)
    os.utime(root / "images/c.jpg", ns=(1, 1))
    third = load_dataset(root)
    assert [Path(p).name for p in read] == ["c.jpg"]
    assert third.table["sha256"].iloc[2] == hashlib.sha256((root / "images/c.jpg").read_bytes()).hexdigest()


@pytest.mark.parametrize("how", ["in place", "renamed over"])
def test_a_file_replaced_with_the_same_size_and_modification_time_is_hashed_again(tmp_path, how):
    """``cp -p``, ``touch -r``, an unpacked archive: another face, and the size and mtime of the old one."""
    root = tmp_path / "ds"
    root.mkdir()
    old, new = b"BM" + bytes(range(200)) * 5, b"BM" + bytes(reversed(range(200))) * 5
    (root / "a.bmp").write_bytes(old)
    write_csv(root / "manifest.csv", "path\na.bmp\n")
    assert load_dataset(root).table["sha256"].tolist() == [hashlib.sha256(old).hexdigest()]
    before = os.stat(root / "a.bmp")
    if how == "in place":
        (root / "a.bmp").write_bytes(new)
    else:
        (root / "new.tmp").write_bytes(new)
        os.replace(root / "new.tmp", root / "a.bmp")
    os.utime(root / "a.bmp", ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(root / "a.bmp")
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    # before: the cached hash of the old face, so every cache keyed on it returned the old face's vector
    assert load_dataset(root).table["sha256"].tolist() == [hashlib.sha256(new).hexdigest()]


def test_a_hash_cache_planted_in_a_shared_folder_cannot_give_a_file_another_files_hash(tmp_path):
    """An unpacked archive keeps sizes and mtimes, never change times or inodes: a cache shipped with a
    dataset cannot make one face pass for another (a false duplicate, another face's cached vector)."""
    root = make_dataset(tmp_path / "ds")
    target = root / "images/a.jpg"
    st = os.stat(target)
    other = hashlib.sha256((root / "images/c.jpg").read_bytes()).hexdigest()
    write_csv(root / HASH_CACHE_FILE, "path,size,mtime_ns,ctime_ns,inode,sha256\n"
                                      f"{os.path.realpath(target)},{st.st_size},{st.st_mtime_ns},1,1,{other}\n")
    dataset = load_dataset(root)
    assert dataset.table["path"].tolist() == ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    assert dataset.table["sha256"].iloc[0] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_a_hash_cache_of_the_older_format_is_rebuilt(tmp_path):
    root = make_dataset(tmp_path / "ds")
    real = os.path.realpath(root / "images/a.jpg")
    write_csv(root / HASH_CACHE_FILE, f"path,size,mtime_ns,sha256\n{real},1,1,{'0' * 64}\n")
    assert "0" * 64 not in load_dataset(root).table["sha256"].tolist()
    assert (root / HASH_CACHE_FILE).read_text().startswith("path,size,mtime_ns,ctime_ns,inode,sha256\n")


def test_damaged_cache_is_rebuilt(tmp_path):
    root = make_dataset(tmp_path / "ds")
    write_csv(root / HASH_CACHE_FILE, "garbage\n1,2\n")
    assert len(load_dataset(root).table) == 3


def test_check_files_false_touches_no_file_and_takes_hashes_from_the_manifest(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    write_csv(root / "manifest.csv", f"path,sha256,race\ngone.jpg,{'a' * 64},White\n"
                                     f"gone2.jpg,{'a' * 64},White\nother.jpg,,Black\n")
    dataset = load_dataset(root, check_files=False)
    assert dataset.table["image_id"].tolist() == ["gone.jpg", "other.jpg"]
    assert dataset.table["sha256"].tolist() == ["a" * 64, ""]
    assert reasons(dataset) == {3: "duplicate of gone.jpg"}
    assert not (root / HASH_CACHE_FILE).exists()


def test_import_exclusions_and_notes_are_read_from_the_folder(tmp_path):
    root = make_dataset(tmp_path / "ds")
    write_csv(root / "exclusions.csv", "row,path,reason\n,bad name.jpg,malformed file name: x\n")
    write_csv(root / INFO_FILE, json.dumps({"notes": ["a note"]}))
    dataset = load_dataset(root)
    assert dataset.import_exclusions.to_dict("records") == [
        {"row": "", "path": "bad name.jpg", "reason": "malformed file name: x"}]
    assert dataset.notes == ("a note",)


# --------------------------------------------------------------------------- writing

def test_write_manifest_orders_columns_blanks_missing_values_and_round_trips(tmp_path):
    root = tmp_path / "ds"
    write_image(root / "x.jpg", 1)
    write_image(root / "y.jpg", 2)
    table = pd.DataFrame({"race": ["White", None], "path": ["x.jpg", "y.jpg"],
                          "image_id": ["x.jpg", "y.jpg"], "identity": ["p", "q"],
                          "age": [31, float("nan")]})
    path = write_manifest(root, table)
    assert path == root / "manifest.csv"
    assert path.read_text().splitlines() == ["path,identity,race,age", "x.jpg,p,White,31", "y.jpg,q,,"]
    dataset = load_dataset(root)
    assert dataset.table["race"].tolist() == ["White", ""]
    assert dataset.attributes == ("race", "age")


def test_write_manifest_needs_a_path_column(tmp_path):
    with pytest.raises(DatasetError, match="A manifest needs a 'path' column"):
        write_manifest(tmp_path, pd.DataFrame({"file": ["x.jpg"]}))


def test_absolute_path_refuses_paths_outside_the_folder(tmp_path):
    dataset = load_dataset(make_dataset(tmp_path / "ds"))
    assert dataset.absolute_path("images/b.jpg").is_file()
    with pytest.raises(DatasetError, match="is not a path inside the dataset folder"):
        dataset.absolute_path("../x.jpg")


def _escaping_dataset(tmp_path: Path, info: dict) -> Path:
    """A dataset whose one image is a symlink to a face outside it, and a dataset.json saying ``info``."""
    outside = write_image(tmp_path / "srv" / "faces" / "someone.jpg", 7)
    root = tmp_path / "ds"
    write_image(root / "mine.jpg", 1)
    os.symlink(outside, root / "theirs.jpg")
    write_csv(root / "manifest.csv", "path\nmine.jpg\ntheirs.jpg\n")
    write_csv(root / INFO_FILE, json.dumps(info))
    return root


@pytest.mark.parametrize("references, words", [
    ("/srv/faces", r"'references' is str '/srv/faces', not a list of text; write it as \[\"/srv/faces\"\]"),
    ({"/": 1}, "'references' is dict"),
    ([1], "'references' is list"),
    (["srv/faces"], r"'references'\[0\] 'srv/faces' is not an absolute path"),
    (["/"], r"'references'\[0\] '/' holds the dataset folder itself"),
    ("parent", r"'references'\[0\] '.*' holds the dataset folder itself"),
])
def test_a_reference_of_the_wrong_type_or_above_the_dataset_is_refused_naming_the_field(tmp_path, references,
                                                                                        words):
    if references == "parent":
        references = [str(tmp_path)]
    root = _escaping_dataset(tmp_path, {"references": references})
    with pytest.raises(DatasetError, match=words):
        load_dataset(root)    # before: "/srv/faces" was read as "/", "s", ...: the face outside was used


def test_a_listed_reference_still_admits_its_folder_alone(tmp_path):
    root = _escaping_dataset(tmp_path, {"references": [str(tmp_path / "srv" / "faces")]})
    assert load_dataset(root).table["path"].tolist() == ["mine.jpg", "theirs.jpg"]
    (root / INFO_FILE).write_text(json.dumps({"references": [str(tmp_path / "srv" / "other")]}))
    assert reasons(load_dataset(root))[3].startswith("path leaves the dataset folder")


@pytest.mark.parametrize("info, words", [
    ({"images": "copy"}, "'images' is str 'copy', not an object"),
    ({"images": {"mode": ["copy"]}}, "'images'.'mode' is \\['copy'\\]"),
    ({"notes": "one note"}, "'notes' is str 'one note', not a list of text"),
    ({"source": ["/a"]}, "'source' is list"),
])
def test_other_dataset_json_fields_of_the_wrong_type_are_refused_naming_the_field(tmp_path, info, words):
    root = make_dataset(tmp_path / "ds")
    write_csv(root / INFO_FILE, json.dumps(info))
    with pytest.raises(DatasetError, match=words):
        load_dataset(root)
