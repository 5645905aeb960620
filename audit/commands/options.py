"""Options that several commands share, as reusable decorators."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import click

from audit.data.remote import is_url
from audit.distributed import parse_scheduler
from audit.errors import InputError
from audit.faces import DEFAULT_MIN_SCORE, DEFAULT_UPSAMPLE, FaceConfig
from audit.outputs import write_atomic, writing
from audit.threads import set_threads
from probes.inversion.defaults import (DEFAULT_BASE_CHANNELS, DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR,
                                       DEFAULT_VALIDATE_EVERY, MAX_BASE_CHANNELS, MAX_SEED)

# Every integer option has a largest value as well as a smallest: click's plain int takes
# -1 and 10**30 alike, and numpy, torch or a loop over the value then fail deep inside a run
# (or never end).  The limits are far past any real use, each with its reason.
#: Epochs and validation rounds: the method trains 150 epochs.
MAX_EPOCHS = 100_000
#: Faces per training step (the method's 300; a large GPU takes a few thousand).
MAX_BATCH_SIZE = 1_000_000
#: Images per group or cell: more than any dataset holds.
MAX_IMAGES = 1_000_000_000
#: Worker processes on one machine.
MAX_WORKERS = 1024


def seed_option(help_text: str) -> Callable:
    """``--seed``: 0 to :data:`MAX_SEED` (numpy refuses a negative seed, torch one past 64 bits)."""
    return click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
                        help=f"{help_text}.")


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also refuses nan and inf, which pass any bound (nan compares false with all)."""

    name = "float"

    def _describe_range(self) -> str:
        return super()._describe_range() if self.min is not None or self.max is not None else "finite"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def target_options(func: Callable) -> Callable:
    func = click.option("--target-option", "target_option", multiple=True, metavar="KEY=VALUE",
                        help="An option of the target (repeatable), e.g. engine=dlib, threshold=0.55. "
                             "See docs/targets.md.")(func)
    func = click.option("--target", "-t", "target_spec", default="dlib", show_default=True,
                        help="The model under audit: dlib, clarifai, onnx:PATH, precomputed:FILE, or a "
                             "plugin's name ('audit targets' lists them).")(func)
    return func


class DatasetLocation(click.ParamType):
    """A dataset folder that exists here, or a URL (file://, s3://, gcs://) left to fsspec."""

    name = "folder|URL"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and is_url(value):
            return value
        return click.Path(exists=True, file_okay=False, path_type=Path).convert(value, param, ctx)


def dataset_option(func: Callable) -> Callable:
    return click.option("--dataset", "-d", "dataset_dir", required=True, type=DatasetLocation(),
                        help="A dataset folder with a manifest.csv ('audit dataset import' makes one), "
                             "or its URL (file://, s3://, gcs://) for cluster workers to read.")(func)


def _check_scheduler(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a malformed --scheduler before the dataset is read; the string itself is kept."""
    if value is not None:
        try:
            parse_scheduler(value)
        except InputError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def scheduler_option(func: Callable) -> Callable:
    return click.option("--scheduler", metavar="ADDRESS|local[:N]", default=None, callback=_check_scheduler,
                        help="Run detection, alignment and embedding on a Dask cluster: the address "
                             "of a running 'dask scheduler' (tcp://host:8786), or local[:N] for N "
                             "worker processes here. See docs/cluster.md.")(func)


def cache_options(func: Callable) -> Callable:
    func = click.option("--no-cache", is_flag=True,
                        help="Neither read nor write the embedding cache (for benchmarks).")(func)
    func = click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=Path),
                        help="Embedding cache file (default: $AUDIT_CACHE or "
                             "~/.cache/face-bias-audit/cache.sqlite; created readable by you only).")(func)
    return func


#: More compute threads than any machine this runs on has.
MAX_THREADS = 1024


def _apply_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if not ctx.resilient_parsing:
        set_threads(value)


def threads_option(func: Callable) -> Callable:
    """``--threads N``: compute threads (torch's CPU kernels), applied as the options are read."""
    return click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None, expose_value=False,
                        callback=_apply_threads,
                        help="Compute threads for embedding and training (default: the CPUs this process may "
                             "use, from its affinity and any container quota).")(func)


def face_options(func: Callable) -> Callable:
    func = click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=None,
                        help="Processes for face detection (default: all cores).")(func)
    func = click.option("--min-score", type=FiniteFloatRange(), default=DEFAULT_MIN_SCORE, show_default=True,
                        help="Discard HOG detections scoring below this.")(func)
    func = click.option("--upsample", type=click.IntRange(0, 3), default=DEFAULT_UPSAMPLE, show_default=True,
                        help="Detector pyramid upsampling steps (0 suits pre-cropped faces).")(func)
    func = click.option("--detector", type=click.Choice(["hog", "cnn"]), default="hog", show_default=True,
                        help="dlib's HOG detector, or its mmod CNN detector (slower, more robust).")(func)
    return func


