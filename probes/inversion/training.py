"""Training the inversion generator: fast, resumable, reproducible.

The recipe is the method's (MSE between generated and aligned chips, Adam,
150 epochs, the checkpoint with the smallest validation embedding distance
kept); the engineering is ours:

* **Speed.**  The whole training set lives on the device as one uint8
  tensor ``(N, 3, H, W)`` (a quarter of float32's memory) and each batch is
  an index slice of a per-epoch permutation, converted to [0, 1] on the
  device.  No DataLoader, no per-item decoding, no host-to-device copy per
  batch (``benchmarks/bench_training.py`` measures the difference).
  Mixed precision (bf16 autocast) is an option on CUDA only.  On a CPU the
  generator's transposed convolutions take about three quarters of a step
  and the input pipeline a few percent, so this buys little there; on the
  CPU the model is kept in channels_last memory format (:func:`place_model`)
  and Adam is the fused kernel (:func:`make_optimizer`): the same function
  and the same update, together about 1.1-1.3x.  Sub-pixel convolutions
  (slower) and ``torch.compile`` (no gain) were measured and not adopted.
* **Resumable.**  ``last.pt`` is written atomically after every epoch with
  the model, the optimizer, the epoch, the random generator's state and the
  history; calling :func:`train_generator` again with the same
  ``checkpoint_dir`` continues from it, so a killed run loses at most one
  epoch.  A checkpoint made with other settings or other data is refused
  (:class:`audit.errors.InputError` naming what changed), never silently
  mixed.  Only ``epochs`` (to extend a run) and ``device`` may change.
  A run extended with more epochs keeps the validation made after its
  former last epoch (it may then differ from an uninterrupted run in the
  history, never in the weights).
* **Reproducible.**  Every random draw (initial weights, permutations,
  embedding noise) comes from one CPU ``torch.Generator`` seeded with
  ``seed`` and saved in the checkpoint, so two runs with the same seed on
  the CPU give identical weights, an interrupted-and-resumed run gives the
  weights of an uninterrupted one, and a CUDA run draws the same numbers
  (its weights then differ from the CPU's only by floating point).
* **Safe loading.**  Checkpoints hold tensors and plain Python values only
  and are read with ``torch.load(..., weights_only=True)``.

Validation and checkpoint selection
-----------------------------------
Every ``validate_every`` epochs (and after the last), the validation
embeddings are reconstructed, the reconstructions embedded through the
target with ``embed_fn``, and each compared with its source embedding.
``val_mean_distance`` is the mean over reconstructions the target gave a
vector for: an aligned-chip target (dlib, ONNX) embeds every
reconstruction, which is an aligned chip already; ``val_failures`` counts
those in which the face detector found no face (reported, not penalised).
A target that takes whole images (a cloud API) may return no vector at
all; the checkpoint is chosen by ``val_score``, the mean over *all*
validation reconstructions where a missing vector counts as
``failure_distance`` (default: the largest distance of that round).  A
round without any vector scores infinity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from audit.distances import check_metric
from audit.errors import InputError
from audit.outputs import private_folder, replacing
from audit.progress import progress as progress_bar
from audit.results import write_json_atomic
from audit.targets.base import Metric
from probes.inversion.metrics import reconstruction_distances
from probes.inversion.config import TrainingConfig
from probes.inversion.generator import InversionGenerator, to_uint8_images

log = logging.getLogger(__name__)

from probes.inversion.defaults import DEFAULT_BETAS, DEFAULT_EVAL_BATCH_SIZE, DEFAULT_LR  # noqa: E402

CHECKPOINT_FORMAT = 1
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
HISTORY_FILE = "history.json"
#: Settings that may differ between a checkpoint and a resumed run.
RESUMABLE_CHANGES = ("epochs", "device")

EmbedFn = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]



DEFAULT_TRAINING_CONFIG = TrainingConfig()


@dataclass
class TrainingResult:
    """The best generator (in eval mode) and how training went.

    ``training_seconds`` and ``samples_per_second`` cover the epochs trained
    by *this* call (a resumed call does not count the earlier ones);
    samples per second counts training steps only, not validation.
    """

    model: InversionGenerator
    history: list[dict]
    best_epoch: int
    best_val_mean_distance: float
    device: str
    training_seconds: float = 0.0
    samples_per_second: float = float("nan")
    epochs_trained_now: int = 0
    resumed_from_epoch: int = 0
    checkpoint_dir: Path | None = None
    extra: dict = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device!r}, but no CUDA device is available here. Use device='auto' "
                         "or 'cpu'.")
    return torch.device(device)


def data_fingerprint(*arrays: np.ndarray) -> str:
    """sha256 of the arrays' shapes, dtypes and bytes: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.shape}|{arr.dtype}|".encode())
        if arr.size:  # an empty split has no bytes (and memoryview cannot cast a zero-size view)
            digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def _check_inputs(name: str, embeddings: np.ndarray, chips: np.ndarray, image_size: int,
                  dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    embeddings = np.asarray(embeddings, dtype=np.float32)
    chips = np.asarray(chips)
    if embeddings.ndim != 2:
        raise InputError(f"{name}_embeddings has shape {embeddings.shape}; expected (N, d).")
    if dim is not None and embeddings.shape[1] != dim:
        raise InputError(f"{name}_embeddings has dimension {embeddings.shape[1]}, the training ones {dim}.")
    if not np.all(np.isfinite(embeddings)):
        raise InputError(f"{name}_embeddings contains NaN or infinite values; pass only the rows the "
                         "target embedded ('ok').")
    expected = (len(embeddings), image_size, image_size, 3)
    if chips.dtype != np.uint8 or chips.shape != expected:
        raise InputError(f"{name}_chips has shape {chips.shape} and dtype {chips.dtype}; expected uint8 "
                         f"{expected} (one aligned RGB chip of image_size={image_size} per embedding).")
    return embeddings, chips


def _atomic_torch_save(payload: dict, path: Path) -> None:
    with replacing(path, private=True) as tmp:   # weights that reconstruct faces: the owner's alone
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint weights-only (no pickled code is ever executed)."""
    try:
        with warnings.catch_warnings():   # torch's pickle-protocol warnings are noise here
            warnings.simplefilter("ignore")
            return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        # Not torch's advice to load with weights_only=False: that would run the file's code.
        raise InputError(f"checkpoint {str(path)!r} is damaged or not a checkpoint of this tool ({type(exc).__name__}); "
                         "it is never loaded unsafely. Delete it to start the training afresh.") from exc


def load_generator(path: Path) -> InversionGenerator:
    """Rebuild a trained generator from ``best.pt`` or ``last.pt`` (weights only), in eval mode.

    A checkpoint that loads but does not hold a generator (a key missing, a
    negative channel count, weights of another shape) is an InputError
    saying what is wrong with it, never a KeyError from deep inside torch.
    """
    ckpt = load_checkpoint(path)
    where = f"checkpoint {str(path)!r}"
    if not isinstance(ckpt, dict):
        raise InputError(f"{where} holds a {type(ckpt).__name__}, not a checkpoint of this tool.")
    for key in ("generator", "model"):
        if not isinstance(ckpt.get(key), dict):
            found = "no" if key not in ckpt else f"a {type(ckpt[key]).__name__} as its"
            raise InputError(f"{where} has {found} {key!r} key, not the network's "
                             f"{'settings' if key == 'generator' else 'weights'}.")
    try:
        model = InversionGenerator(**ckpt["generator"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: the network's settings {ckpt['generator']!r:.120} do not make a generator "
                         f"({exc}).") from None
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"{where}: its weights do not fit its network's settings "
                         f"({' '.join(str(exc).split())[:200]}).") from None
    return model.eval()


def _state_to_cpu(state: dict) -> dict:
    return {k: (v.detach().cpu().clone() if torch.is_tensor(v) else v) for k, v in state.items()}


def _optimizer_state_to_cpu(state: dict) -> dict:
    out = {"param_groups": state["param_groups"], "state": {}}
    for key, value in state["state"].items():
        out["state"][key] = _state_to_cpu(value)
    return out


@torch.no_grad()
def reconstruct(model: InversionGenerator, embeddings: np.ndarray, *, device: torch.device | str = "cpu",
                batch_size: int = DEFAULT_EVAL_BATCH_SIZE, amp: bool = False) -> np.ndarray:
    """Generate uint8 (N, H, W, 3) faces from embeddings, in eval mode, batch by batch."""
    device = torch.device(device)
    model.eval()
    embeddings = np.asarray(embeddings, dtype=np.float32)
    out = np.zeros((len(embeddings), model.image_size, model.image_size, 3), dtype=np.uint8)
    for start in range(0, len(embeddings), batch_size):
        batch = torch.from_numpy(embeddings[start:start + batch_size]).to(device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            images = model(batch)
        out[start:start + len(batch)] = to_uint8_images(images)
    return out


def evaluate(model: InversionGenerator, embeddings: np.ndarray, *, embed_fn: EmbedFn, metric: Metric,
             device: torch.device, batch_size: int = DEFAULT_EVAL_BATCH_SIZE, amp: bool = False,
             failure_distance: float | None = None, chips: np.ndarray | None = None) -> dict:
    """Reconstruct, embed through the target, compare: the validation round (see the module doc).

    Without ``embed_fn`` (precomputed vectors and no model to embed new
    images), the round scores the pixels instead: the mean squared error
    against the validation ``chips``, the only signal left.
    """
    images = reconstruct(model, embeddings, device=device, batch_size=batch_size, amp=amp)
    if embed_fn is None:
        if chips is None:
            raise InputError("a validation round without embed_fn needs the validation chips.")
        mse = float(np.mean((images.astype(np.float64) / 255.0 - chips.astype(np.float64) / 255.0) ** 2))
        return {"val_mean_distance": float("nan"), "val_failures": None, "val_score": mse}
    vectors, ok = embed_fn(images)
    # ``found`` False with a vector: the detector found no face in the
    # reconstruction; counted, not penalised (see the module doc).
    distances, has_vector, found = reconstruction_distances(embeddings, vectors, ok, metric)
    n_fail = int((~found).sum())
    n_missing = int((~has_vector).sum())
    if not has_vector.any():
        mean, score = float("nan"), float("inf")
    else:
        mean = float(distances[has_vector].mean())
        penalty = float(distances[has_vector].max()) if failure_distance is None else float(failure_distance)
        score = float((distances[has_vector].sum() + n_missing * penalty) / len(embeddings))
    return {"val_mean_distance": mean, "val_failures": n_fail, "val_score": score}


def stage_on_device(embeddings: np.ndarray, chips: np.ndarray,
                    device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training set on the device, once: float32 (N, d) and uint8 (N, 3, H, W)."""
    emb_dev = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(device)
    chips_dev = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).contiguous().to(device)
    return emb_dev, chips_dev


