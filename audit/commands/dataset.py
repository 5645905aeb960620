"""``audit dataset``: import, describe and balance dataset folders.

The commands only parse options and print; the work is in
:mod:`audit.data.importers`, :mod:`audit.data.describe` and
:mod:`audit.data.balance`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from audit.commands.options import MAX_IMAGES, seed_option
from audit.data.balance import balance_dataset
from audit.data.describe import describe_dataset, render_description
from audit.data.importers import KINDS, LFW_IMAGES, import_dataset
from audit.data.manifest import (EXCLUSIONS_FILE, MANIFEST_FILE, check_group_by, load_dataset,
                                 manifest_attributes)

#: Import summaries list this many exclusions one by one, then count the rest.
MAX_LISTED_EXCLUSIONS = 10
MAX_LISTED_NOTES = 12


def _attribute_list(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    if not names:
        raise click.BadParameter(f"{value!r} names no attribute; write them comma-separated, "
                                 "e.g. race,gender.")
    return names


def _n(value: int) -> str:
    return f"{value:,}"


@click.group("dataset")
def dataset() -> None:
    """Import, describe and balance dataset folders (images + manifest.csv).

    \b
    Example:
      audit dataset import utkface ~/data/UTKFace utk/
      audit dataset describe utk/
      audit dataset balance utk/ balanced/ --by race,gender --per-group 100
    """


@dataset.command("import")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--copy", "copy_images", is_flag=True,
              help="Copy the images into DEST/images instead of linking DEST/images to SRC.")
@click.option("--overwrite", is_flag=True,
              help="Replace a dataset this tool wrote in DEST before.")
@click.option("--images", "lfw_images", default=None, metavar="SUBFOLDER",
              help=f"lfw: the image folder inside SRC [default: {LFW_IMAGES}].")
@click.option("--labels", "fairface_labels", multiple=True, metavar="CSV",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="fairface: a label CSV (file,age,gender,race); repeat for train and val "
                   "[default: SRC/fairface_label_*.csv].")
@click.option("--attributes", "folders_attributes", default=None, metavar="CSV",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="folders: a CSV of attributes with one row per identity.")
@click.option("--key", "folders_key", default=None, metavar="COLUMN",
              help="folders: the --attributes column naming the identity [default: identity].")
def import_command(kind: str, src: Path, dest: Path, copy_images: bool, overwrite: bool,
                   lfw_images: str | None, fairface_labels: tuple[Path, ...],
                   folders_attributes: Path | None, folders_key: str | None) -> None:
    """Import the dataset KIND found in SRC into the dataset folder DEST.

    Writes DEST/manifest.csv (one row per image), DEST/exclusions.csv (what
    could not be used, and why) and DEST/dataset.json (how DEST was made).
    By default DEST/images is a symlink to the source images (nothing is
    copied; SRC is never modified); --copy makes DEST self-contained.

    \b
    KIND:
      utkface   labels from names AGE_GENDER_RACE_DATETIME.jpg.chip.jpg
      lfw       SRC/images_deepfunneled/<Name>/<Name>_NNNN.jpg, SRC/labels/
      fairface  images + fairface_label_{train,val}.csv (file,age,gender,race)
      folders   SRC/<identity>/<images>, attributes from --attributes CSV

    \b
    Example:
      audit dataset import utkface ~/data/UTKFace utk/
      audit dataset import lfw ~/data/lfw lfw/ --copy
      audit dataset import folders ~/photos staff/ --attributes staff.csv
    """
    options = {"lfw": {"images": lfw_images},
               "fairface": {"labels": fairface_labels or None},
               "folders": {"attributes": folders_attributes, "key": folders_key}}
    given = {"--images": (lfw_images, "lfw"), "--labels": (fairface_labels, "fairface"),
             "--attributes": (folders_attributes, "folders"), "--key": (folders_key, "folders")}
    for option, (value, owner) in given.items():
        if value and owner != kind:
            raise click.UsageError(f"{option} is an option of the {owner!r} importer, not {kind!r}.")
    summary = import_dataset(kind, src, dest, copy=copy_images, overwrite=overwrite,
                             show_progress=True, **options.get(kind, {}))
    images = summary.dest / "images"
    how = f"copied into {images}" if summary.mode == "copy" else f"linked: {images} -> {os.readlink(images)}"
    click.echo(f"Imported {kind} from {summary.source} into {summary.dest}")
    people = f" of {_n(summary.n_identities)} identities" if summary.n_identities is not None else ""
    click.echo(f"  {_n(summary.n_images)} images{people} ({how})")
    n_excluded = len(summary.exclusions)
    if n_excluded:
        click.echo(f"  {_n(n_excluded)} excluded (all listed in {summary.dest / EXCLUSIONS_FILE}):")
        for row, path, reason in summary.exclusions.head(MAX_LISTED_EXCLUSIONS).itertuples(
                index=False, name=None):
            where = f"{row} " if row else ""
            click.echo(f"    {where}{path}: {reason}")
        if n_excluded > MAX_LISTED_EXCLUSIONS:
            click.echo(f"    ... and {_n(n_excluded - MAX_LISTED_EXCLUSIONS)} more")
    else:
        click.echo("  nothing excluded")
    if summary.n_duplicates:
        click.echo(f"  {_n(summary.n_duplicates)} images are byte-identical copies of another: they stay "
                   "in the manifest, and loading keeps the first copy of each")
    if summary.notes:
        click.echo(f"  notes ({len(summary.notes)}, all in {summary.dest / 'dataset.json'}):")
        for note in summary.notes[:MAX_LISTED_NOTES]:
            click.echo(f"    {note}")
        if len(summary.notes) > MAX_LISTED_NOTES:
            click.echo(f"    ... and {len(summary.notes) - MAX_LISTED_NOTES} more")
    click.echo(f"Done in {summary.seconds:.1f}s. Next: audit dataset describe {summary.dest}")


@dataset.command("describe")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--group-by", callback=_attribute_list, default=None, metavar="ATTRS",
              help="Comma-separated attributes to count by, alone and intersected "
                   "[default: every attribute with few values, and race x gender].")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def describe_command(folder: Path, group_by: tuple[str, ...] | None, as_json: bool) -> None:
    """Count the images and people of the dataset in DIR, per group.

    Checks every file (hashes are cached in DIR, so a second run is fast),
    then prints per attribute and per intersection (e.g. race x gender) the
    rows of the manifest, the usable images and the people; images per
    identity; and every exclusion with its reason.

    \b
    Example:
      audit dataset describe utk/
      audit dataset describe lfw/ --group-by gender
      audit dataset describe utk/ --group-by race,gender,age_band --json > utk.json
    """
    if group_by and (attributes := manifest_attributes(folder)):
        check_group_by(attributes, group_by, manifest=Path(folder) / MANIFEST_FILE)  # before reading images
    data = load_dataset(folder, show_progress=True, not_blank=group_by or ())
    description = describe_dataset(data, group_by)
    if as_json:
        click.echo(json.dumps(description, indent=2, default=str))
    else:
        click.echo(render_description(description))


@dataset.command("balance")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--by", required=True, callback=_attribute_list, metavar="ATTRS",
              help="Comma-separated attributes whose every intersection gets --per-group images.")
@click.option("--per-group", required=True, type=click.IntRange(1, MAX_IMAGES), metavar="N",
              help="Images per group.")
@seed_option("Seed of the sample: the same seed gives the same dataset")
@click.option("--allow-smaller", is_flag=True,
              help="Give a group with fewer than N images all it has, instead of stopping.")
@click.option("--copy", "copy_images", is_flag=True,
              help="Copy the chosen images instead of linking DEST/source to SRC.")
@click.option("--overwrite", is_flag=True, help="Replace a dataset this tool wrote in DEST before.")
def balance_command(src: Path, dest: Path, by: tuple[str, ...], per_group: int, seed: int,
                    allow_smaller: bool, copy_images: bool, overwrite: bool) -> None:
    """Write to DEST a dataset with N images in every group of SRC.

    Every intersection of the --by attributes gets exactly --per-group
    images, drawn by whole identities: a person's images all go in or none
    do.  A group with too few images stops the command with its name and
    count, unless --allow-smaller.

    \b
    Example:
      audit dataset balance utk/ utk-balanced/ --by race,gender --per-group 500 --seed 1
    """
    data = load_dataset(src, group_by=by, show_progress=True)
    summary = balance_dataset(data, dest, by=by, per_group=per_group, seed=seed,
                              allow_smaller=allow_smaller, copy=copy_images, overwrite=overwrite)
    selection = summary.selection
    click.echo(f"Balanced {summary.source} by {' x '.join(selection.by)} into {summary.dest} "
               f"(seed {selection.seed}, images {'copied' if summary.mode == 'copy' else 'linked'})")
    width = max(len("group"), *(len(g.group) for g in selection.groups))
    click.echo(f"  {'group':<{width}}  {'available':>9}  {'people':>7}  {'chosen':>7}  {'people':>7}")
    for g in selection.groups:
        mark = "  < short" if g.short else ""
        click.echo(f"  {g.group:<{width}}  {_n(g.n_images_available):>9}  {_n(g.n_people_available):>7}  "
                   f"{_n(g.n_images_selected):>7}  {_n(g.n_people_selected):>7}{mark}")
    click.echo(f"  {_n(len(selection.table))} images in all")
    for note in selection.notes():
        click.echo(f"  {note}")
    click.echo(f"Next: audit dataset describe {summary.dest}")
