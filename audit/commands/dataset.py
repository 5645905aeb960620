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
from audit.commands.terminal import echo
from audit.data.balance import balance_dataset
from audit.data.describe import describe_dataset, render_description
from audit.data.fetch import PUBLISHED_ARCHIVES, fetch_dataset
from audit.data.importers import KINDS, LFW_IMAGES, LFW_LABELS, ImportSummary, import_dataset
from audit.data.manifest import (EXCLUSIONS_FILE, MANIFEST_FILE, check_group_by, load_dataset,
                                 manifest_attributes)
from audit.sinks import terminal_text

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


def _echo_import_summary(kind: str, summary: ImportSummary) -> None:
    """What an import made: counts, exclusions, duplicates, notes, and the next command."""
    images = summary.dest / "images"
    how = f"copied into {images}" if summary.mode == "copy" else f"linked: {images} -> {os.readlink(images)}"
    echo(f"Imported {kind} from {summary.source} into {summary.dest}")
    people = f" of {_n(summary.n_identities)} identities" if summary.n_identities is not None else ""
    echo(f"  {_n(summary.n_images)} images{people} ({how})")
    n_excluded = len(summary.exclusions)
    if n_excluded:
        echo(f"  {_n(n_excluded)} excluded (all listed in {summary.dest / EXCLUSIONS_FILE}):")
        for row, path, reason in summary.exclusions.head(MAX_LISTED_EXCLUSIONS).itertuples(
                index=False, name=None):
            where = f"{row} " if row else ""
            echo(terminal_text(f"    {where}{path}: {reason}"))   # one line, whatever the file name holds
        if n_excluded > MAX_LISTED_EXCLUSIONS:
            echo(f"    ... and {_n(n_excluded - MAX_LISTED_EXCLUSIONS)} more")
    else:
        echo("  nothing excluded")
    if summary.n_duplicates:
        echo(f"  {_n(summary.n_duplicates)} images are byte-identical copies of another: they stay "
             "in the manifest, and loading keeps the first copy of each")
    if summary.notes:
        echo(f"  notes ({len(summary.notes)}, all in {summary.dest / 'dataset.json'}):")
        for note in summary.notes[:MAX_LISTED_NOTES]:
            echo(terminal_text(f"    {note}"))
        if len(summary.notes) > MAX_LISTED_NOTES:
            echo(f"    ... and {len(summary.notes) - MAX_LISTED_NOTES} more")
    echo(f"Done in {summary.seconds:.1f}s. Next: audit dataset describe {summary.dest}")


@click.group("dataset")
def dataset() -> None:
    """Import, describe and balance dataset folders (images + manifest.csv).

    \b
    Example:
      audit dataset import utkface ~/data/UTKFace utk/
      audit dataset fetch lfw lfw/
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
    _echo_import_summary(kind, summary)


@dataset.command("fetch")
@click.argument("kind", type=click.Choice(sorted(PUBLISHED_ARCHIVES)))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", "source_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the archive is downloaded and unpacked (the dataset links to its images) "
                   "[default: DEST-source, beside DEST].")
@click.option("--url", default=None, metavar="URL",
              help="Download from this mirror (http(s):// or file://) instead of the published address; "
                   "the file must still match the published MD5 unless --md5 says otherwise.")
@click.option("--md5", default=None, metavar="HEX", help="The MD5 the archive must have [default: the published one].")
@click.option("--sha256", default=None, metavar="HEX", help="A SHA-256 the archive must have as well.")
@click.option("--copy", "copy_images", is_flag=True,
              help="Copy the images into DEST/images instead of linking DEST/images to the source folder.")
@click.option("--overwrite", is_flag=True, help="Replace a dataset this tool wrote in DEST before.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def fetch_command(kind: str, dest: Path, source_dir: Path | None, url: str | None, md5: str | None,
                  sha256: str | None, copy_images: bool, overwrite: bool, quiet: bool) -> None:
    """Download KIND's published archive, verify it, unpack it and import it into DEST.

    LFW: the deep-funneled images (lfw-deepfunneled.tgz, 111 MB, checked
    against the MD5 the LFW page publishes) from http://vis-www.cs.umass.edu/lfw/.
    A broken download resumes where it stopped, within the run and when the
    command is run again; a file that does not match its checksum is deleted
    and nothing is imported.  DEST is then what 'audit dataset import lfw'
    makes of the unpacked folder.  LFW's gender and race labels are published
    separately: put them in SOURCE/labels/ and rerun with --overwrite
    (datasets/README.md says where they are).  Read the dataset's terms first.

    \b
    Example:
      audit dataset fetch lfw data/lfw
      audit dataset fetch lfw data/lfw --url https://mirror.example/lfw-deepfunneled.tgz
    """
    summary = fetch_dataset(kind, dest, source=source_dir, url=url, md5=md5, sha256=sha256, copy=copy_images,
                            overwrite=overwrite, show_progress=not quiet)
    got = (f"Downloaded {summary.archive.name} ({summary.downloaded_bytes / 1e6:.1f} MB this run) from {summary.url}"
           if summary.downloaded_bytes else f"Kept {summary.archive} (already downloaded)")
    echo(got)
    echo(f"  MD5 {summary.md5} (as expected), SHA-256 {summary.sha256}")
    echo(f"  {'Unpacked into' if summary.unpacked else 'Already unpacked in'} {summary.images}")
    _echo_import_summary(kind, summary.imported)
    if not (summary.source / LFW_LABELS).is_dir():
        echo(f"No labels: LFW's gender and race lists are published separately; put female_names.txt, "
             f"male_names.txt and lfw_race_dict.json in {summary.source / LFW_LABELS} and rerun with "
             "--overwrite (datasets/README.md says where they are).")


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
        echo(json.dumps(description, indent=2, default=str))
    else:
        echo(render_description(description))


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
    echo(f"Balanced {summary.source} by {' x '.join(selection.by)} into {summary.dest} "
         f"(seed {selection.seed}, images {'copied' if summary.mode == 'copy' else 'linked'})")
    labels = [terminal_text(g.group) for g in selection.groups]   # as shown, before the column is measured
    width = max(len("group"), *map(len, labels))
    echo(f"  {'group':<{width}}  {'available':>9}  {'people':>7}  {'chosen':>7}  {'people':>7}")
    for g, label in zip(selection.groups, labels):
        mark = "  < short" if g.short else ""
        echo(f"  {label:<{width}}  {_n(g.n_images_available):>9}  {_n(g.n_people_available):>7}  "
             f"{_n(g.n_images_selected):>7}  {_n(g.n_people_selected):>7}{mark}")
    echo(f"  {_n(len(selection.table))} images in all")
    for note in selection.notes():
        echo(f"  {note}")
    echo(f"Next: audit dataset describe {summary.dest}")
