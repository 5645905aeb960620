"""Generator training throughput: the published recipe against ours, on the same data.

(a) **published**: a torch ``Dataset`` that opens and decodes one PNG chip
    per item, a ``DataLoader`` (batch 300, shuffled) that collates them into
    float32 batches on the host, each batch copied to the device, fp32,
    PyTorch's default Adam;
(b) **ours**: :func:`probes.inversion.training.train_steps` on the whole
    training set staged once on the device as uint8, batches taken as index
    slices of a permutation and converted on the device, the model placed by
    :func:`~probes.inversion.training.place_model` (channels_last on a CPU)
    and the optimiser :func:`~probes.inversion.training.make_optimizer` gives
    (fused Adam on a CPU): exactly what ``train_generator`` runs.

Separate rows time each change alone (ours' input pipeline with a
contiguous model and the default Adam; plus the fused Adam; plus
channels_last; and, measured but not adopted, the sub-pixel convolution :class:`~probes.inversion.generator.SubPixelConvTranspose2d`),
optionally a larger batch and bf16 autocast on CUDA.  All train the same
:class:`~probes.inversion.generator.InversionGenerator` with the same Adam
settings for a fixed number of steps after warm-up steps.  The variants run
in turn, ``--repeats`` rounds, and the table gives the median samples per
second and the median of each round's ratio to (a): a shared machine's
noise then hits every variant alike.  A second table times the input
pipeline alone (no model), which is the part (a) and (b) differ in most: on
a CPU the model's arithmetic dominates a step, on a GPU the input pipeline
does.

Example (2-core CPU, about 5 minutes)::

    PYTHONPATH=. python benchmarks/bench_training.py --steps 2 --repeats 3
    PYTHONPATH=. python benchmarks/bench_training.py --device cuda --steps 50 --large-batch 1000 --amp
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from probes.inversion.generator import InversionGenerator, SubPixelConvTranspose2d
from probes.inversion.training import (DEFAULT_BETAS, DEFAULT_LR, make_optimizer, place_model, stage_on_device,
                                       train_steps)


class PngChips(Dataset):
    """The published recipe's input: one PNG decoded per item."""

    def __init__(self, paths: list[Path], embeddings: np.ndarray) -> None:
        self.paths = paths
        self.embeddings = embeddings

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[i]) as im:
            chip = np.array(im.convert("RGB"), dtype=np.uint8)
        image = torch.from_numpy(chip).permute(2, 0, 1).float().div(255.0)
        return torch.from_numpy(self.embeddings[i]), image


