"""``audit generator train``: the inversion generator as an artifact, trained once per target."""

from __future__ import annotations

from pathlib import Path

import click

from audit.commands.options import (cache_options, face_options, make_face_config, parse_group_by,
                                    scheduler_option, seed_option, target_options, threads_option,
                                    training_options)
from audit.commands.terminal import echo


@click.group()
def generator() -> None:
    """Train and keep the inversion generator, so that audits of a target reuse it.

    \b
    Example:
      audit generator train --target dlib --dataset utkface/ --dataset lfw/ --exclude balanced/ --out gen/dlib
      audit run --target dlib --dataset balanced/ --generator gen/dlib
    """


@generator.command()
@target_options
@click.option("--dataset", "-d", "datasets", multiple=True, required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A training corpus folder (repeatable), embedded through the target and cached.")
@click.option("--exclude", "excluded", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A dataset to be audited with this generator (repeatable): its images, people and "
                   "near-duplicates are kept out of training.")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The generator folder to write (rerun the same command to resume a stopped training).")
@click.option("--overwrite", is_flag=True, help="Write into --out even where it holds files this tool did not "
              "write.")
@click.option("--group-by", "group_by", help="Attributes the training set is balanced over with "
              "--train-balance group-by (default: race and gender where the corpus has them).")
@training_options
@seed_option("Seed of the sampling and the training")
@cache_options
@threads_option
@face_options
@scheduler_option
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def train(target_spec, target_option, datasets, excluded, out_dir, overwrite, group_by, epochs, image_size, batch_size,
          lr, validate_every, average_identities, generator_channels, train_balance, train_per_group,
          near_duplicate_distance, identity_loss, device, seed, cache_path, no_cache, detector, upsample,
          min_score, workers, scheduler, quiet):
    """Train the inversion generator for one target on a corpus and save it in a folder.

    The folder holds the weights (loaded weights-only), the training
    history, the training set's composition per group, the target's
    fingerprint (an audit of another model is refused) and the settings.
    'audit run --generator OUT' then trains nothing, and refuses an audit
    set that shares an image or a person with the training set.

    \b
    Example:
      audit generator train --target dlib --dataset utkface/ --exclude balanced/ --out gen/dlib --epochs 30
    """
    from audit.generator_stage import train_generator_artifact  # brings torch: loaded when training starts

    artifact = train_generator_artifact(
        target_spec=target_spec, target_options=tuple(target_option), datasets=tuple(datasets),
        excluded=tuple(excluded), out_dir=out_dir, group_by=parse_group_by(group_by), epochs=epochs,
        image_size=int(image_size), batch_size=batch_size, lr=lr, validate_every=validate_every,
        average_identities=average_identities, generator_channels=generator_channels,
        train_balance=train_balance, train_per_group=train_per_group,
        near_duplicate_distance=near_duplicate_distance, identity_loss=identity_loss, device=device, seed=seed,
        cache_path=cache_path, use_cache=not no_cache, face_config=make_face_config(detector, upsample, min_score),
        workers=workers, scheduler=scheduler, show_progress=not quiet, overwrite=overwrite)
    summary = artifact.info.get("training_set") or {}
    distance = artifact.info.get("best_val_mean_distance")   # null in generator.json where it was NaN
    shown = f"{distance:.3f}" if isinstance(distance, (int, float)) else "undefined"
    echo(f"Generator: {artifact.folder} (target {artifact.info['target']['name']}, best epoch "
         f"{artifact.info['best_epoch']}, validation distance {shown})")
    echo(f"Trained on {summary.get('n_train_images', '?')} images of {summary.get('n_train_people', '?')} "
         "people; dropped: " + (", ".join(f"{k.replace('_', ' ')} {v}"
                                         for k, v in (summary.get("dropped") or {}).items()) or "none"))
