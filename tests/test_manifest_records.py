"""Manifest and attribute CSVs that cannot swallow rows: every line a row, an exclusion, or an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from audit.cli import cli
from audit.data.csv_records import read_csv_records
from audit.data.importers import import_dataset
from audit.data.manifest import load_dataset
from audit.errors import DatasetError

N_ROWS = 60


def make_folder(root: Path, lines: list[str]) -> Path:
    """A dataset whose manifest is ``lines`` (after the header) over images 0..N_ROWS-1."""
    (root / "img").mkdir(parents=True)
    for i in range(N_ROWS):
        Image.new("RGB", (8, 8), (i, 2 * i, 3 * i)).save(root / "img" / f"{i}.png")
    (root / "manifest.csv").write_text("\n".join(["path,identity,race,gender", *lines]) + "\n", encoding="utf-8")
    return root


def rows() -> list[str]:
    return [f"img/{i}.png,p{i},{'AB'[i % 2]},{'FM'[i // 2 % 2]}" for i in range(N_ROWS)]


def test_an_unterminated_quote_is_an_error_naming_the_line_where_it_opened(tmp_path):
    """Before: line 12's quote swallowed lines 12-61 and the dataset lost 50 of its 60 images."""
    lines = rows()
    lines[10] = 'img/10.png,"p10,A,F'           # line 12 of the file
    lines[59] = 'img/59.png,p59,"B",M'           # a later quote closes the swallowed value on line 61
    root = make_folder(tmp_path / "ds", lines)
    with pytest.raises(DatasetError) as caught:
        load_dataset(root)
    message = str(caught.value)
    assert "the quote opened on line 12 is only closed on line 61" in message
    assert "Close the quote on line 12" in message


def test_a_quote_never_closed_is_an_error_naming_its_line(tmp_path):
    lines = rows()
    lines[10] = 'img/10.png,"p10,A,F'
    root = make_folder(tmp_path / "ds", lines)
    with pytest.raises(DatasetError, match="the quote opened on line 12 is never closed"):
        load_dataset(root)


@pytest.mark.parametrize("command", [["dataset", "describe"], ["run", "--probes", "detection", "--dataset"]])
def test_describe_and_run_refuse_the_manifest_instead_of_auditing_a_fifth_of_it(tmp_path, command, monkeypatch):
    monkeypatch.setenv("AUDIT_CACHE", str(tmp_path / "cache.sqlite"))
    lines = rows()
    lines[10] = 'img/10.png,"p10,A,F'
    lines[59] = 'img/59.png,p59,"B",M'
    root = make_folder(tmp_path / "ds", lines)
    extra = ["--out", str(tmp_path / "out")] if command[0] == "run" else []
    result = CliRunner().invoke(cli, [*command, str(root), *extra])
    assert result.exit_code == 2, result.output
    assert "the quote opened on line 12" in result.output
    assert not (tmp_path / "out").exists()


def test_a_stray_quote_on_one_line_excludes_that_row_only(tmp_path):
    lines = rows()
    lines[4] = 'img/4.png,"p4"x,A,F'                # line 6
    dataset = load_dataset(make_folder(tmp_path / "ds", lines))
    assert len(dataset.table) == N_ROWS - 1
    (row, path, reason), = dataset.exclusions.itertuples(index=False, name=None)
    assert row == 6
    assert reason.startswith("malformed row: a quote in the middle of a value")


def test_a_one_megabyte_value_excludes_its_row_with_the_line_number(tmp_path):
    lines = rows()
    lines[20] = "img/20.png,p20,A," + "F" * (1 << 20)   # line 22
    dataset = load_dataset(make_folder(tmp_path / "ds", lines))
    assert len(dataset.table) == N_ROWS - 1
    assert dataset.exclusions["row"].tolist() == [22]
    assert dataset.exclusions["reason"].iloc[0] == ("malformed row: a value longer than 131,072 characters, more "
                                                    "than a path or a label ever needs")


def test_a_quoted_line_break_in_a_value_is_one_row_at_the_line_it_starts(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    name = "odd\nname.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / name)
    Image.new("RGB", (8, 8), (3, 2, 1)).save(root / "plain.png")
    (root / "manifest.csv").write_text(f'path,race\n"{name}",A\nplain.png,B\n', encoding="utf-8")
    dataset = load_dataset(root)
    assert dataset.table["image_id"].tolist() == [name, "plain.png"]
    assert dataset.manifest_rows["row"].tolist() == [2, 4]


def test_every_physical_line_is_a_record_or_blank(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('a,b\n1,2\n\n"3\n3",4\n5,"6"""\n7,8\n', encoding="utf-8")
    header, records = read_csv_records(path)
    assert header.fields == ["a", "b"]
    assert [(r.line, r.end_line, r.fields) for r in records] == [
        (2, 2, ["1", "2"]), (4, 5, ["3\n3", "4"]), (6, 6, ["5", '6"']), (7, 7, ["7", "8"])]


def test_a_non_utf8_manifest_names_the_line_of_the_bad_byte(tmp_path):
    root = make_folder(tmp_path / "ds", rows())
    text = (root / "manifest.csv").read_bytes().split(b"\n")
    text[7] = text[7].replace(b"p6", b"p\xe96")
    (root / "manifest.csv").write_bytes(b"\n".join(text))
    with pytest.raises(DatasetError, match=r"is not UTF-8 text \(invalid continuation byte at byte \d+, line 8\)"):
        load_dataset(root)


def test_an_attributes_csv_with_a_quote_left_open_is_refused(tmp_path):
    src = tmp_path / "src"
    for person in ("ann", "bob", "cat"):
        (src / person).mkdir(parents=True)
        Image.new("RGB", (8, 8), (len(person), 1, 1)).save(src / person / "1.png")
    attributes = tmp_path / "people.csv"
    attributes.write_text('identity,race\nann,"A\nbob,B\ncat,C\n', encoding="utf-8")
    with pytest.raises(DatasetError, match="the quote opened on line 2 is never closed"):
        import_dataset("folders", src, tmp_path / "dest", attributes=attributes)
    assert not (tmp_path / "dest").exists()
