"""``audit dataset balance``: the same number of images in every group.

Comparing groups of very different sizes mixes a model's bias with the
data's; a balanced dataset removes the second.  Every intersection of the
``by`` attributes gets exactly ``per_group`` images, sampled by whole
identities: a person's images all go in or none do, so that no person
sits on both sides of an identity-disjoint split and per-person figures
stay whole.  The sample is deterministic: the same seed gives the same
dataset, and each group's draw depends only on the seed and the group's
name (adding a group does not reshuffle the others).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from audit.data.destination import ELSEWHERE as DEST_ELSEWHERE
from audit.data.destination import check_destination, staged_destination
from audit.data.manifest import (IDENTITY_COLUMN, PATH_COLUMN, SHA256_COLUMN, Dataset, check_group_by,
                                 exclusions_frame, write_dataset_folder, write_dataset_hash_cache)
from audit.errors import DatasetError
from audit.outputs import writing
from audit.results import group_label

DEFAULT_SEED = 0
#: The folder of a balanced dataset through which its paths reach the source dataset.
SOURCE_FOLDER = "source"


@dataclass(frozen=True)
class GroupSelection:
    """What one group had, and what was taken from it."""

    group: str
    values: dict[str, str]
    n_images_available: int
    n_people_available: int
    n_images_selected: int
    n_people_selected: int
    #: Fewer than ``per_group`` images were selected (only with ``allow_smaller``).
    short: bool = False


@dataclass(frozen=True)
class BalancedSelection:
    """The rows chosen from a dataset's table, group by group."""

    table: pd.DataFrame
    by: tuple[str, ...]
    per_group: int
    seed: int
    groups: tuple[GroupSelection, ...]
    #: Groups given fewer than ``per_group`` images (only with ``allow_smaller``).
    short_groups: tuple[str, ...]
    #: Identities left out because their images fall in more than one group.
    split_identities: tuple[str, ...]
    #: Images left out because one of the ``by`` attributes is blank.
    n_missing_values: int

    def notes(self) -> list[str]:
        """What the selection could not do as asked, in words (dataset.json and the command's output)."""
        notes = []
        if self.short_groups:
            notes.append(f"--allow-smaller: {len(self.short_groups)} group(s) have fewer than "
                         f"{self.per_group} images: {', '.join(self.short_groups)}")
        if self.split_identities:
            notes.append(f"{len(self.split_identities)} identities have images in more than one "
                         f"group and were left out, e.g. {self.split_identities[0]!r}")
        if self.n_missing_values:
            notes.append(f"{self.n_missing_values:,} images have a blank {' or '.join(self.by)} "
                         "and were left out")
        return notes


