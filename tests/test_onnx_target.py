"""The onnx target, on small models this test exports with torch."""

from __future__ import annotations

import hashlib
import logging
import pickle
import warnings

import numpy as np
import pytest

from audit.errors import InputError, TargetError
from audit.targets import get_target
from audit.targets.onnx_target import OnnxTarget

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


class ChannelStats(torch.nn.Module):
    """Output = per-channel mean, then the top-left pixel: preprocessing made visible."""

    def __init__(self, nhwc: bool = False) -> None:
        super().__init__()
        self.nhwc = nhwc

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        return torch.cat([x.mean(dim=(2, 3)), x[:, :, 0, 0]], dim=1)


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)
        self.fc = torch.nn.Linear(8, 16)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _export(module, example, path, dynamic_axes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # dynamo=False: the legacy exporter needs no onnxscript.
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes=dynamic_axes)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return {
        # Dynamic batch and spatial size: the user must say the input size.
        "stats": _export(ChannelStats(), torch.zeros(1, 3, 112, 112), folder / "stats.onnx",
                         {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n"}}),
        "stats_nhwc": _export(ChannelStats(nhwc=True), torch.zeros(1, 112, 112, 3),
                              folder / "stats_nhwc.onnx", {"x": {0: "n"}, "y": {0: "n"}}),
        "tiny": _export(TinyNet(), torch.zeros(1, 3, 112, 112), folder / "tiny.onnx",
                        {"x": {0: "n"}, "y": {0: "n"}}),
    }


def solid(rgb, size=112) -> np.ndarray:
    return np.full((size, size, 3), rgb, dtype=np.uint8)


def test_arcface_preset_normalises_and_keeps_rgb(models):
    target = OnnxTarget(path=str(models["stats"]), preset="arcface", threshold="0.5")
    (outcome,) = target.embed([solid((10, 20, 30))])
    expected = (np.array([10, 20, 30]) - 127.5) / 127.5
    np.testing.assert_allclose(outcome.vector, np.concatenate([expected, expected]), atol=1e-4)
    assert target.chip_size == 112 and target.input_kind == "aligned"
    assert target.dimension == 6 and target.metric == "cosine" and target.default_threshold == 0.5


def test_bgr_facenet_and_scale(models):
    bgr = OnnxTarget(path=str(models["stats"]), preset="facenet", input_size="112",
                     color_order="bgr", threshold="0.4")
    expected = (np.array([30, 20, 10]) - 127.5) / 128.0
    np.testing.assert_allclose(bgr.embed([solid((10, 20, 30))])[0].vector[:3], expected, atol=1e-4)
    scaled = OnnxTarget(path=str(models["stats"]), input_size="112", scale=str(1 / 255))
    np.testing.assert_allclose(scaled.embed([solid((51, 102, 255))])[0].vector[:3], [0.2, 0.4, 1.0],
                               atol=1e-4)
    per_channel = OnnxTarget(path=str(models["stats"]), input_size="112", mean="0,10,20", std="1,2,4")
    np.testing.assert_allclose(per_channel.embed([solid((10, 20, 30))])[0].vector[:3], [10, 5, 2.5])
    with pytest.raises(InputError, match="give either scale= or mean=/std=, not both"):
        OnnxTarget(path=str(models["stats"]), input_size="112", scale="0.5", mean="1")


def test_nhwc_layout_is_read_from_the_model(models):
    target = OnnxTarget(path=str(models["stats_nhwc"]), threshold="0.5")
    assert target.preprocessing.layout == "NHWC" and target.chip_size == 112
    np.testing.assert_allclose(target.embed([solid((255, 0, 127))])[0].vector[:3],
                               [1.0, -1.0, -0.5 / 127.5], atol=1e-4)
    with pytest.raises(TargetError) as caught:
        OnnxTarget(path=str(models["stats_nhwc"]), layout="NCHW")
    assert str(caught.value) == ("layout='NCHW', but the model's input shape ['n', 112, 112, 3] is "
                                 "NHWC; pass --target-option layout=NHWC.")


def test_input_size_must_match_a_static_model(models):
    with pytest.raises(TargetError) as caught:
        OnnxTarget(path=str(models["tiny"]), preset="facenet")
    assert str(caught.value) == ("input_size=160, but the model's input shape ['n', 3, 112, 112] "
                                 "wants 112x112; pass --target-option input_size=112.")
    with pytest.raises(InputError, match="input size is dynamic"):
        OnnxTarget(path=str(models["stats"]))


def test_tiny_net_defaults_fingerprint_and_batching(models, caplog):
    caplog.set_level(logging.WARNING)
    target = OnnxTarget(path=str(models["tiny"]), batch_size="2")
    assert "no threshold given; using the placeholder cosine distance 0.60" in caplog.text
    assert target.default_threshold == 0.6 and target.details()["threshold_source"] == "placeholder default"
    assert target.dimension == 16 and target.chip_size == 112
    sha = hashlib.sha256(models["tiny"].read_bytes()).hexdigest()
    assert target.fingerprint().startswith(f"onnx:sha256:{sha}:prep:")
    rng = np.random.default_rng(0)
    chips = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(5)]
    together = np.stack([o.vector for o in target.embed(chips)])
    alone = np.stack([target.embed([c])[0].vector for c in chips])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    assert not np.allclose(together[0], together[1])
    other = OnnxTarget(path=str(models["tiny"]), mean="0", std="255", threshold="0.6")
    assert other.fingerprint() != target.fingerprint()
    assert OnnxTarget(path=str(models["tiny"]), threshold="0.3").fingerprint() == target.fingerprint()
    normalised = OnnxTarget(path=str(models["tiny"]), l2_normalize="true", threshold="0.6")
    np.testing.assert_allclose(np.linalg.norm(normalised.embed(chips[:2])[0].vector), 1.0, rtol=1e-5)
    assert normalised.fingerprint().endswith(":l2")


def test_wrong_chip_shape_and_pickling(models):
    target = OnnxTarget(path=str(models["tiny"]), threshold="0.6")
    with pytest.raises(ValueError, match=r"image 0 has shape \(150, 150, 3\)"):
        target.embed([solid((0, 0, 0), size=150)])
    clone = pickle.loads(pickle.dumps(target))
    chip = solid((40, 80, 120))
    np.testing.assert_allclose(clone.embed([chip])[0].vector, target.embed([chip])[0].vector)


def test_through_the_registry(models):
    target = get_target(f"onnx:{models['stats']}", preset="arcface", threshold="0.5")
    assert isinstance(target, OnnxTarget) and target.chip_size == 112
    with pytest.raises(InputError, match=r"unknown target option\(s\) \['presett'\] for target 'onnx'"):
        get_target(f"onnx:{models['stats']}", presett="arcface")


def test_bad_files_and_options(models, tmp_path):
    with pytest.raises(InputError) as caught:
        OnnxTarget(path=str(tmp_path / "missing.onnx"))
    assert "does not exist; give --target onnx:PATH" in str(caught.value)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(TargetError, match="onnxruntime cannot load"):
        OnnxTarget(path=str(garbage))
    with pytest.raises(InputError, match="threshold= is required with metric=euclidean"):
        OnnxTarget(path=str(models["tiny"]), metric="euclidean")
    with pytest.raises(InputError, match=r"target option layout='NCWH' must be one of \('NCHW', 'NHWC'\)"):
        OnnxTarget(path=str(models["tiny"]), layout="NCWH")
    with pytest.raises(InputError, match="preset='vgg'"):
        OnnxTarget(path=str(models["tiny"]), preset="vgg")
