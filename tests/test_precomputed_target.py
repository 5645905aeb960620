"""The precomputed target: vectors from CSV or Parquet, looked up by image id."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd
import pytest

from audit.errors import InputError, TargetError
from audit.targets import get_target
from audit.targets.base import EmbedOutcome, Target
from audit.targets.precomputed import MISSING_REASON, PrecomputedTarget

VECTORS = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
IDS = ["images/a.jpg", "images/b.jpg", "c.png"]


@pytest.fixture()
def wide_csv(tmp_path):
    path = tmp_path / "vectors.csv"
    frame = pd.DataFrame(VECTORS, columns=[f"v{k}" for k in range(4)])
    frame.insert(0, "image_id", IDS)
    frame.to_csv(path, index=False)
    return path


def test_wide_csv_lookup_and_missing_ids(wide_csv, caplog):
    caplog.set_level(logging.WARNING)
    target = PrecomputedTarget(path=str(wide_csv))
    assert "no threshold given; using the placeholder 0.60" in caplog.text
    assert target.input_kind == "precomputed"
    assert (target.dimension, target.metric, target.default_threshold) == (4, "euclidean", 0.6)
    outcomes = target.lookup(["c.png", "./images/a.jpg", "images\\b.jpg", "missing.jpg"])
    assert [o.status for o in outcomes] == ["ok", "ok", "ok", "error"]
    np.testing.assert_array_equal(outcomes[0].vector, VECTORS[2])
    np.testing.assert_array_equal(outcomes[1].vector, VECTORS[0])
    assert outcomes[3].reason == MISSING_REASON == "no precomputed vector for this image"
    sha = hashlib.sha256(wide_csv.read_bytes()).hexdigest()
    assert target.fingerprint() == f"precomputed:sha256:{sha}"
    assert target.details()["threshold_source"] == "placeholder default"


def test_json_list_csv_and_parquet(tmp_path):
    frame = pd.DataFrame({"image_id": IDS, "embedding": [json.dumps(v.tolist()) for v in VECTORS]})
    frame.to_csv(tmp_path / "lists.csv", index=False)
    target = PrecomputedTarget(path=str(tmp_path / "lists.csv"), metric="cosine", threshold="0.3")
    np.testing.assert_allclose(target.lookup(["images/b.jpg"])[0].vector, VECTORS[1])
    assert target.metric == "cosine" and target.default_threshold == 0.3
    pytest.importorskip("pyarrow")
    pd.DataFrame({"image_id": IDS, "vec": [v.tolist() for v in VECTORS]}).to_parquet(tmp_path / "v.parquet")
    parquet = PrecomputedTarget(path=str(tmp_path / "v.parquet"), threshold="0.6")
    np.testing.assert_allclose(parquet.lookup(["c.png"])[0].vector, VECTORS[2])


def test_embed_without_reembed_explains(wide_csv):
    target = PrecomputedTarget(path=str(wide_csv), threshold="0.6")
    assert target.reembed_target is None
    with pytest.raises(TargetError) as caught:
        target.embed([np.zeros((150, 150, 3), np.uint8)])
    assert str(caught.value).startswith("precomputed vectors cannot embed new images (the inversion "
                                        "probe's reconstructions need the model): pass "
                                        "--target-option reembed=<spec>")


class FourD(Target):
    """A stand-in model giving 4-D euclidean vectors on 64x64 chips."""

    name = "fourd"
    dimension = 4
    metric = "euclidean"
    default_threshold = 0.6
    chip_size = 64

    def __init__(self, **options):
        self.options = options

    def fingerprint(self):
        return "fourd"

    def embed(self, images):
        return [EmbedOutcome.ok(np.ones(4)) for _ in images]


def test_reembed_target_must_agree(tmp_path, monkeypatch):
    import audit.targets as registry

    monkeypatch.setattr(registry, "get_target", lambda spec, **options: FourD(**options))
    frame = pd.DataFrame(VECTORS, columns=[f"v{k}" for k in range(4)])
    frame.insert(0, "image_id", IDS)
    frame.to_csv(tmp_path / "v.csv", index=False)
    target = PrecomputedTarget(path=str(tmp_path / "v.csv"), threshold="0.6", reembed="fourd",
                               **{"reembed.engine": "x"})
    assert target.reembed_target.options == {"engine": "x"} and target.chip_size == 64
    assert target.embed([np.zeros((64, 64, 3), np.uint8)])[0].status == "ok"
    with pytest.raises(TargetError, match="compares with 'euclidean' but metric='cosine'"):
        PrecomputedTarget(path=str(tmp_path / "v.csv"), metric="cosine", threshold="0.3",
                          reembed="fourd")


def test_reembed_dimension_mismatch_with_real_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import warnings

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, stride=8), torch.nn.Flatten(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, 32, 32),), str(tmp_path / "m.onnx"),
                          dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    frame = pd.DataFrame(VECTORS, columns=[f"v{k}" for k in range(4)])
    frame.insert(0, "image_id", IDS)
    frame.to_csv(tmp_path / "v.csv", index=False)
    with pytest.raises(TargetError, match=r"gives 32-D vectors but .* holds 4-D ones"):
        get_target(f"precomputed:{tmp_path / 'v.csv'}", threshold="0.6", metric="cosine",
                   reembed=f"onnx:{tmp_path / 'm.onnx'}", **{"reembed.threshold": "0.5"})


@pytest.mark.parametrize("content, message", [
    ("name,v0,v1\na,1,2\n", "has no column 'image_id'"),
    ("image_id,v0,v2\na,1,2\n", "vector columns must be v0..v2 without gaps; missing ['v1']"),
    ("image_id,v0,v1\na,1,2\na,3,4\n", "has several rows for the image ids ['a']"),
    ("image_id,v0,v1\na,1,2\nb,3,x\n", "row 2 (image_id 'b') has 'x' in column 'v1', not a number."),
    ("image_id,v0,v1\na,1,2\nb,3,\n", "row 2 (image_id 'b') has '' in column 'v1', not a number."),
    ("image_id,v0,v1\na,1,2\nb,3,nan\n", "row 2 (image_id 'b') has a missing or non-finite value"),
    ('image_id,vec\na,"[1,2]"\nb,"[1,2,3]"\n', "row 2 (image_id 'b') has 3 values; the rows before have 2."),
    ("image_id,x,y\na,1,2\n", "cannot tell which columns hold the vectors"),
    ("image_id,v0\n", "has no rows."),
    ("image_id,v0,v999999999\na,1,2\n", "missing ['v1', 'v2', 'v3', 'v4', 'v5']"),
    ("image_id,v0,v1,v01\na,1,2,3\n", "the columns ['v01', 'v1'] name the same vector index"),
    ('image_id,vec\na,"' + "[" * 100000 + "]" * 100000 + '"\n', "row 1 (image_id 'a'): column 'vec' holds"),
])
def test_bad_files_are_refused_with_the_row(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError) as caught:
        PrecomputedTarget(path=str(path), threshold="0.6")
    assert message in str(caught.value)


def test_a_column_named_v_and_5000_digits_is_no_vector_index(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("image_id,v" + "9" * 5000 + "\na,1.5\nb,2.5\n")
    target = PrecomputedTarget(path=str(path), threshold="0.6")     # read as the one column of JSON lists
    assert target.dimension == 1


def test_registry_spec_and_options(wide_csv, tmp_path):
    target = get_target(f"precomputed:{wide_csv}", threshold="0.5")
    assert isinstance(target, PrecomputedTarget) and target.default_threshold == 0.5
    with pytest.raises(InputError, match="needs a file: use --target precomputed:FILE"):
        get_target("precomputed")
    with pytest.raises(InputError, match="does not exist"):
        get_target(f"precomputed:{tmp_path / 'nope.csv'}")
    with pytest.raises(InputError, match=r"reembed= is not given"):
        get_target(f"precomputed:{wide_csv}", **{"reembed.preset": "arcface"})
