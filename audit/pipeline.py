"""The steps that ``audit embed`` and ``audit run`` share."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd

from audit.cache import EmbeddingCache, default_cache_path
from audit.data.manifest import load_dataset
from audit.data.remote import is_url, load_remote_dataset
from audit.distributed import parse_scheduler
from audit.embedding import Embedder
from audit.errors import InputError
from audit.faces import FaceConfig
from audit.sinks import terminal_text
from audit.targets import get_target, parse_target_options
from audit.targets.base import Target

#: Attributes audited when --group-by is not given, where the dataset has them.
DEFAULT_GROUP_BY = ("race", "gender")
#: Other attributes are grouped by default only when they have this few values.
MAX_DEFAULT_GROUP_VALUES = 12


def load_dataset_for_run(folder: Path | str, *, group_by: Sequence[str] | None):
    """A dataset folder, local or at a URL (``file://``, ``s3://``: see :mod:`audit.data.remote`)."""
    if is_url(folder):
        return load_remote_dataset(str(folder), group_by=group_by)
    return load_dataset(folder, group_by=group_by)


def default_group_by(dataset) -> tuple[str, ...]:
    """race and gender where the dataset has them, else its low-cardinality attributes."""
    preferred = tuple(a for a in DEFAULT_GROUP_BY if a in dataset.attributes)
    if preferred:
        return preferred
    table = dataset.table
    return tuple(a for a in dataset.attributes
                 if 1 < table[a].nunique(dropna=True) <= MAX_DEFAULT_GROUP_VALUES)


def open_target(spec: str, option_pairs: Sequence[str] = (), **extra) -> Target:
    options = parse_target_options(list(option_pairs))
    options.update({k: v for k, v in extra.items() if v is not None})
    return get_target(spec, **options)


@contextmanager
def opened_cache(cache_path: Path | None, *, use_cache: bool) -> Iterator[EmbeddingCache | None]:
    """The embedding cache, opened (and checked) before any target is called; None with --no-cache."""
    cache = EmbeddingCache(cache_path or default_cache_path()) if use_cache else None
    try:
        yield cache
    finally:
        if cache is not None:
            cache.close()


def build_embedder(target: Target, *, face_config: FaceConfig, cache: EmbeddingCache | None,
                   workers: int | None, show_progress: bool = True, scheduler: str | None = None) -> Embedder:
    """An :class:`Embedder` on an opened cache; ``scheduler`` (``--scheduler``) puts it on a Dask cluster."""
    spec = None
    if scheduler is not None:
        if workers is not None:
            raise InputError(f"--workers {workers} and --scheduler {scheduler!r} both say where detection "
                             "runs: give --scheduler local:N for N local processes on a Dask cluster, "
                             "or --workers alone for today's process pool.")
        spec = parse_scheduler(scheduler)
    return Embedder(target, face_config=face_config, cache=cache, workers=workers, show_progress=show_progress,
                    scheduler=spec)


@contextmanager
def open_embedder(target: Target, *, face_config: FaceConfig, cache_path: Path | None, use_cache: bool = True,
                  workers: int | None = None, show_progress: bool = True,
                  scheduler: str | None = None) -> Iterator[Embedder]:
    """:func:`opened_cache` and :func:`build_embedder` in one step, for scripts and tests."""
    with opened_cache(cache_path, use_cache=use_cache) as cache:
        yield build_embedder(target, face_config=face_config, cache=cache, workers=workers,
                             show_progress=show_progress, scheduler=scheduler)


def describe_failures(failed: pd.DataFrame, *, limit: int, written_to: Path | None = None) -> str:
    """The images that got no vector, each named with its status and reason (the first ``limit``).

    One line per image, through :func:`audit.sinks.terminal_text`: a file
    name cannot drive the terminal or break its line in two.
    """
    lines = [f"Images without a vector ({len(failed)}):"]
    for image_id, status, reason in failed[["image_id", "status", "reason"]].head(limit).itertuples(
            index=False, name=None):
        lines.append(terminal_text(f"  {image_id}: {status}" + (f" ({reason})" if reason else "")))
    if len(failed) > limit:
        rest = len(failed) - limit
        lines.append(f"  ... and {rest} more" + ("" if written_to is not None else
                                                 ": pass --failures FILE to write them all"))
    return "\n".join(lines)