def place_model(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Move ``model`` to ``device``; on the CPU also to channels_last memory format.

    channels_last changes only how activations are laid out in memory (oneDNN
    picks other kernels), not the function: measured 1.15-1.3x faster training
    steps on a 2-core CPU.  Checkpoints are unaffected (``load_state_dict``
    copies values whatever the layout).  On CUDA the model is only moved.
    """
    device = torch.device(device)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cpu" else model


def make_optimizer(model: nn.Module, *, lr: float = DEFAULT_LR, betas: tuple[float, float] = DEFAULT_BETAS,
                   device: torch.device | str) -> torch.optim.Adam:
    """The method's optimiser (Adam, at PyTorch's defaults unless told otherwise) for ``model`` on ``device``.

    On the CPU it is PyTorch's fused Adam: the same update rule, done in one
    pass per tensor instead of about ten elementwise ops (measured 3x faster
    for this generator's ~3.8M parameters on a 2-core CPU; its state dict is
    the same, so checkpoints from either resume in the other).  On CUDA it is
    PyTorch's default implementation, as before.
    """
    fused = {"fused": True} if torch.device(device).type == "cpu" else {}
    return torch.optim.Adam(model.parameters(), lr=lr, betas=betas, **fused)


def identity_distance(images: torch.Tensor, embeddings: torch.Tensor, identity_model: nn.Module,
                      metric: Metric) -> torch.Tensor:
    """Mean distance between the target's embedding of ``images`` and ``embeddings``, differentiably.

    The white-box option: with the target's network in PyTorch (dlib's, via
    :mod:`audit.targets.dlib_torch`), the generator can be pushed towards
    reconstructions the target itself finds alike.  ``images`` (N, 3, H, W)
    in [0, 1] are the aligned chips the generator makes; they are resized to
    the network's input (150x150 for dlib) and scaled to 0..255 as it expects.
    """
    size = int(getattr(identity_model, "input_size", 150))
    resized = nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                        align_corners=False) * 255.0
    predicted = identity_model(resized)
    if metric == "cosine":
        return (1.0 - nn.functional.cosine_similarity(predicted, embeddings, dim=1)).mean()
    return (predicted - embeddings).pow(2).sum(1).add(1e-12).sqrt().mean()


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, chips_dev: torch.Tensor,
                embeddings_dev: torch.Tensor, batches: Iterable[torch.Tensor], *,
                noise: torch.Tensor | None = None, amp: bool = False,
                identity_model: nn.Module | None = None, identity_weight: float = 0.0,
                metric: Metric = "euclidean") -> torch.Tensor:
    """One optimisation step per index tensor in ``batches``; returns the summed loss (x batch size).

    Each batch is gathered from the device-resident tensors and converted
    to [0, 1] on the device: no copy from the host, no decoding.  The loss
    is the method's: MSE between the generated and the real chip, in fp32
    (under bf16 autocast only the network runs in bf16).
    """
    model.train()
    device = chips_dev.device
    total = torch.zeros((), device=device, dtype=torch.float64)
    for idx in batches:
        # index_select: measured 3x faster than advanced indexing for a uint8 gather on the CPU
        target = chips_dev.index_select(0, idx).float().div_(255.0)
        z = embeddings_dev.index_select(0, idx)
        if noise is not None:
            z = z + noise.index_select(0, idx)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            output = model(z)
        loss = nn.functional.mse_loss(output.float(), target)
        if identity_model is not None and identity_weight > 0:
            loss = loss + identity_weight * identity_distance(output, embeddings_dev.index_select(0, idx),
                                                              identity_model, metric)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * len(idx)
    return total


def _config_changes(saved: dict, config: TrainingConfig) -> list[str]:
    now = config.to_dict()
    changes = []
    for name in sorted(set(saved) | set(now)):
        if name in RESUMABLE_CHANGES:
            continue
        if saved.get(name) != now.get(name):
            changes.append(f"{name}: checkpoint {saved.get(name)!r}, now {now.get(name)!r}")
    return changes


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def train_generator(train_embeddings: np.ndarray, train_chips: np.ndarray, val_embeddings: np.ndarray,
                    val_chips: np.ndarray, *, embed_fn: EmbedFn | None, metric: Metric,
                    config: TrainingConfig = DEFAULT_TRAINING_CONFIG, checkpoint_dir: Path,
                    progress: bool = True, identity_model: nn.Module | None = None) -> TrainingResult:
    """Train (or resume training) the generator; return the best checkpoint's model.

    ``train_chips``/``val_chips`` are uint8 ``(N, S, S, 3)`` aligned chips
    with ``S == config.image_size``; ``embed_fn(images)`` embeds uint8
    reconstructions through the target and returns ``(vectors, ok)`` with
    NaN rows and ``False`` where it found no face.  ``val_chips`` are only
    checked (the selection compares embeddings, not pixels).  See the
    module doc for checkpoints, resume and selection.
    """
    check_metric(metric)
    train_embeddings, train_chips = _check_inputs("train", train_embeddings, train_chips, config.image_size, None)
    dim = train_embeddings.shape[1]
    val_embeddings, val_chips = _check_inputs("val", val_embeddings, val_chips, config.image_size, dim)
    if len(train_embeddings) < 2:
        raise InputError(f"train_embeddings has {len(train_embeddings)} rows; the generator needs at least 2 "
                         "training images (BatchNorm).")
    device = resolve_device(config.device)
    if config.amp and device.type != "cuda":
        raise InputError(f"amp=True needs a CUDA device, but training runs on {device.type!r}. Turn amp "
                         "off on the CPU (bf16 there is slower and changes results).")
    checkpoint_dir = private_folder(checkpoint_dir)
    run = _TrainingRun(config=config, metric=metric, device=device, checkpoint_dir=checkpoint_dir,
                       fingerprint=data_fingerprint(train_embeddings, train_chips, val_embeddings, val_chips),
                       dim=dim, identity_model=_frozen_identity_model(identity_model, config, device))
    run.resume_or_start()

    # The training set on the device, once: uint8 (N, 3, H, W).
    emb_dev, chips_dev = stage_on_device(train_embeddings, train_chips, device)
    starts, ends = batch_bounds(len(train_embeddings), config.batch_size)
    started = time.monotonic()
    # Counted in training samples, so the rate shown is the throughput (samples/s) the benchmarks report.
    per_epoch = ends[-1]
    with progress_bar(f"Training generator ({config.epochs} epochs)", config.epochs * per_epoch, enabled=progress,
                      unit="samples") as bar:
        bar.advance(run.start_epoch * per_epoch)
        for epoch in range(run.start_epoch + 1, config.epochs + 1):
            train_loss = run.train_epoch(epoch, chips_dev, emb_dev, starts, ends)
            entry = {"epoch": epoch, "train_loss": train_loss, "val_mean_distance": None,
                     "val_failures": None, "val_score": None}
            if len(val_embeddings) and (epoch % config.validate_every == 0 or epoch == config.epochs):
                entry.update(run.validate(epoch, val_embeddings, val_chips, embed_fn))
            elif not len(val_embeddings) and epoch == config.epochs:
                run.best = {"epoch": epoch, "score": float("nan"), "val_mean_distance": float("nan")}
            run.history.append(entry)
            run.save(epoch)
            bar.advance(per_epoch)
    return run.finish(started)


def batch_bounds(n: int, batch_size: int) -> tuple[list[int], list[int]]:
    """Start and end of each batch of an epoch; a last batch of one sample (it would break BatchNorm)
    is folded into the one before."""
    bs = min(batch_size, n)
    starts = list(range(0, n, bs))
    if n - starts[-1] < 2:
        starts = starts[:-1]
    return starts, starts[1:] + [n]


def _frozen_identity_model(identity_model: nn.Module | None, config: TrainingConfig,
                           device: torch.device) -> nn.Module | None:
    """The target's network for the identity loss, on the device, in eval mode, its weights frozen."""
    if config.identity_weight <= 0:
        return identity_model
    if identity_model is None:
        raise InputError(f"identity_weight={config.identity_weight!r} needs the target's network in PyTorch "
                         "(a white-box target such as dlib); pass identity_model or set it to 0.")
    identity_model = identity_model.to(device).eval()
    for parameter in identity_model.parameters():
        parameter.requires_grad_(False)
    return identity_model


