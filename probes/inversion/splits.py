"""Identity-disjoint, group-stratified train / val / test splits for the generator.

Why identity-disjoint: a generator that saw other photos of a test person
could recall that face instead of reading it from the embedding; the
probe must measure what the *embedding* gives away.  Why one image per
person in val and test: so that every person weighs the same in the
validation score and in the per-group test figures (a person with 50
photos must not count 50 times).  Why stratified: so that every group has
its share of people in the test set, also small groups.

Each row gets one label:

* ``"train"``: every image of a training person;
* ``"val"``: the one chosen image of a validation person (checkpoint selection);
* ``"test"``: the one chosen image of a test person (the figures);
* ``"test_extra"``: the other images of a test person, never trained on,
  kept for the type-II figure (a reconstruction against a *different*
  photo of the same person);
* ``"unused"``: the other images of a validation person.

How people are allocated: each person gets one group label (the values
of the ``stratify`` columns, the most frequent combination over the
person's images, ties broken by order of appearance).  Within every group
the people are shuffled with ``seed`` and the first
``round(n * test_fraction)`` go to test, the next ``round(n * val_fraction)``
to val, the rest to train (rounding half up).  scikit-learn's splitters
(``StratifiedShuffleSplit``, ``StratifiedGroupKFold``) do the same job but
refuse a group of a single person and a test set smaller than the number of
groups, which intersectional groups of real datasets hit; the per-group
allocation above never refuses and its counts can be checked by hand.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from audit.errors import InputError
from audit.results import ALL, GROUP_JOIN

SPLIT_TRAIN = "train"
SPLIT_VAL = "val"
SPLIT_TEST = "test"
SPLIT_TEST_EXTRA = "test_extra"
SPLIT_UNUSED = "unused"
SPLITS = (SPLIT_TRAIN, SPLIT_VAL, SPLIT_TEST, SPLIT_TEST_EXTRA, SPLIT_UNUSED)

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.2
#: An identity needs at least this many training images for its average to replace them.
DEFAULT_MIN_IMAGES_TO_AVERAGE = 3


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def person_labels(table: pd.DataFrame, person: str) -> np.ndarray:
    """The person of every row; a table without the column (or a missing value)
    makes each image its own person."""
    own = np.array([f"__image_{i}" for i in range(len(table))], dtype=object)
    if person not in table.columns:
        return own
    values = table[person].to_numpy(dtype=object)
    missing = pd.isna(values)
    return np.where(missing, own, values.astype(str))


def group_labels(table: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Each row's group label: the values of ``columns`` joined as in :func:`audit.results.group_label`
    (``"Black / Female"``; ``"all"`` for no columns), vectorised."""
    columns = list(columns)
    if not columns:
        return np.full(len(table), ALL, dtype=object)
    labels = table[columns[0]].astype(str).to_numpy(dtype=object)
    for column in columns[1:]:
        labels = labels + GROUP_JOIN + table[column].astype(str).to_numpy(dtype=object)
    return labels


