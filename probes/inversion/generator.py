"""The inversion generator: a face embedding in, a 64x64 (or 128x128) RGB face out.

The architecture is the DCGAN generator (Radford et al. 2016) as used in
"Inverting Facial Recognition Models" (2019): the embedding is projected by
a linear layer to a 4x4 map of ``base_channels`` channels, then every stage
doubles the size with a transposed convolution (kernel 4, stride 2,
padding 1: exactly x2) and halves the channels; the last stage outputs 3
channels through a sigmoid, so pixels are in [0, 1] like the training
targets (chips / 255).

    embedding (N, d)
      -> Linear(d, 4*4*C) -> BatchNorm1d -> ReLU -> reshape (N, C, 4, 4)
      -> [ConvTranspose2d -> BatchNorm2d -> ReLU]  4 -> 8 -> 16 -> 32   (C, C/2, C/4, C/8)
      -> ConvTranspose2d(C/8, 3) -> sigmoid              32 -> 64
    image (N, 3, 64, 64) in [0, 1]

For 128x128 there is one more hidden stage (C/16 channels).  The network is
trained only on (embedding, aligned chip) pairs: it never sees the target's
weights, which is what makes it a black-box probe.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from probes.inversion.config import IMAGE_SIZES, UPSAMPLING
from probes.inversion.defaults import (DEFAULT_BASE_CHANNELS, DEFAULT_IMAGE_SIZE, MAX_BASE_CHANNELS,
                                       MAX_PROJECTION_WEIGHTS)

#: The projection's spatial size: 4x4, as in DCGAN.
START_SIZE = 4


#: The sub-pixel kernel's taps, per dimension: output phase r (row 2m + r) and
#: tap j (input row m + j - 1) use the 4x4 kernel's index ``3 + r - 2j``; 4
#: marks the taps outside 0..3, which read a zero appended to the kernel.
_SUBPIXEL_TAPS = ((3, 1, 4), (4, 2, 0))


def subpixel_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A ConvTranspose2d(k=4, s=2, p=1) weight ``(Cin, Cout, 4, 4)`` as the equivalent
    Conv2d(k=3, p=1) weight ``(4*Cout, Cin, 3, 3)`` whose output ``pixel_shuffle(2)``
    turns into the transposed convolution's (channel ``4c + 2ry + rx`` is phase
    ``(ry, rx)`` of output channel ``c``).  Built by indexing, so gradients reach ``weight``."""
    cin, cout = weight.shape[:2]
    taps = torch.tensor(_SUBPIXEL_TAPS, device=weight.device)
    padded = F.pad(weight, (0, 1, 0, 1))  # index 4 reads 0
    kernel = padded[:, :, taps[:, None, :, None], taps[None, :, None, :]]  # (Cin, Cout, ry, rx, jy, jx)
    return kernel.permute(1, 2, 3, 0, 4, 5).reshape(4 * cout, cin, 3, 3)


class SubPixelConvTranspose2d(nn.ConvTranspose2d):
    """ConvTranspose2d(kernel 4, stride 2, padding 1) computed as a 3x3 convolution
    to ``4*Cout`` channels followed by ``pixel_shuffle(2)`` (the sub-pixel
    decomposition): the same function of the same parameters, so it loads the
    same state dict, to float rounding.

    Not used by :class:`InversionGenerator`: on a 2-core AVX-512 CPU (torch
    2.13, oneDNN 3.12) it measured 1.3-2x *slower* than oneDNN's native
    transposed convolution for forward+backward at batch 200 (the 3x3 kernel
    does 2.25x the multiplications, a quarter of them by zeros).  It is kept
    for ``benchmarks/bench_training.py`` and for hardware where that differs.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=bias)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None:
            raise ValueError("SubPixelConvTranspose2d always doubles the size; output_size must be None.")
        bias = None if self.bias is None else self.bias.repeat_interleave(4)
        return F.pixel_shuffle(F.conv2d(x, subpixel_kernel(self.weight), bias, padding=1), 2)


class UpBlock(nn.Module):
    """Double the spatial size, change the channels: ConvTranspose2d -> BatchNorm2d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # No bias: BatchNorm's shift makes it redundant (DCGAN does the same).
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1,
                                       bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.bn(x)
        return self.relu(x)