def make_data(folder: Path, n: int, dim: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n, dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    chips = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    paths = []
    for i, chip in enumerate(chips):
        path = folder / f"{i:06d}.png"
        Image.fromarray(chip).save(path)
        paths.append(path)
    return embeddings, chips, paths


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_adam(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The published recipe's optimiser: PyTorch's default Adam with DCGAN's settings."""
    return torch.optim.Adam(model.parameters(), lr=DEFAULT_LR, betas=DEFAULT_BETAS)


def ours_adam(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    return make_optimizer(model, lr=DEFAULT_LR, betas=DEFAULT_BETAS, device=device)


def as_is(model: torch.nn.Module) -> torch.nn.Module:
    return model


def ours_placement(model: torch.nn.Module) -> torch.nn.Module:
    """What ``train_generator`` does to the model (channels_last on a CPU)."""
    return place_model(model, next(model.parameters()).device)


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    return model.to(memory_format=torch.channels_last)


def subpixel(model: torch.nn.Module) -> torch.nn.Module:
    """Every ConvTranspose2d replaced by its exact sub-pixel equivalent, sharing the parameters."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.ConvTranspose2d:
                layer = SubPixelConvTranspose2d(child.in_channels, child.out_channels, bias=child.bias is not None)
                layer.weight = child.weight
                layer.bias = child.bias
                setattr(parent, name, layer)
    return model


def new_model(dim: int, size: int, base_channels: int, device: torch.device, seed: int, *,
              transform=as_is, optimizer=default_adam):
    torch.manual_seed(seed)
    model = transform(InversionGenerator(dim, image_size=size, base_channels=base_channels).to(device))
    return model, optimizer(model, device)


def bench_published(dataset: PngChips, *, batch: int, steps: int, warmup: int, workers: int, dim: int,
                    size: int, base_channels: int, device: torch.device, seed: int) -> float:
    model, optimizer = new_model(dim, size, base_channels, device, seed)
    model.train()
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    done, started = 0, None
    while True:
        for z, target in loader:
            if done == warmup:
                sync(device)
                started = time.perf_counter()
            z, target = z.to(device, non_blocking=True), target.to(device, non_blocking=True)
            loss = torch.nn.functional.mse_loss(model(z), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == warmup + steps:
                sync(device)
                return steps * batch / (time.perf_counter() - started)


def bench_ours(embeddings: np.ndarray, chips: np.ndarray, *, batch: int, steps: int, warmup: int, amp: bool,
               dim: int, size: int, base_channels: int, device: torch.device, seed: int,
               transform=ours_placement, optimizer=ours_adam) -> float:
    model, optimizer = new_model(dim, size, base_channels, device, seed, transform=transform, optimizer=optimizer)
    emb_dev, chips_dev = stage_on_device(embeddings, chips, device)
    g = torch.Generator().manual_seed(seed)
    n = len(embeddings)

    def batches(count: int):
        perm = torch.randperm(n, generator=g).to(device)
        pos = 0
        for _ in range(count):
            if pos + batch > n:
                perm, pos = torch.randperm(n, generator=g).to(device), 0
            yield perm[pos:pos + batch]
            pos += batch

    train_steps(model, optimizer, chips_dev, emb_dev, batches(warmup), amp=amp)
    sync(device)
    started = time.perf_counter()
    train_steps(model, optimizer, chips_dev, emb_dev, batches(steps), amp=amp)
    sync(device)
    return steps * batch / (time.perf_counter() - started)


def bench_inputs_only(dataset: PngChips, chips: np.ndarray, *, batch: int, n_batches: int, workers: int,
                      device: torch.device) -> tuple[float, float]:
    """Samples per second of the input pipelines alone (batches delivered on the device, as float)."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda")
    sync(device)
    started, count = time.perf_counter(), 0
    for i, (z, target) in enumerate(loader):
        target.to(device).sum()
        count += len(target)
        if i + 1 == n_batches:
            break
    sync(device)
    published = count / (time.perf_counter() - started)
    _, chips_dev = stage_on_device(np.zeros((len(chips), 1), np.float32), chips, device)
    perm = torch.randperm(len(chips)).to(device)
    sync(device)
    started, count = time.perf_counter(), 0
    for i in range(n_batches):
        idx = perm[(i * batch) % (len(chips) - batch + 1):][:batch]
        chips_dev.index_select(0, idx).float().div_(255.0).sum()
        count += batch
    sync(device)
    return published, count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--n", type=int, default=4000, help="synthetic samples (default 4000)")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension (default 128, dlib)")
    parser.add_argument("--image-size", type=int, default=64, choices=(64, 128))
    parser.add_argument("--base-channels", type=int, default=512, help="generator width (default 512)")
    parser.add_argument("--batch", type=int, default=300, help="the method's batch size (default 300)")
    parser.add_argument("--large-batch", type=int, default=0,
                        help="also time ours with this batch (0: off; e.g. 1000 on a GPU)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (default 3)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of all variants, medians reported (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for (a) (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for ours (CUDA only)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if args.repeats < 1 or args.steps < 1:
        parser.error("--steps and --repeats must be at least 1.")
    if args.amp and device.type != "cuda":
        parser.error("--amp needs a CUDA device.")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'CPU'}, " \
        f"{args.threads} threads"
    common = dict(dim=args.dim, size=args.image_size, base_channels=args.base_channels, device=device,
                  seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        t0 = time.perf_counter()
        embeddings, chips, paths = make_data(Path(tmp), args.n, args.dim, args.image_size, args.seed)
        print(f"data: {args.n} PNG chips {args.image_size}x{args.image_size} written in "
              f"{time.perf_counter() - t0:.1f}s; device: {device} ({name}); torch {torch.__version__}",
              flush=True)
        dataset = PngChips(paths, embeddings)
        precision = ", bf16" if args.amp else ", fp32"
        timed = dict(steps=args.steps, warmup=args.warmup, **common)
        variants = [
            (f"(a) published: PNG per item, DataLoader({args.workers} workers), batch {args.batch}, fp32, Adam",
             lambda: bench_published(dataset, batch=args.batch, workers=args.workers, **timed)),
            (f"(b) ours: device uint8 + channels_last + fused Adam (CPU), batch {args.batch}{precision}",
             lambda: bench_ours(embeddings, chips, batch=args.batch, amp=args.amp, **timed)),
            ("    device uint8 input alone (contiguous, default Adam)",
             lambda: bench_ours(embeddings, chips, batch=args.batch, amp=args.amp, transform=as_is,
                                optimizer=default_adam, **timed)),
            ("    device uint8 + fused Adam alone",
             lambda: bench_ours(embeddings, chips, batch=args.batch, amp=args.amp, transform=as_is, **timed)),
            ("    device uint8 + channels_last alone",
             lambda: bench_ours(embeddings, chips, batch=args.batch, amp=args.amp, transform=channels_last,
                                optimizer=default_adam, **timed)),
            ("    (b) + sub-pixel conv2d (not adopted)",
             lambda: bench_ours(embeddings, chips, batch=args.batch, amp=args.amp,
                                transform=lambda m: channels_last(subpixel(m)), **timed)),
        ]
        if args.large_batch:
            steps = max(1, args.steps * args.batch // args.large_batch)
            variants.append((f"(b') ours, batch {args.large_batch}{precision}",
                             lambda: bench_ours(embeddings, chips, batch=args.large_batch, amp=args.amp,
                                                **{**timed, "steps": steps})))
        rates: list[list[float]] = [[] for _ in variants]
        for round_ in range(args.repeats):
            for (label, run), got in zip(variants, rates):
                got.append(run())
                print(f"round {round_ + 1}: {label.strip()}: {got[-1]:.1f} samples/s", flush=True)
        rows = [(label, statistics.median(got), statistics.median(r / p for r, p in zip(got, rates[0])))
                for (label, _), got in zip(variants, rates)]
        n_batches = max(1, min(args.n // args.batch, 20))
        pub_in, ours_in = bench_inputs_only(dataset, chips, batch=args.batch, n_batches=n_batches,
                                            workers=args.workers, device=device)

    width = max(len(r[0]) for r in rows) + 2
    print(f"\nTraining steps ({args.steps} timed after {args.warmup} warm-up, {args.repeats} rounds, medians; "
          f"model base_channels={args.base_channels}, dim {args.dim}; {name}):")
    print(f"{'variant':<{width}}{'samples/s':>12}{'ratio':>8}")
    for label, rate, ratio in rows:
        print(f"{label:<{width}}{rate:>12.1f}{ratio:>7.2f}x")
    print(f"\nInput pipeline alone ({n_batches} batches of {args.batch}, delivered on {device} as float):")
    print(f"{'(a) PNG decode + DataLoader':<{width}}{pub_in:>12.0f}{1.0:>7.2f}x")
    print(f"{'(b) device uint8 index slice':<{width}}{ours_in:>12.0f}{ours_in / pub_in:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