def split_identities(table: pd.DataFrame, *, person: str = "identity", stratify: Sequence[str],
                     val_fraction: float = DEFAULT_VAL_FRACTION,
                     test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> pd.Series:
    """Label every row ``train``/``val``/``test``/``test_extra``/``unused`` (see the module doc).

    Returns a Series of strings named ``"split"`` with ``table``'s index.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise InputError(f"{name}={value!r}, must be a number in [0, 1).")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(f"val_fraction + test_fraction = {val_fraction + test_fraction!r}, must be < 1 "
                         "so that some people are left to train on.")
    stratify = list(stratify)
    missing = [c for c in stratify if c not in table.columns]
    if missing:
        raise InputError(f"stratify={stratify!r}: the table has no column(s) {missing}. "
                         f"Available columns: {', '.join(map(str, table.columns))}.")
    if len(table) == 0:
        raise InputError("the table is empty: there are no images to split.")

    persons = person_labels(table, person)
    labels = group_labels(table, stratify)
    frame = pd.DataFrame({"person": persons, "label": labels, "row": np.arange(len(table))})
    # One label per person: the most frequent over the person's images, ties to the first seen.
    counts = (frame.groupby(["person", "label"], sort=False)["row"].agg(["size", "min"])
              .reset_index().sort_values(["person", "size", "min"], ascending=[True, False, True]))
    person_label = counts.drop_duplicates("person").set_index("person")["label"]

    rng = np.random.default_rng(seed)
    role: dict[str, str] = {}
    for label in sorted(person_label.unique()):
        people = np.array(sorted(person_label.index[person_label.to_numpy() == label]), dtype=object)
        people = people[rng.permutation(len(people))]
        n_test = _round_half_up(len(people) * test_fraction)
        n_val = _round_half_up(len(people) * val_fraction)
        if n_test + n_val >= len(people) and len(people) > 0:
            # Keep at least one person to train on in a group that has any; take it from val first.
            n_val = max(0, len(people) - 1 - n_test)
            n_test = min(n_test, len(people) - 1 - n_val)
        for p in people[:n_test]:
            role[p] = SPLIT_TEST
        for p in people[n_test:n_test + n_val]:
            role[p] = SPLIT_VAL
        for p in people[n_test + n_val:]:
            role[p] = SPLIT_TRAIN

    split = np.array([role[p] for p in persons], dtype=object)
    # One image per val/test person, chosen at random; the others become extras.
    order = rng.permutation(len(table))
    chosen: set[str] = set()
    for i in order:
        if split[i] in (SPLIT_VAL, SPLIT_TEST):
            p = persons[i]
            if p in chosen:
                split[i] = SPLIT_TEST_EXTRA if split[i] == SPLIT_TEST else SPLIT_UNUSED
            else:
                chosen.add(p)
    return pd.Series(split, index=table.index, name="split", dtype=object)


def test_every_person(table: pd.DataFrame, *, person: str = "identity", seed: int = 0) -> pd.Series:
    """Every person is a test person: one random image ``test``, the others ``test_extra``.

    For an audit set measured by a generator trained elsewhere (on a corpus):
    nobody is trained on, so everyone is measured, one image per person as
    in :func:`split_identities`' test split.
    """
    if len(table) == 0:
        raise InputError("the table is empty: there are no images to test.")
    persons = person_labels(table, person)
    rng = np.random.default_rng(seed)
    split = np.full(len(table), SPLIT_TEST_EXTRA, dtype=object)
    seen: set[str] = set()
    for i in rng.permutation(len(table)):
        if persons[i] not in seen:
            seen.add(persons[i])
            split[i] = SPLIT_TEST
    return pd.Series(split, index=table.index, name="split", dtype=object)


def average_identities(chips: np.ndarray, identities: Sequence[object], *,
                       min_images: int = DEFAULT_MIN_IMAGES_TO_AVERAGE) -> np.ndarray:
    """Per-identity mean chips as cleaner training targets (the method's ``--average-identities``).

    Returns an array like ``chips`` (uint8, N x H x W x 3) where every image
    of an identity with at least ``min_images`` images is replaced by the
    mean of that identity's images (rounded); the others are unchanged.
    Each row keeps its own embedding, so (embedding, target) pairs stay
    aligned: the generator learns to map each of a person's embeddings to
    the person's average face, which removes pose and lighting it cannot
    infer from an embedding.  Call it on the *training* rows only.
    """
    chips = np.asarray(chips)
    if chips.ndim != 4 or chips.shape[-1] != 3 or chips.dtype != np.uint8:
        raise InputError(f"chips has shape {chips.shape} and dtype {chips.dtype}; expected uint8 "
                         "N x H x W x 3 aligned chips.")
    identities = np.asarray(identities, dtype=object)
    if len(identities) != len(chips):
        raise InputError(f"identities has {len(identities)} entries for {len(chips)} chips; pass one per chip.")
    if not isinstance(min_images, int) or min_images < 2:
        raise InputError(f"min_images={min_images!r}, must be an integer >= 2 (an average of one image "
                         "is the image).")
    out = chips.copy()
    codes, inverse, counts = np.unique(identities.astype(str), return_inverse=True, return_counts=True)
    for code in np.flatnonzero(counts >= min_images):
        rows = np.flatnonzero(inverse == code)
        mean = chips[rows].astype(np.float64).mean(axis=0)
        out[rows] = np.clip(np.rint(mean), 0, 255).astype(np.uint8)
    return out