class ResizeConvBlock(nn.Module):
    """Double the spatial size by nearest-neighbour resizing, then a 3x3 convolution -> BN -> ReLU.

    The alternative to a transposed convolution that Odena et al. ("Deconvolution
    and checkerboard artifacts", Distill 2016) recommend: every output pixel gets
    the same number of kernel taps, so no checkerboard pattern.  An option
    (``upsampling="resize"``), measured against the method's transposed
    convolutions in ``benchmarks/inversion_variants.py``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.relu(self.bn(self.conv(x)))


class InversionGenerator(nn.Module):
    """DCGAN-style generator from an embedding to an RGB image in [0, 1].

    ``embedding_dim`` is the target's vector size (128 for dlib, 512 for
    ArcFace, any other for a plugin); ``image_size`` 64 (the method's) or
    128; ``base_channels`` the channels of the 4x4 map, halved at every
    stage; ``upsampling`` ``"transposed"`` (the method's) or ``"resize"``
    (:class:`ResizeConvBlock`).
    """

    def __init__(self, embedding_dim: int, image_size: int = DEFAULT_IMAGE_SIZE,
                 base_channels: int = DEFAULT_BASE_CHANNELS, upsampling: str = "transposed") -> None:
        super().__init__()
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim={embedding_dim!r}, must be a positive integer "
                             "(the target's vector size, e.g. 128 for dlib).")
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size={image_size!r}, must be one of {IMAGE_SIZES}.")
        n_stages = int(math.log2(image_size // START_SIZE))  # 4 for 64, 5 for 128
        min_base = 2 ** (n_stages - 1)
        if not isinstance(base_channels, int) or base_channels < min_base:
            raise ValueError(f"base_channels={base_channels!r}, must be an integer >= {min_base} so that "
                             f"it can be halved {n_stages - 1} times for image_size={image_size}.")
        if base_channels > MAX_BASE_CHANNELS:
            raise ValueError(f"base_channels={base_channels!r}, must be at most {MAX_BASE_CHANNELS}.")
        if embedding_dim * base_channels * START_SIZE * START_SIZE > MAX_PROJECTION_WEIGHTS:
            raise ValueError(f"embedding_dim={embedding_dim!r} with base_channels={base_channels!r} would need "
                             f"more than {MAX_PROJECTION_WEIGHTS:,} projection weights; use fewer channels.")
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling={upsampling!r}, must be one of {UPSAMPLING}.")
        self.embedding_dim = embedding_dim
        self.image_size = image_size
        self.base_channels = base_channels
        self.upsampling = upsampling

        self.project = nn.Linear(embedding_dim, base_channels * START_SIZE * START_SIZE, bias=False)
        self.project_bn = nn.BatchNorm1d(base_channels * START_SIZE * START_SIZE)
        self.project_relu = nn.ReLU(inplace=True)
        channels = [base_channels // 2 ** i for i in range(n_stages)]  # 512, 256, 128, 64 (, 32)
        block = UpBlock if upsampling == "transposed" else ResizeConvBlock
        self.blocks = nn.Sequential(*[block(c_in, c_out) for c_in, c_out in zip(channels, channels[1:])])
        if upsampling == "transposed":
            self.to_rgb = nn.ConvTranspose2d(channels[-1], 3, kernel_size=4, stride=2, padding=1)
        else:
            self.to_rgb = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                        nn.Conv2d(channels[-1], 3, kernel_size=3, padding=1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DCGAN's initialisation: weights N(0, 0.02), BatchNorm scales N(1, 0.02), shifts 0."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = self.project(embeddings)
        x = self.project_bn(x)
        x = self.project_relu(x)
        x = x.view(-1, self.base_channels, START_SIZE, START_SIZE)
        x = self.blocks(x)
        x = self.to_rgb(x)
        return torch.sigmoid(x)

    def hyperparameters(self) -> dict:
        """What it takes to rebuild this network (stored in every checkpoint)."""
        params = {"embedding_dim": self.embedding_dim, "image_size": self.image_size,
                  "base_channels": self.base_channels}
        if self.upsampling != "transposed":   # checkpoints of the method's network keep their old form
            params["upsampling"] = self.upsampling
        return params


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> numpy uint8 (N, H, W, 3), rounded, for the target and for PNGs."""
    return (images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
            .permute(0, 2, 3, 1).contiguous().cpu().numpy())
