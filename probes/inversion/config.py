"""The generator's training settings, validated, importable without torch.

The command line checks them before any image is embedded (a bad value
must not cost an embedding pass), so they live apart from the training
loop and its torch import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from audit.errors import InputError
from probes.inversion.defaults import (DEFAULT_BASE_CHANNELS, DEFAULT_BATCH_SIZE, DEFAULT_BETAS, DEFAULT_DEVICE,
                                       DEFAULT_EPOCHS, DEFAULT_EVAL_BATCH_SIZE, DEFAULT_IMAGE_SIZE, DEFAULT_LR,
                                       DEFAULT_NOISE_STD, DEFAULT_VALIDATE_EVERY, MAX_BASE_CHANNELS,
                                       MAX_SEED)

#: Output sizes the generator can draw.
IMAGE_SIZES = (64, 128)
#: ``transposed`` (the method's) or ``resize`` (nearest-neighbour upsampling, then a convolution).
UPSAMPLING = ("transposed", "resize")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainingConfig:
    """The generator's training settings, validated at construction."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    betas: tuple[float, float] = DEFAULT_BETAS
    noise_std: float = DEFAULT_NOISE_STD
    validate_every: int = DEFAULT_VALIDATE_EVERY
    seed: int = 0
    device: str = DEFAULT_DEVICE
    amp: bool = False
    image_size: int = DEFAULT_IMAGE_SIZE
    base_channels: int = DEFAULT_BASE_CHANNELS
    failure_distance: float | None = None
    eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE
    #: Weight of the white-box identity term (0: off, the method's black-box
    #: recipe).  See :func:`identity_distance`.
    identity_weight: float = 0.0
    #: ``"transposed"`` (the method's) or ``"resize"`` upsampling in the generator.
    upsampling: str = "transposed"
    #: ``"constant"`` (the method's) or ``"cosine"``: the learning rate decays to 0 by the last epoch.
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "validate_every", "eval_batch_size", "base_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}={value!r}, must be a positive integer.")
        if self.base_channels > MAX_BASE_CHANNELS:
            raise InputError(f"base_channels={self.base_channels!r}, must be at most {MAX_BASE_CHANNELS} "
                             f"(the method's is {DEFAULT_BASE_CHANNELS}).")
        if self.batch_size < 2:
            raise InputError(f"batch_size={self.batch_size!r}, must be at least 2 (BatchNorm needs two "
                             "samples per batch).")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            raise InputError(f"lr={self.lr!r}, must be a number in (0, 1), e.g. {DEFAULT_LR}.")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise InputError(f"betas={self.betas!r}, must be two numbers in [0, 1), e.g. {DEFAULT_BETAS}.")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        if not (isinstance(self.noise_std, (int, float)) and self.noise_std >= 0 and math.isfinite(self.noise_std)):
            raise InputError(f"noise_std={self.noise_std!r}, must be a finite number >= 0 (0 turns it off).")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"seed={self.seed!r}, must be a whole number from 0 to {MAX_SEED}.")
        if not (self.device in ("auto", "cpu") or str(self.device).startswith("cuda")):
            raise InputError(f"device={self.device!r}, must be 'auto', 'cpu', 'cuda' or 'cuda:N'.")
        if self.image_size not in IMAGE_SIZES:
            raise InputError(f"image_size={self.image_size!r}, must be one of {IMAGE_SIZES}.")
        if not (isinstance(self.identity_weight, (int, float)) and self.identity_weight >= 0
                and math.isfinite(self.identity_weight)):
            raise InputError(f"identity_weight={self.identity_weight!r}, must be a finite number >= 0 "
                             "(0 turns the white-box identity term off).")
        if self.upsampling not in UPSAMPLING:
            raise InputError(f"upsampling={self.upsampling!r}, must be one of {UPSAMPLING}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"lr_schedule={self.lr_schedule!r}, must be one of {LR_SCHEDULES}.")
        if self.failure_distance is not None and not (
                isinstance(self.failure_distance, (int, float)) and self.failure_distance >= 0):
            raise InputError(f"failure_distance={self.failure_distance!r}, must be None (the round's worst "
                             "distance) or a number >= 0.")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["betas"] = list(self.betas)
        # Settings at the method's value are left out, so that checkpoints and generator keys
        # made before these options existed still match.
        for name, method_value in (("upsampling", "transposed"), ("lr_schedule", "constant")):
            if data[name] == method_value:
                del data[name]
        return data


    def lr_at(self, epoch: int) -> float:
        """The learning rate for ``epoch`` (1-based) under the schedule."""
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / self.epochs))
        return self.lr