def make_face_config(detector: str, upsample: int, min_score: float) -> FaceConfig:
    return FaceConfig(detector=detector, upsample=upsample, min_score=min_score)


def parse_group_by(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise click.BadParameter("give at least one attribute, e.g. --group-by race,gender")
    return names


def training_options(func: Callable) -> Callable:
    """How the inversion generator is trained (``audit run`` and ``audit generator train``)."""

    options = [
        click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), default=DEFAULT_EPOCHS, show_default=True,
                     help="Generator training epochs (the method's 150; fewer on a CPU)."),
        click.option("--image-size", type=click.Choice(["64", "128"]), default="64", show_default=True,
                     help="Size of the reconstructed faces."),
        click.option("--batch-size", type=click.IntRange(2, MAX_BATCH_SIZE), default=DEFAULT_BATCH_SIZE, show_default=True,
                     help="Training batch size (the method's 300; larger on a GPU)."),
        click.option("--lr", type=FiniteFloatRange(min=0, min_open=True, max=1, max_open=True), default=DEFAULT_LR,
                     show_default=True, help="Adam's learning rate for the generator."),
        click.option("--validate-every", type=click.IntRange(1, MAX_EPOCHS), default=DEFAULT_VALIDATE_EVERY,
                     show_default=True,
                     help="Re-embed validation reconstructions every K epochs to pick the best checkpoint."),
        click.option("--average-identities", is_flag=True,
                     help="Train on per-identity averaged chips (identities with 3+ images), as in the method."),
        click.option("--generator-channels", type=click.IntRange(8, MAX_BASE_CHANNELS), default=DEFAULT_BASE_CHANNELS, show_default=True,
                     help="Channels of the generator's first 4x4 map (the method's 512; smaller trains faster)."),
        click.option("--train-balance", default="group-by", show_default=True,
                     help="Balance the training corpus over 'group-by' (the audit's attributes), 'none', or a "
                          "comma list of attributes."),
        click.option("--train-per-group", type=click.IntRange(1, MAX_IMAGES),
                     help="Training images per cell of the balance attributes (default: the smallest cell)."),
        click.option("--near-duplicate-distance", type=FiniteFloatRange(min=0),
                     help="Drop training images this close to an audit image's embedding (default: a tenth "
                          "of the target's threshold)."),
        click.option("--identity-loss", type=FiniteFloatRange(min=0), default=0.0, show_default=True,
                     help="White-box option (dlib): add this weight x the target's embedding distance to the "
                          "generator's loss. Off by default so black-box and white-box audits stay comparable."),
        click.option("--device", default="auto", show_default=True, help="auto (the GPU if any), cpu or cuda."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def write_verdict_file(path: Path, text: str, *, what: str, option: str) -> None:
    """Write a verdict file (its folder made if needed); an unwritable path is an input error."""
    with writing(path.parent, what=f"the folder of {what}", option=option):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, what=what, option=option)


def write_junit(path: Path, xml: str) -> None:
    """Write the verdict's JUnit XML (its folder made if needed); an unwritable path is an input error."""
    write_verdict_file(path, xml, what="the JUnit file", option="--junit")