@dataclass
class _TrainingRun:
    """The state of one training run between epochs: what a checkpoint holds, and how it is written.

    Kept in one object so that an epoch, its validation and its checkpoint
    see the same model, optimiser, random stream and best-so-far.
    """

    config: TrainingConfig
    metric: Metric
    device: torch.device
    checkpoint_dir: Path
    fingerprint: str
    dim: int
    identity_model: nn.Module | None = None
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    best: dict = field(default_factory=lambda: {"epoch": 0, "score": float("inf"), "val_mean_distance": float("nan")})
    train_seconds: float = 0.0
    samples_done: int = 0

    def __post_init__(self) -> None:
        config = self.config
        # Everything random is drawn from this generator, on the CPU, whatever the device.
        self.rng = torch.Generator(device="cpu")
        self.rng.manual_seed(config.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = InversionGenerator(self.dim, image_size=config.image_size, base_channels=config.base_channels,
                                       upsampling=config.upsampling)
        self.model = place_model(model, self.device)
        self.optimizer = make_optimizer(self.model, lr=config.lr, betas=config.betas, device=self.device)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.last_path = self.checkpoint_dir / LAST_CHECKPOINT
        self.best_path = self.checkpoint_dir / BEST_CHECKPOINT

    def resume_or_start(self) -> None:
        """Continue from ``last.pt`` when it was made with these settings and data; refuse it otherwise."""
        if not self.last_path.exists():
            self.best_path.unlink(missing_ok=True)  # a stale best.pt must never outlive its run
            return
        last_path = self.last_path
        ckpt = load_checkpoint(last_path)
        try:
            self._resume(ckpt)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError, RecursionError) as exc:
            raise InputError(f"checkpoint {str(last_path)!r} is damaged ({type(exc).__name__}: {str(exc)[:200]}); "
                             "delete it to start the training afresh.") from exc
        log.info("resuming generator training at epoch %d of %d", self.start_epoch + 1, self.config.epochs)

    def _resume(self, ckpt: dict) -> None:
        """Load ``last.pt``'s state; a KeyError or TypeError here means the file is damaged."""
        last_path, config = self.last_path, self.config
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
            raise InputError(f"checkpoint {str(last_path)!r} has format {found!r}, this version "
                             f"writes {CHECKPOINT_FORMAT}. Use a new checkpoint folder.")
        changes = _config_changes(ckpt["config"], config)
        if ckpt["data_fingerprint"] != self.fingerprint:
            changes.append("training/validation data (embeddings or chips) differ")
        if changes:
            raise InputError(f"checkpoint {str(last_path)!r} was made with other settings or data, so it "
                             f"cannot be resumed: {'; '.join(changes)}. Use the same settings and data, or "
                             "another checkpoint folder (or delete this one) to start afresh.")
        if ckpt["epoch"] > config.epochs:
            raise InputError(f"checkpoint {str(last_path)!r} is at epoch {ckpt['epoch']}, past epochs="
                             f"{config.epochs}. Ask for at least {ckpt['epoch']} epochs or use another folder.")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.rng.set_state(ckpt["rng_state"])
        self.history = json.loads(ckpt["history"])
        if not isinstance(self.history, list) or not all(isinstance(h, dict) for h in self.history):
            raise ValueError("its training history is not a list of epochs")
        self.best = {"epoch": ckpt["best"]["epoch"], "score": float(ckpt["best"]["score"]),
                     "val_mean_distance": float(ckpt["best"]["val_mean_distance"])}
        self.start_epoch = int(ckpt["epoch"])

    def train_epoch(self, epoch: int, chips_dev: torch.Tensor, emb_dev: torch.Tensor, starts: list[int],
                    ends: list[int]) -> float:
        """One pass over the training set in a fresh random order; the mean loss per sample."""
        config, device = self.config, self.device
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr_at(epoch)
        t0 = time.monotonic()
        n = len(emb_dev)
        perm = torch.randperm(n, generator=self.rng).to(device)
        noise = (torch.randn(n, self.dim, generator=self.rng).mul_(config.noise_std).to(device)
                 if config.noise_std > 0 else None)
        batches = (perm[s:e] for s, e in zip(starts, ends))
        total_loss = train_steps(self.model, self.optimizer, chips_dev, emb_dev, batches, noise=noise,
                                 amp=self.use_amp, identity_model=self.identity_model,
                                 identity_weight=config.identity_weight, metric=self.metric)
        train_loss = float(total_loss.item()) / ends[-1]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.train_seconds += time.monotonic() - t0
        self.samples_done += ends[-1]
        return train_loss

    def validate(self, epoch: int, val_embeddings: np.ndarray, val_chips: np.ndarray,
                 embed_fn: EmbedFn | None) -> dict:
        """Score the model on the validation people; keep it as the best when it scores lower."""
        config = self.config
        val = evaluate(self.model, val_embeddings, embed_fn=embed_fn, metric=self.metric, device=self.device,
                       batch_size=config.eval_batch_size, amp=self.use_amp,
                       failure_distance=config.failure_distance, chips=val_chips)
        if val["val_score"] < self.best["score"] or self.best["epoch"] == 0:
            self.best = {"epoch": epoch, "score": val["val_score"], "val_mean_distance": val["val_mean_distance"]}
        return {"val_mean_distance": _finite_or_none(val["val_mean_distance"]),
                "val_failures": val["val_failures"], "val_score": _finite_or_none(val["val_score"])}

    def save(self, epoch: int) -> None:
        """``best.pt`` when this epoch is the best, then ``last.pt`` and the history: a kill loses no epoch."""
        config, model = self.config, self.model
        model_state = _state_to_cpu(model.state_dict())
        if self.best["epoch"] == epoch:
            _atomic_torch_save({"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model_state,
                                "generator": model.hyperparameters(), "config": config.to_dict(),
                                "val_mean_distance": float(self.best["val_mean_distance"]),
                                "val_score": float(self.best["score"]), "data_fingerprint": self.fingerprint},
                               self.best_path)
        _atomic_torch_save({"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model_state,
                            "optimizer": _optimizer_state_to_cpu(self.optimizer.state_dict()),
                            "rng_state": self.rng.get_state(), "history": json.dumps(self.history),
                            "generator": model.hyperparameters(), "config": config.to_dict(),
                            "best": {"epoch": int(self.best["epoch"]), "score": float(self.best["score"]),
                                     "val_mean_distance": float(self.best["val_mean_distance"])},
                            "data_fingerprint": self.fingerprint}, self.last_path)
        _write_history(self.checkpoint_dir / HISTORY_FILE, self.history)

    def finish(self, started: float) -> TrainingResult:
        """Load the best checkpoint (the last epoch's where nothing was validated) and describe the run."""
        config, model = self.config, self.model
        if not self.best_path.exists():
            _atomic_torch_save({"format": CHECKPOINT_FORMAT, "epoch": config.epochs,
                                "model": _state_to_cpu(model.state_dict()), "generator": model.hyperparameters(),
                                "config": config.to_dict(), "val_mean_distance": float("nan"),
                                "val_score": float("nan"), "data_fingerprint": self.fingerprint}, self.best_path)
            self.best["epoch"] = config.epochs
        best_ckpt = load_checkpoint(self.best_path)
        model.load_state_dict(best_ckpt["model"])
        model.eval()
        return TrainingResult(
            model=model, history=self.history, best_epoch=int(best_ckpt["epoch"]),
            best_val_mean_distance=float(best_ckpt["val_mean_distance"]), device=str(self.device),
            training_seconds=time.monotonic() - started,
            samples_per_second=self.samples_done / self.train_seconds if self.train_seconds > 0 else float("nan"),
            epochs_trained_now=config.epochs - self.start_epoch, resumed_from_epoch=self.start_epoch,
            checkpoint_dir=self.checkpoint_dir)


def _write_history(path: Path, history: list[dict]) -> None:
    write_json_atomic(path, {"history": history}, private=True)