def _group_seed(seed: int, label: str) -> int:
    digest = hashlib.sha256(f"{seed}\0{label}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def pick_identities(sizes: Sequence[tuple[str, int]], target: int, *, seed: int) -> list[str]:
    """Identities whose image counts add up to ``target`` (or as close below as they can).

    The identities are shuffled with ``seed`` and taken greedily, skipping
    any that would overshoot; when that misses the target, a subset-sum
    search over the same order finds an exact set if one exists.
    """
    target = min(target, sum(n for _, n in sizes))   # no set adds up to more: the bitsets stay small
    rng = np.random.default_rng(seed)
    order = [sizes[i] for i in rng.permutation(len(sizes))]
    chosen, total = [], 0
    for identity, n in order:
        if total + n <= target:
            chosen.append(identity)
            total += n
            if total == target:
                return chosen
    # Greedy missed: subset sums as bitsets (bit s of reach[i]: sum s is
    # reachable with the first i identities), then walk back from the best.
    candidates = [(identity, n) for identity, n in order if n <= target]
    mask = (1 << (target + 1)) - 1
    reach = [1]
    for _, n in candidates:
        reach.append((reach[-1] | (reach[-1] << n)) & mask)
    best = reach[-1].bit_length() - 1
    if best <= total:
        return chosen
    picked, remaining = [], best
    for i in range(len(candidates), 0, -1):
        if not (reach[i - 1] >> remaining) & 1:
            identity, n = candidates[i - 1]
            picked.append(identity)
            remaining -= n
    return picked[::-1]


def _images_per_identity(identities: Sequence[str], keys: Sequence[tuple[str, ...]]
                         ) -> tuple[dict[tuple[str, ...], dict[str, int]], list[str]]:
    """Images of each identity in each group; identities whose images fall in several groups are set
    apart (they cannot be kept whole in one group) and returned sorted."""
    groups_of: dict[str, set[tuple[str, ...]]] = {}
    for identity, key in zip(identities, keys):
        groups_of.setdefault(identity, set()).add(key)
    split = sorted(i for i, g in groups_of.items() if len(g) > 1)
    sizes: dict[tuple[str, ...], dict[str, int]] = {}
    for identity, key in zip(identities, keys):
        if len(groups_of[identity]) == 1:
            sizes.setdefault(key, {})
            sizes[key][identity] = sizes[key].get(identity, 0) + 1
    return sizes, split


def select_balanced(dataset: Dataset, *, by: Sequence[str], per_group: int, seed: int = DEFAULT_SEED,
                    allow_smaller: bool = False) -> BalancedSelection:
    """Choose ``per_group`` images for every intersection of ``by``, keeping identities whole.

    Raises :class:`DatasetError` naming every group that cannot get
    ``per_group`` images, unless ``allow_smaller``, which takes what there is.
    """
    by = check_group_by(dataset.attributes, by, manifest=dataset.manifest_path)
    if not by:
        raise DatasetError("Name the attributes to balance with --by, e.g. --by race,gender.")
    if per_group < 1:
        raise DatasetError(f"--per-group == {per_group}, must be >= 1.")
    table = dataset.table
    blank = np.zeros(len(table), dtype=bool)
    for attribute in by:
        blank |= (table[attribute] == "").to_numpy()
    eligible = table[~blank]
    keys = list(zip(*(eligible[a].tolist() for a in by)))
    identities = eligible[IDENTITY_COLUMN].tolist()

    sizes, split = _images_per_identity(identities, keys)

    orders = [sorted(set(eligible[a])) for a in by]
    chosen: set[str] = set()
    selections, short = [], []
    problems = []
    for combination in itertools.product(*orders):
        label = group_label(combination)
        available = sorted(sizes.get(combination, {}).items())
        n_available = sum(n for _, n in available)
        picked = pick_identities(available, per_group, seed=_group_seed(seed, label))
        n_picked = sum(sizes[combination][i] for i in picked) if picked else 0
        if n_picked < per_group:
            short.append(label)
            if n_available < per_group:
                people = "person" if len(available) == 1 else "people"
                problems.append(f"{label!r} has {n_available} images (from {len(available)} {people})")
            else:
                problems.append(f"{label!r} has {n_available} images, but no set of whole identities "
                                f"adds up to {per_group} (at most {n_picked})")
        chosen.update(picked)
        selections.append(GroupSelection(group=label, values=dict(zip(by, combination)),
                                         n_images_available=n_available,
                                         n_people_available=len(available),
                                         n_images_selected=n_picked, n_people_selected=len(picked),
                                         short=n_picked < per_group))
    if problems and not allow_smaller:
        listed = "; ".join(problems)
        raise DatasetError(
            f"{len(problems)} group(s) of {' x '.join(by)} cannot get --per-group {per_group} images: "
            f"{listed}. Lower --per-group, or pass --allow-smaller to take what there is.")
    selected = table[table[IDENTITY_COLUMN].isin(chosen) & ~blank].reset_index(drop=True)
    if selected.empty:   # a dataset of no image would only fail later, far from the cause
        fewest = min((n for sizes_of_group in sizes.values() for n in sizes_of_group.values()), default=0)
        hint = (f"every person has at least {fewest} images and people are kept whole: use --per-group "
                f"{fewest} or more" if fewest > per_group else "no group has an image with every --by value")
        raise DatasetError(f"No image of {str(dataset.root)!r} can be chosen with --per-group {per_group}: "
                           f"{hint}.")
    return BalancedSelection(table=selected, by=tuple(by), per_group=per_group, seed=seed,
                             groups=tuple(selections), short_groups=tuple(short),
                             split_identities=tuple(split), n_missing_values=int(blank.sum()))


@dataclass(frozen=True)
class BalanceSummary:
    selection: BalancedSelection
    source: Path
    dest: Path
    mode: str
    seconds: float


def balance_dataset(dataset: Dataset, dest: str | os.PathLike, *, by: Sequence[str], per_group: int,
                    seed: int = DEFAULT_SEED, allow_smaller: bool = False, copy: bool = False,
                    overwrite: bool = False) -> BalanceSummary:
    """Write a balanced dataset folder drawn from ``dataset`` at ``dest``.

    By default ``dest/source`` is a symlink to the source dataset folder and
    the new manifest's paths go through it; ``copy`` copies the chosen images
    instead.
    """
    started = time.monotonic()
    dest = check_destination(dest, sources=[dataset.root], overwrite=overwrite)
    selection = select_balanced(dataset, by=by, per_group=per_group, seed=seed,
                                allow_smaller=allow_smaller)
    table = selection.table
    # Built beside DEST and swapped in at the end: a failure or a kill never
    # touches the dataset that was there (see audit.data.destination).
    with staged_destination(dest, sources=[dataset.root], overwrite=overwrite) as build, \
            writing(dest, what="the dataset folder", elsewhere=DEST_ELSEWHERE, prefer_path=True):
        if copy:
            new_paths = table[PATH_COLUMN].tolist()
            for relative in new_paths:
                target = build / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dataset.absolute_path(relative), target)
        else:
            os.symlink(dataset.root, build / SOURCE_FOLDER, target_is_directory=True)
            new_paths = [f"{SOURCE_FOLDER}/{p}" for p in table[PATH_COLUMN].tolist()]

        columns = {PATH_COLUMN: new_paths}
        if dataset.has_identities:
            columns[IDENTITY_COLUMN] = table[IDENTITY_COLUMN].tolist()
        columns[SHA256_COLUMN] = table[SHA256_COLUMN].tolist()
        for attribute in dataset.attributes:
            columns[attribute] = table[attribute].tolist()
        manifest = pd.DataFrame(columns)

        references = [] if copy else [str(dataset.root), *[
            str(r) for r in dataset.info.get("references", ()) or ()]]
        notes = selection.notes()
        write_dataset_folder(build, manifest=manifest, exclusions=exclusions_frame([]), info={
            "created_by": "audit dataset balance",
            "kind": "balanced",
            "source": str(dataset.root),
            "images": {"mode": "copy" if copy else "link", "folder": None if copy else SOURCE_FOLDER,
                       "target": None if copy else str(dataset.root)},
            "references": references,
            "balance": {"by": list(selection.by), "per_group": per_group, "seed": seed,
                        "allow_smaller": allow_smaller,
                        "groups": [{"group": g.group, "values": g.values,
                                    "n_images_available": g.n_images_available,
                                    "n_people_available": g.n_people_available,
                                    "n_images": g.n_images_selected, "n_people": g.n_people_selected}
                                   for g in selection.groups]},
            "notes": notes,
        })
    write_dataset_hash_cache(dest, new_paths, table[SHA256_COLUMN].tolist())
    return BalanceSummary(selection=selection, source=dataset.root, dest=dest,
                          mode="copy" if copy else "link", seconds=time.monotonic() - started)


__all__ = ["BalanceSummary", "BalancedSelection", "GroupSelection", "balance_dataset",
           "pick_identities", "select_balanced"]
