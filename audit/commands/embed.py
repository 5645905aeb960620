"""``audit embed``: the embedding stage on its own."""

from __future__ import annotations

import time
from pathlib import Path

import click

from audit.commands.options import (cache_options, dataset_option, face_options, make_face_config,
                                    scheduler_option, target_options)
from audit.errors import InputError

EXPORT_FORMATS = (".npz", ".csv", ".parquet")


@click.command()
@target_options
@dataset_option
@click.option("--export", "export_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the vectors keyed by image id: .npz, .csv or .parquet by extension.")
@cache_options
@face_options
@scheduler_option
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def embed(target_spec, target_option, dataset_dir, export_path, cache_path, no_cache, detector, upsample,
          min_score, workers, scheduler, quiet):
    """Embed every image of a dataset through a target, with per-group detection counts.

    Embeddings are cached (keyed by image content, target fingerprint and
    alignment settings): a second run, or a killed run started again,
    recomputes nothing already computed.

    \b
    Examples:
      audit embed --target dlib --dataset balanced/ --export vectors.npz
      audit embed --dataset s3://bucket/balanced --scheduler tcp://10.0.0.5:8786
    """
    from audit.embedding_io import export_embeddings
    from audit.pipeline import build_embedder, load_dataset_for_run, open_target, summarize_detection

    if export_path is not None and export_path.suffix.lower() not in EXPORT_FORMATS:
        raise InputError(f"--export {str(export_path)!r}: unknown extension {export_path.suffix!r}; "
                         f"use one of {', '.join(EXPORT_FORMATS)}.")
    dataset = load_dataset_for_run(dataset_dir, group_by=None)
    target = open_target(target_spec, target_option)
    started = time.monotonic()
    with build_embedder(target, face_config=make_face_config(detector, upsample, min_score),
                        cache_path=cache_path, use_cache=not no_cache, workers=workers,
                        show_progress=not quiet, scheduler=scheduler) as embedder:
        result = embedder.embed_dataset(dataset, chip_size=None)
    elapsed = time.monotonic() - started
    click.echo(f"Target {target.name} ({target.fingerprint()}): {len(result.table)} images in "
               f"{elapsed:.1f}s; {result.n_computed} computed, {result.n_from_cache} from the cache.")
    click.echo(summarize_detection(result.table, dataset.attributes))
    if export_path is not None:
        export_embeddings(result, export_path)
        click.echo(f"Wrote {int(result.ok.sum())} vectors to {export_path}")
