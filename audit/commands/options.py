"""Options that several commands share, as reusable decorators."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from audit.faces import DEFAULT_MIN_SCORE, DEFAULT_UPSAMPLE, FaceConfig


def target_options(func: Callable) -> Callable:
    func = click.option("--target-option", "target_option", multiple=True, metavar="KEY=VALUE",
                        help="An option of the target (repeatable), e.g. engine=dlib, threshold=0.55. "
                             "See docs/targets.md.")(func)
    func = click.option("--target", "-t", "target_spec", default="dlib", show_default=True,
                        help="The model under audit: dlib, clarifai, onnx:PATH, precomputed:FILE, or a "
                             "plugin's name ('audit targets' lists them).")(func)
    return func


def dataset_option(func: Callable) -> Callable:
    return click.option("--dataset", "-d", "dataset_dir", required=True,
                        type=click.Path(exists=True, file_okay=False, path_type=Path),
                        help="A dataset folder with a manifest.csv ('audit dataset import' makes one).")(func)


def cache_options(func: Callable) -> Callable:
    func = click.option("--no-cache", is_flag=True,
                        help="Neither read nor write the embedding cache (for benchmarks).")(func)
    func = click.option("--cache", "cache_path", type=click.Path(dir_okay=False, path_type=Path),
                        help="Embedding cache file (default: $AUDIT_CACHE or "
                             "~/.cache/face-bias-audit/cache.sqlite; created readable by you only).")(func)
    return func


def face_options(func: Callable) -> Callable:
    func = click.option("--workers", type=click.IntRange(min=1), default=None,
                        help="Processes for face detection (default: all cores).")(func)
    func = click.option("--min-score", type=float, default=DEFAULT_MIN_SCORE, show_default=True,
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


def write_junit(path: Path, xml: str) -> None:
    """Write the verdict's JUnit XML (its folder made if needed); an unwritable path is an input error."""
    from audit.outputs import write_atomic, writing

    with writing(path.parent, what="the folder of the JUnit file", option="--junit"):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, xml, what="the JUnit file", option="--junit")
