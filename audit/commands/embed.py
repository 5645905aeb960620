"""``audit embed``: the embedding stage on its own."""

from __future__ import annotations

import time
from pathlib import Path

import click

from audit.commands.options import (cache_options, threads_option, dataset_option, face_options, make_face_config,
                                    scheduler_option, target_options)
from audit.commands.terminal import echo
from audit.embedding_io import export_embeddings
from audit.errors import InputError
from audit.outputs import check_writable_file, write_atomic
from audit.pipeline import build_embedder, describe_failures, load_dataset_for_run, open_target, opened_cache
from audit.sinks import csv_frame
from probes.detection import summarize_detection

EXPORT_FORMATS = (".npz", ".csv", ".parquet")
#: Images without a vector named on the terminal; --failures writes them all.
MAX_LISTED_FAILURES = 20


@click.command()
@target_options
@dataset_option
@click.option("--export", "export_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the vectors keyed by image id: .npz, .csv or .parquet by extension.")
@cache_options
@threads_option
@face_options
@click.option("--failures", "failures_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every image that got no vector (no face, unreadable) with its reason, as CSV.")
@scheduler_option
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def embed(target_spec, target_option, dataset_dir, export_path, failures_path, cache_path, no_cache, detector,
          upsample, min_score, workers, scheduler, quiet):
    """Embed every image of a dataset through a target, with per-group detection counts.

    Embeddings are cached (keyed by image content, target fingerprint and
    alignment settings): a second run, or a killed run started again,
    recomputes nothing already computed.  Images that get no vector (no
    face found, unreadable) are named with their reason (all of them with
    --failures FILE).

    \b
    Examples:
      audit embed --target dlib --dataset balanced/ --export vectors.npz
      audit embed --dataset s3://bucket/balanced --scheduler tcp://10.0.0.5:8786
    """
    if export_path is not None:
        if export_path.suffix.lower() not in EXPORT_FORMATS:
            raise InputError(f"--export {str(export_path)!r}: unknown extension {export_path.suffix!r}; "
                             f"use one of {', '.join(EXPORT_FORMATS)}.")
        check_writable_file(export_path, what="the --export file", option="--export")
    if failures_path is not None:
        check_writable_file(failures_path, what="the --failures file", option="--failures")
    dataset = load_dataset_for_run(dataset_dir, group_by=None)
    started = time.monotonic()
    with opened_cache(cache_path, use_cache=not no_cache) as cache:   # before any target call
        target = open_target(target_spec, target_option)
        embedder = build_embedder(target, face_config=make_face_config(detector, upsample, min_score),
                                  cache=cache, workers=workers, show_progress=not quiet, scheduler=scheduler)
        result = embedder.embed_dataset(dataset, chip_size=None)
    elapsed = time.monotonic() - started
    echo(f"Target {target.name} ({target.fingerprint()}): {len(result.table)} images in "
         f"{elapsed:.1f}s; {result.n_computed} computed, {result.n_from_cache} from the cache.")
    echo(summarize_detection(result.table, dataset.attributes))
    failed = result.table[~result.ok]
    if len(failed):
        echo(describe_failures(failed, limit=MAX_LISTED_FAILURES, written_to=failures_path))
    if failures_path is not None:
        write_atomic(failures_path, csv_frame(failed[["image_id", "status", "reason"]]).to_csv(index=False),
                     what="the --failures file", option="--failures")
        echo(f"Wrote the {len(failed)} image(s) without a vector to {failures_path}")
    if export_path is not None:
        export_embeddings(result, export_path)
        echo(f"Wrote {int(result.ok.sum())} vectors to {export_path}")
