"""Every JSON file the tool reads from its user is read by one reader: a broken one is an input error.

Not UTF-8, not JSON, an integer past Python's digit limit, or nesting deep
enough to exhaust the parser's recursion (or the recursion of the code
that walks the result): each is exit 2 naming the file and the fix, never
a ``RecursionError`` or ``ValueError`` escaping as an internal error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit.cli import cli
from audit.data.manifest import INFO_FILE, load_dataset
from audit.errors import EXIT_INPUT_ERROR, DatasetError, InputError, ResultsError
from audit.json_model import MAX_JSON_DEPTH, read_json
from audit.results import load_results
from tests.corpus.cases import _lfw_source
from tests.corpus.datasets import face_dataset

FIX = "write it again."


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("text, words", [
    (nested(100_000), f"nests JSON more than {MAX_JSON_DEPTH} levels deep"),     # past the parser's recursion
    (nested(MAX_JSON_DEPTH + 1), f"nests JSON more than {MAX_JSON_DEPTH} levels deep"),  # parsed, then refused
    ('{"a": ' + "9" * 5000 + "}", "is not valid JSON (Exceeds the limit"),          # an int of 5,000 digits
    ("{not json", "is not valid JSON (Expecting property name"),
    ("", "is not valid JSON"),
])
def test_a_broken_json_file_is_an_error_naming_the_file_and_the_fix(tmp_path, text, words):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(DatasetError) as caught:
        read_json(path, error=DatasetError, fix=FIX)
    message = str(caught.value)
    assert repr(str(path)) in message and words in message and message.endswith(FIX)


def test_json_that_is_not_utf8_names_the_byte(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes('{"name": "Jos\u00e9"}'.encode("latin-1"))
    with pytest.raises(InputError, match=r"is not UTF-8 text \(byte 0xe9 at offset 13\): write it again"):
        read_json(path, fix=FIX)


def test_json_as_deep_as_allowed_and_a_byte_order_mark_are_read(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"\xef\xbb\xbf" + nested(MAX_JSON_DEPTH).encode())
    value = read_json(path, fix=FIX)
    for _ in range(MAX_JSON_DEPTH - 1):
        (value,) = value
    assert value == []
    path.write_text("5")
    assert read_json(path, fix=FIX) == 5


@pytest.mark.parametrize("text, words", [
    (nested(100_000), "nests JSON more than"),
    ('{"kind": "folders", "x": ' + nested(900) + "}", "nests JSON more than"),
    ('{"images": 5}', "'images' is int 5, not an object"),
    ('{"references": 7}', "'references' is int 7, not a list of text"),
    ('["a list"]', "is not a JSON object"),
])
def test_a_broken_dataset_json_is_a_dataset_error(tmp_path, text, words):
    dataset = face_dataset(tmp_path / "ds", people=2, per_person=1)
    (dataset / INFO_FILE).write_text(text)
    with pytest.raises(DatasetError, match="re-import the dataset") as caught:
        load_dataset(dataset)
    assert words in str(caught.value)
    result = CliRunner().invoke(cli, ["dataset", "describe", str(dataset)])
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    assert words in result.output


@pytest.mark.parametrize("text, words", [
    (nested(100_000), "nests JSON more than"),
    ('{"Ann_Lee": ' + nested(500) + "}", "nests JSON more than"),
    ('{"Ann_Lee": "caucasian"}'.encode("utf-16"), "is not UTF-8 text"),
])
def test_a_broken_lfw_race_dictionary_is_an_import_error(tmp_path, text, words):
    inputs = _lfw_source(tmp_path)
    kind, src, _ = inputs.source
    race_file = src / "labels" / "lfw_race_dict.json"
    race_file.write_bytes(text.encode() if isinstance(text, str) else text)
    result = CliRunner().invoke(cli, ["dataset", "import", kind, str(src), str(tmp_path / "dest")])
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    assert words in result.output and "lfw_race_dict.json" in result.output
    assert "mapping person names to race labels" in result.output


def test_a_results_file_nested_deeper_than_any_the_tool_writes_is_refused(tmp_path):
    results = {"schema_version": "1.1", "figures": [], "disparities": [], "x": json.loads(nested(900))}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ResultsError, match="nests JSON more than .* Re-run the audit, or restore the file"):
        load_results(path)
    for command in (["gate", str(path), "--policy", str(_policy(tmp_path))], ["report", str(tmp_path)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == EXIT_INPUT_ERROR, result.output
        assert "nests JSON more than" in result.output


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text('[[rule]]\nid = "r"\nmetric = "detection.failure_rate"\nmax = 1.0\n')
    return path
