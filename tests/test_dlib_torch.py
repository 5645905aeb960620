"""The torch port of dlib's descriptor: the file reader, the network, exactness against dlib."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from audit.errors import InputError, TargetError
from audit.targets.dlib_serialize import DlibStreamReader, read_network
from audit.targets.dlib_torch import (
    DlibTorchEngine, _add_prev, _layer_chain, count_threshold_flips, default_model_path,
    dlib_descriptors, load_dlib_descriptor, reference_chips, self_check,
)

dlib = pytest.importorskip("dlib")


# --------------------------------------------------------------------------------------
# The format reader, on bytes written by hand from dlib's serialize.h


def test_reader_decodes_dlib_integers() -> None:
    # control byte: low nibble = byte count, 0x80 = negative; magnitude little-endian
    reader = DlibStreamReader(bytes([0x01, 0x05, 0x81, 0x05, 0x02, 0x00, 0x01, 0x00]))
    assert [reader.read_int() for _ in range(3)] == [5, -5, 256]
    with pytest.raises(TargetError, match="bad integer control byte 0x00 at byte 7"):
        reader.read_int()


def test_reader_decodes_floats_strings_bools_and_tensors() -> None:
    data = bytes([0x01, 0x03, 0x81, 0x02])               # 3 * 2**-2 = 0.75
    data += bytes([0x01, 0x01, 0x02, 0x00, 0x7D])        # exponent 32000: +inf
    data += bytes([0x01, 0x04]) + b"con_" + b"1" + b"0"
    data += bytes([0x01, 0x02]) + bytes([0x01, 0x01, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01])
    data += struct.pack("<2f", 1.5, -2.0)
    reader = DlibStreamReader(data)
    assert reader.read_float() == 0.75
    assert reader.read_float() == float("inf")
    assert reader.read_string() == "con_"
    assert (reader.read_bool(), reader.read_bool()) == (True, False)
    tensor = reader.read_tensor()
    assert tensor.shape == (1, 2, 1, 1) and tensor.dtype == np.float32
    assert tensor.ravel().tolist() == [1.5, -2.0]
    assert reader.at_end


def test_truncated_model_file_is_refused(tmp_path) -> None:
    broken = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    broken.write_bytes(default_model_path().read_bytes()[:100_000])
    with pytest.raises(TargetError, match="needed .* more bytes, the file ends"):
        read_network(broken, _layer_chain())


def test_other_network_is_refused() -> None:
    chain = _layer_chain()
    chain[1] = "con"            # the file has fc there
    with pytest.raises(TargetError, match="expected a con layer .* found 'fc_"):
        read_network(default_model_path(), chain)


# --------------------------------------------------------------------------------------
# The network


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_dlib_descriptor()


@pytest.fixture(scope="module")
def engine() -> DlibTorchEngine:
    return DlibTorchEngine(device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    return reference_chips()


@pytest.fixture(scope="module")
def dlib_reference(chips) -> np.ndarray:
    return dlib_descriptors(chips)


def test_model_holds_dlib_weights(model) -> None:
    # the file's input layer stores dlib's mean pixel (input.h: 122.782, 117.001, 104.298)
    assert model.mean_rgb.tolist() == pytest.approx([122.782, 117.001, 104.298], abs=1e-4)
    assert tuple(model.fc.weight.shape) == (128, 256)
    assert len(model.conv_affines()) == 29
    assert not any(p.requires_grad for p in model.parameters())


def test_add_prev_zero_pads_like_dlib() -> None:
    small = torch.ones(1, 1, 1, 1)
    large = torch.full((1, 2, 2, 2), 10.0)
    out = _add_prev(small, large)
    assert out.shape == (1, 2, 2, 2)
    assert out[0, 0].tolist() == [[11.0, 10.0], [10.0, 10.0]]     # padding at the bottom right
    assert out[0, 1].tolist() == [[10.0, 10.0], [10.0, 10.0]]     # and in the extra channel


def test_reference_chips_are_distinct_faces(chips) -> None:
    assert chips.shape == (5, 150, 150, 3) and chips.dtype == np.uint8
    assert len({c.tobytes() for c in chips}) == 5


def test_module_matches_dlib_on_the_astronaut(model, chips, dlib_reference) -> None:
    with torch.no_grad():
        got = model(torch.from_numpy(chips)).numpy()
    assert got.dtype == np.float32 and got.shape == (5, 128)
    assert np.abs(got - dlib_reference).max() <= 1e-4
    assert count_threshold_flips(got, dlib_reference) == 0


def test_engine_matches_dlib_on_the_astronaut(engine, chips, dlib_reference) -> None:
    got = engine.embed(chips)          # fused affine, channels-last, two batches
    assert np.abs(got - dlib_reference).max() <= 1e-4


def test_descriptor_is_not_normalised(dlib_reference) -> None:
    # dlib's loss_metric returns the fc output as it is: norms are not 1
    assert np.abs(np.linalg.norm(dlib_reference, axis=1) - 1).min() > 0.1


def test_nhwc_uint8_and_nchw_float_give_the_same_descriptor(model, chips) -> None:
    with torch.no_grad():
        a = model(torch.from_numpy(chips[:1]))
        b = model(torch.from_numpy(chips[:1]).permute(0, 3, 1, 2).float())
    assert torch.equal(a, b)


def test_wrong_chip_size_is_refused(model, engine) -> None:
    with pytest.raises(InputError, match="chips of 64x64 pixels: dlib's descriptor takes 150x150"):
        model(torch.zeros(1, 64, 64, 3))
    with pytest.raises(InputError, match=r"chips of shape \(2, 150, 150\): expected \(N, 150, 150, 3\)"):
        engine.embed(np.zeros((2, 150, 150), np.uint8))
    with pytest.raises(InputError, match="chips of dtype float32: expected uint8"):
        engine.embed(np.zeros((1, 150, 150, 3), np.float32))


def test_gradients_flow_to_the_input(model, chips) -> None:
    images = torch.from_numpy(chips[:1]).float().requires_grad_(True)
    target = torch.zeros(1, 128)
    loss = (model(images) - target).pow(2).sum()
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_self_check_passes_and_reports(engine) -> None:
    result = self_check(engine)
    assert result.passed and result.n_faces == 5 and result.threshold_flips == 0
    assert result.max_abs_difference <= 1e-4
    assert result.to_dict()["device"] == "cpu"


def test_self_check_refuses_an_engine_that_disagrees(engine, monkeypatch) -> None:
    real_embed = engine.embed
    monkeypatch.setattr(engine, "embed", lambda chips: real_embed(chips) + np.float32(1e-3))
    with pytest.raises(TargetError, match=r"disagrees with dlib on 5 reference faces: max abs "
                                          r"difference 0\.001.*engine=dlib"):
        self_check(engine)


def test_bad_batch_size_and_device_are_refused() -> None:
    with pytest.raises(InputError, match="batch_size=0, must be >= 1"):
        DlibTorchEngine(batch_size=0)
    with pytest.raises(InputError, match="device='gpu7' is not a torch device"):
        DlibTorchEngine(device="gpu7")


# --------------------------------------------------------------------------------------
# Real faces from the research data


@pytest.mark.slow
@pytest.mark.shared_data
def test_engine_matches_dlib_on_utkface(utkface_dir, engine) -> None:
    from PIL import Image

    from audit.models import LANDMARKS_5_MODEL, model_path

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path(LANDMARKS_5_MODEL)))
    files = sorted(utkface_dir.glob("*.jpg"))
    chips = []
    for path in files[:: max(1, len(files) // 220)]:
        image = np.asarray(Image.open(path).convert("RGB"))
        rects, scores, _ = detector.run(image, 0, 0.0)
        if rects:
            shape = predictor(image, rects[int(np.argmax(scores))])
            chips.append(np.asarray(dlib.get_face_chip(image, shape, size=150, padding=0.25)))
        if len(chips) == 200:
            break
    chips = np.stack(chips)
    assert len(chips) >= 150
    expected = dlib_descriptors(chips)
    got = engine.embed(chips)
    assert np.abs(got - expected).max() <= 1e-4
    assert count_threshold_flips(got, expected) == 0
