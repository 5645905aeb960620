"""``audit dataset import|describe|balance``: the commands, describe and balance."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from audit.cli import cli
from audit.commands.dataset import dataset as dataset_group
from audit.data.balance import balance_dataset, pick_identities, select_balanced
from audit.data.describe import describe_dataset, render_description
from audit.data.manifest import load_dataset, write_manifest
from audit.errors import DatasetError


def write_image(path: Path, index: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((index * 37) % 256, (index * 91) % 256, (index * 53) % 256)
    Image.new("RGB", (8, 8), colour).save(path, format="JPEG", comment=f"image {index}".encode())
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, ["dataset", *map(str, args)])


#: identity -> (race, gender, number of images)
PEOPLE = {
    "a1": ("Black", "Female", 1), "a2": ("Black", "Female", 2), "a3": ("Black", "Female", 3),
    "a4": ("Black", "Female", 1),
    "b1": ("Black", "Male", 4), "b2": ("Black", "Male", 1), "b3": ("Black", "Male", 1),
    "b4": ("Black", "Male", 2),
    "c1": ("White", "Female", 2), "c2": ("White", "Female", 2), "c3": ("White", "Female", 1),
    "c4": ("White", "Female", 3),
    "d1": ("White", "Male", 1), "d2": ("White", "Male", 1), "d3": ("White", "Male", 1),
    "d4": ("White", "Male", 1), "d5": ("White", "Male", 5),
}


def make_people_dataset(root: Path, people: dict[str, tuple[str, str, int]] = PEOPLE) -> Path:
    rows, index = [], 0
    for identity, (race, gender, n) in people.items():
        for k in range(n):
            path = f"images/{identity}/{k}.jpg"
            write_image(root / path, index)
            index += 1
            rows.append({"path": path, "identity": identity, "race": race, "gender": gender,
                         "age": str(20 + index)})
    write_manifest(root, pd.DataFrame(rows))
    return root


# --------------------------------------------------------------------------- help

def _commands(group: click.Group, prefix: str = "dataset"):
    yield prefix, group
    for name, command in group.commands.items():
        yield f"{prefix} {name}", command


@pytest.mark.parametrize("name, command", list(_commands(dataset_group)))
def test_every_command_has_help_with_an_example(name, command):
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert command.help and "audit dataset" in command.help


# --------------------------------------------------------------------------- import + describe

@pytest.fixture
def utk_src(tmp_path) -> Path:
    src = tmp_path / "UTKFace"
    names = ["25_0_0_20170116174525125.jpg.chip.jpg", "31_1_0_20170116174525126.jpg.chip.jpg",
             "44_1_1_20170116174525127.jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg"]
    for i, name in enumerate(names):
        write_image(src / name, i)
    (src / "60_1_1_20170116174525199.jpg.chip.jpg").write_bytes((src / names[2]).read_bytes())
    return src


def test_import_then_describe(utk_src, tmp_path):
    dest = tmp_path / "utk"
    result = invoke("import", "utkface", utk_src, dest)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Imported utkface from {utk_src} into {dest}"
    assert lines[1] == f"  4 images (linked: {dest / 'images'} -> {utk_src})"
    assert lines[2] == f"  1 excluded (all listed in {dest / 'exclusions.csv'}):"
    assert lines[3].startswith("    39_1_20170116174525125.jpg.chip.jpg: malformed file name: it has 3")
    assert lines[4] == ("  1 images are byte-identical copies of another: they stay in the manifest, "
                        "and loading keeps the first copy of each")
    assert lines[-1].startswith("Done in ") and lines[-1].endswith(f"Next: audit dataset describe {dest}")

    result = invoke("describe", dest)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "  images: 3 usable of 4 manifest rows" in out
    assert "  people: no identity column: each image counts as its own person" in out
    assert "  age: 4 distinct values" not in out  # few values: listed
    assert re.search(r"^race x gender\s+manifest\s+images$", out, re.M)
    assert re.search(r"^  White / Female\s+1\s+1$", out, re.M)
    assert re.search(r"^  Black / Female\s+2\s+1$", out, re.M)
    assert re.search(r"^  Black / Male\s+0\s+0$", out, re.M)
    assert "Excluded on import: 1 (exclusions.csv)" in out
    assert "  malformed file name: 1" in out
    assert "Excluded on load: 1 (rows of manifest.csv)" in out
    assert ("    row 5: images/60_1_1_20170116174525199.jpg.chip.jpg: duplicate of "
            "images/44_1_1_20170116174525127.jpg.chip.jpg") in out
    assert ("  1 excluded duplicate(s) carry labels that differ from the kept copy's (age 1, "
            "age_band 1): expect label noise") in out


def test_describe_json_is_the_library_description(utk_src, tmp_path):
    invoke("import", "utkface", utk_src, tmp_path / "utk", "--copy")
    result = invoke("describe", tmp_path / "utk", "--group-by", "gender", "--json")
    assert result.exit_code == 0, result.output
    description = json.loads(result.stdout)
    assert description == json.loads(json.dumps(describe_dataset(load_dataset(tmp_path / "utk"), ["gender"])))
    assert [g["grouping"] for g in description["groupings"]] == ["gender"]
    assert description["images_mode"] == "copy"


def test_describe_unknown_attribute_is_one_error_line_with_the_columns(utk_src, tmp_path):
    invoke("import", "utkface", utk_src, tmp_path / "utk")
    result = invoke("describe", tmp_path / "utk", "--group-by", "race,ethnicity")
    assert result.exit_code == 2
    assert result.stderr == (f"Error: Unknown attribute 'ethnicity': the manifest "
                             f"'{tmp_path / 'utk' / 'manifest.csv'}' has no such column. Its attribute "
                             "columns are: age, age_band, gender, race.\n")


def test_describe_missing_folder_and_import_errors_exit_2(tmp_path, utk_src):
    result = invoke("describe", tmp_path / "nowhere")
    assert result.exit_code == 2 and result.stderr.startswith("Error: No dataset folder at")
    result = invoke("import", "utkface", utk_src, utk_src / "inside")
    assert result.exit_code == 2 and "writing there would modify the source" in result.stderr
    result = invoke("import", "utkface", utk_src, tmp_path / "x", "--key", "name")
    assert result.exit_code == 2
    assert "--key is an option of the 'folders' importer, not 'utkface'." in result.output
    result = invoke("import", "celeba", utk_src, tmp_path / "x")
    assert result.exit_code == 2 and "'celeba' is not one of" in result.output


def test_import_folders_with_attributes_through_the_cli(tmp_path):
    src = tmp_path / "people"
    write_image(src / "ann" / "1.jpg", 1)
    write_image(src / "ann" / "2.jpg", 2)
    write_image(src / "ben" / "1.jpg", 3)
    (tmp_path / "people.csv").write_text("identity,gender\nann,Female\nben,Male\n")
    result = invoke("import", "folders", src, tmp_path / "ds", "--attributes", tmp_path / "people.csv")
    assert result.exit_code == 0, result.output
    assert "  3 images of 2 identities" in result.stdout
    out = invoke("describe", tmp_path / "ds").stdout
    assert "  people: 2 identities; images per identity: min 1, median 1.5, max 2" in out
    assert "  identities with >= 2 images: 1 (2 images)" in out
    assert re.search(r"^  Female\s+2\s+2\s+1$", out, re.M)


# --------------------------------------------------------------------------- describe_dataset

def test_describe_dataset_counts_groups_intersections_people_and_missing(tmp_path):
    people = {**PEOPLE, "x1": ("", "Male", 2)}
    root = make_people_dataset(tmp_path / "ds", people)
    dataset = load_dataset(root)
    description = describe_dataset(dataset, ["race", "gender"])
    json.dumps(description)  # plain JSON
    names = [g["grouping"] for g in description["groupings"]]
    assert names == ["race", "gender", "race*gender"]
    race = description["groupings"][0]
    assert race["groups"] == [
        {"group": "White", "values": {"race": "White"}, "n_manifest_rows": 17, "n_images": 17, "n_people": 9},
        {"group": "Black", "values": {"race": "Black"}, "n_manifest_rows": 15, "n_images": 15, "n_people": 8},
    ]
    assert race["missing"] == {"n_manifest_rows": 2, "n_images": 2, "n_people": 1}
    both = {g["group"]: (g["n_images"], g["n_people"]) for g in description["groupings"][2]["groups"]}
    assert both == {"White / Male": (9, 5), "White / Female": (8, 4), "Black / Male": (8, 4),
                    "Black / Female": (7, 4)}
    assert description["images_per_identity"] == {"min": 1, "median": 1.5, "max": 5,
                                                  "n_identities_with_2_or_more": 9,
                                                  "n_images_of_those": 25}
    assert description["n_people"] == 18 and description["has_identities"] is True
    text = render_description(description)
    assert re.search(r"^  \(missing\)\s+2\s+2\s+1$", text, re.M)


def test_describe_dataset_counts_exclusions_by_reason(tmp_path):
    root = make_people_dataset(tmp_path / "ds")
    with open(root / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write("gone.jpg,z,Black,Male,1\ngone2.jpg,z,Black,Male,1\n../x.jpg,z,Black,Male,1\n")
    description = describe_dataset(load_dataset(root))
    on_load = description["exclusions"]["on_load"]
    assert on_load["total"] == 3
    assert [(e["reason"], e["count"]) for e in on_load["by_reason"]] == [
        ("missing file", 2), ("path leaves the dataset folder", 1)]
    assert on_load["by_reason"][0]["examples"][0] == {
        "row": 34, "path": "gone.jpg", "reason": "missing file: nothing at this path; fix the path or "
                                                 "remove the row"}


def test_describe_default_groupings_skip_many_valued_attributes(tmp_path):
    dataset = load_dataset(make_people_dataset(tmp_path / "ds"))
    description = describe_dataset(dataset)
    assert [g["grouping"] for g in description["groupings"]] == ["race", "gender", "race*gender"]
    assert description["attributes_not_listed"] == {"age": 32}


def test_empty_intersections_are_listed(tmp_path):
    people = {"p": ("Black", "Female", 1), "q": ("White", "Male", 1)}
    description = describe_dataset(load_dataset(make_people_dataset(tmp_path / "ds", people)))
    intersection = description["groupings"][-1]
    assert intersection["n_empty_groups"] == 2
    assert {g["group"] for g in intersection["groups"] if g["n_images"] == 0} == {"Black / Male",
                                                                                  "White / Female"}


# --------------------------------------------------------------------------- balance

def identities_are_whole(source: pd.DataFrame, selected: pd.DataFrame) -> bool:
    chosen = set(selected["identity"])
    return set(source.loc[source["identity"].isin(chosen), "image_id"]) == set(selected["image_id"])


@pytest.mark.parametrize("per_group", [1, 3, 5, 7])
def test_balance_gives_every_group_exactly_n_images_from_whole_identities(tmp_path, per_group):
    dataset = load_dataset(make_people_dataset(tmp_path / "ds"))
    selection = select_balanced(dataset, by=["race", "gender"], per_group=per_group, seed=0)
    counts = selection.table.groupby(["race", "gender"]).size().to_dict()
    assert counts == {("Black", "Female"): per_group, ("Black", "Male"): per_group,
                      ("White", "Female"): per_group, ("White", "Male"): per_group}
    assert identities_are_whole(dataset.table, selection.table)


def test_balance_is_deterministic_with_the_seed(tmp_path):
    dataset = load_dataset(make_people_dataset(tmp_path / "ds"))
    draws = [select_balanced(dataset, by=["race", "gender"], per_group=3, seed=seed).table["image_id"].tolist()
             for seed in (7, 7, 8, 9, 10)]
    assert draws[0] == draws[1]
    assert any(draw != draws[0] for draw in draws[2:])


def test_balance_folders_are_identical_for_the_same_seed(tmp_path):
    dataset = load_dataset(make_people_dataset(tmp_path / "ds"))
    balance_dataset(dataset, tmp_path / "one", by=["race"], per_group=6, seed=3)
    balance_dataset(dataset, tmp_path / "two", by=["race"], per_group=6, seed=3)
    assert (tmp_path / "one/manifest.csv").read_bytes() == (tmp_path / "two/manifest.csv").read_bytes()


def test_pick_identities_finds_an_exact_set_when_greedy_misses():
    sizes = [("a", 3), ("b", 3), ("c", 2), ("d", 2)]
    for seed in range(20):
        picked = pick_identities(sizes, 4, seed=seed)
        assert sorted(picked) == ["c", "d"]
    assert sum(dict(sizes)[i] for i in pick_identities(sizes, 7, seed=1)) == 7
    assert pick_identities([("a", 3), ("b", 3)], 4, seed=0) in (["a"], ["b"])


def test_short_groups_are_an_error_naming_each_group_and_count(tmp_path):
    dataset = load_dataset(make_people_dataset(tmp_path / "ds"))
    with pytest.raises(DatasetError) as caught:
        select_balanced(dataset, by=["race", "gender"], per_group=8)
    assert str(caught.value) == (
        "1 group(s) of race x gender cannot get --per-group 8 images: 'Black / Female' has 7 images "
        "(from 4 people). Lower --per-group, or pass --allow-smaller to take what there is.")


def test_a_group_whose_identities_cannot_add_up_exactly_is_named(tmp_path):
    people = {"p": ("Black", "Female", 3), "q": ("Black", "Female", 3), "r": ("White", "Female", 4)}
    dataset = load_dataset(make_people_dataset(tmp_path / "ds", people))
    with pytest.raises(DatasetError) as caught:
        select_balanced(dataset, by=["race"], per_group=4)
    assert str(caught.value) == (
        "1 group(s) of race cannot get --per-group 4 images: 'Black' has 6 images, but no set of whole "
        "identities adds up to 4 (at most 3). Lower --per-group, or pass --allow-smaller to take what "
        "there is.")


def test_allow_smaller_takes_what_there_is_and_reports_it(tmp_path):
    dataset = load_dataset(make_people_dataset(tmp_path / "ds"))
    selection = select_balanced(dataset, by=["race", "gender"], per_group=8, allow_smaller=True)
    assert selection.short_groups == ("Black / Female",)
    short = {g.group: (g.n_images_available, g.n_images_selected, g.short) for g in selection.groups}
    assert short["Black / Female"] == (7, 7, True)
    assert short["White / Male"] == (9, 8, False)
    assert identities_are_whole(dataset.table, selection.table)


def test_identities_spanning_groups_are_left_out(tmp_path):
    root = make_people_dataset(tmp_path / "ds")
    manifest = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    manifest.loc[manifest["path"] == "images/d5/0.jpg", "gender"] = "Female"
    write_manifest(root, manifest)
    selection = select_balanced(load_dataset(root), by=["race", "gender"], per_group=2, seed=1)
    assert selection.split_identities == ("d5",)
    assert "d5" not in set(selection.table["identity"])


def test_balance_validates_its_arguments(tmp_path):
    dataset = load_dataset(make_people_dataset(tmp_path / "ds"))
    with pytest.raises(DatasetError, match="Unknown attribute 'skin'"):
        select_balanced(dataset, by=["skin"], per_group=1)
    with pytest.raises(DatasetError, match="--per-group == 0, must be >= 1."):
        select_balanced(dataset, by=["race"], per_group=0)


def test_balanced_folder_links_to_its_source_and_loads(tmp_path):
    source = make_people_dataset(tmp_path / "ds")
    dataset = load_dataset(source)
    summary = balance_dataset(dataset, tmp_path / "bal", by=["race", "gender"], per_group=2, seed=5)
    assert os.readlink(tmp_path / "bal" / "source") == str(source.resolve())
    balanced = load_dataset(tmp_path / "bal")
    assert balanced.exclusions.empty and len(balanced.table) == 8
    assert balanced.table["path"].str.startswith("source/images/").all()
    assert balanced.has_identities
    assert set(balanced.table["sha256"]) <= set(dataset.table["sha256"])
    info = json.loads((tmp_path / "bal" / "dataset.json").read_text())
    assert info["balance"]["seed"] == 5 and info["balance"]["by"] == ["race", "gender"]
    assert summary.mode == "link"


def test_balanced_copy_is_self_contained(tmp_path):
    dataset = load_dataset(make_people_dataset(tmp_path / "ds"))
    balance_dataset(dataset, tmp_path / "bal", by=["race"], per_group=3, copy=True)
    (tmp_path / "bal").rename(tmp_path / "moved")
    assert len(load_dataset(tmp_path / "moved").table) == 6


def test_balance_through_the_cli(tmp_path):
    source = make_people_dataset(tmp_path / "ds")
    result = invoke("balance", source, tmp_path / "bal", "--by", "race,gender", "--per-group", "3",
                    "--seed", "2")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (f"Balanced {source.resolve()} by race x gender into {tmp_path / 'bal'} "
                        "(seed 2, images linked)")
    assert re.fullmatch(r"  Black / Female\s+7\s+4\s+3\s+\d", lines[2])
    assert "  12 images in all" in lines

    result = invoke("balance", source, tmp_path / "bal2", "--by", "race,gender", "--per-group", "8")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: 1 group(s) of race x gender cannot get --per-group 8 "
                                    "images: 'Black / Female' has 7 images (from 4 people).")
    assert not (tmp_path / "bal2").exists()

    result = invoke("balance", source, tmp_path / "bal3", "--by", "race,gender", "--per-group", "8",
                    "--allow-smaller")
    assert result.exit_code == 0
    assert "  --allow-smaller: 1 group(s) have fewer than 8 images: Black / Female" in result.stdout

    result = invoke("balance", source, tmp_path / "bal", "--by", "race", "--per-group", "2")
    assert result.exit_code == 2 and "is not empty" in result.stderr
    result = invoke("balance", source, tmp_path / "bal", "--by", "race", "--per-group", "2", "--overwrite")
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- the real datasets

@pytest.mark.slow
@pytest.mark.shared_data
def test_real_utkface_through_the_cli(utkface_dir, tmp_path):
    result = invoke("import", "utkface", utkface_dir, tmp_path / "utk")
    assert result.exit_code == 0, result.output
    assert "  23,702 images (linked:" in result.stdout
    assert "  5 excluded" in result.stdout
    out = invoke("describe", tmp_path / "utk").stdout
    for race, n in [("White", "10,077"), ("Black", "4,524"), ("Indian", "3,975"), ("Asian", "3,434"),
                    ("Others", "1,692")]:
        assert re.search(rf"^  {race}\s+{n}\s", out, re.M), race
    assert re.search(r"^  White / Female\s+4,601\s", out, re.M)
    assert "  malformed file name: 5" in out
    assert "  duplicate: 390" in out


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_lfw_through_the_cli(lfw_dir, tmp_path):
    result = invoke("import", "lfw", lfw_dir, tmp_path / "lfw")
    assert result.exit_code == 0, result.output
    assert "  13,233 images of 5,749 identities" in result.stdout
    out = invoke("describe", tmp_path / "lfw").stdout
    assert "  images: 13,233 usable of 13,233 manifest rows" in out
    assert "  people: 5,749 identities; images per identity: min 1, median 1, max 530" in out
    assert "  identities with >= 2 images: 1,680 (9,164 images)" in out
