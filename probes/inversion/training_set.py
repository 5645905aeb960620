"""Which faces the generator learns from: a corpus, minus the audit set, balanced over groups.

Why a separate corpus
---------------------
An inverter needs thousands of (embedding, face) pairs: the method trained
on ~12,700 LFW images.  A balanced audit set holds a few hundred people per
group, far too few: trained on it alone, a generator draws an average face
and the probe measures noise.  So the generator learns from a large corpus
(all of UTKFace, LFW, the user's own) embedded through the same target, and
every person of the audit set is test data.

Nobody may be in both
---------------------
A generator that saw a test person's photo can recall it rather than read it
from the embedding.  A training image is dropped, with its reason, when

* ``same_image``: its content hash is an audit image's (the same file, or a
  byte-identical copy);
* ``same_identity``: it shows an audit person, i.e. both datasets come from
  the same corpus (:func:`corpus_origin`) and carry identities, and its
  identity is one of the audit set's;
* ``near_duplicate``: its embedding lies within ``max_distance`` of an audit
  image's (a re-encoded, resized or lightly edited copy: such copies land a
  few hundredths apart for dlib, where two photos of one person are ~0.3-0.5
  apart).  The default is a tenth of the target's match threshold.

Balanced over the audit's groups
--------------------------------
Per-group reconstruction quality depends on who the generator was trained
on: a generator trained mostly on one group draws that group best, and the
probe would charge the target with the generator's bias.  By default the
training set is therefore balanced over the audit's group-by attributes
(each cell of their intersection gets the same number of images); rows
without a label for one of them cannot be placed in a cell and are dropped
with that reason.  :func:`plan_balance` picks a little more than needed per
cell before the (paid) embedding; :func:`trim_to_balance` trims the cells to
equal size after faces that could not be found or near-duplicates are gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audit.data.manifest import read_info
from audit.distances import cross_distances
from audit.errors import InputError
from audit.targets.base import Metric
from probes.inversion.splits import group_labels

REASON_SAME_IMAGE = "same_image"
REASON_SAME_IDENTITY = "same_identity"
REASON_NEAR_DUPLICATE = "near_duplicate"
REASON_NO_LABEL = "no_label"
REASON_BALANCE = "balance"
REASON_NO_FACE = "no_face"
OVERLAP_REASONS = (REASON_SAME_IMAGE, REASON_SAME_IDENTITY, REASON_NEAR_DUPLICATE)
#: Near-duplicate distance as a share of the target's match threshold.
DEFAULT_NEAR_DUPLICATE_SHARE = 0.1
#: Extra images picked per cell before embedding, so that cells still hold enough after
#: the faces that cannot be found are gone (UTKFace: 1-3% per group).
DEFAULT_BALANCE_MARGIN = 0.05
#: Below this many training images an inverter is unlikely to learn identity (the method
#: trained on ~12,700); a run warns.
MIN_TRAINING_IMAGES = 5_000
BALANCE_NONE = "none"
BALANCE_GROUP_BY = "group-by"
#: Audit images compared with training images per block in the near-duplicate search.
_BLOCK = 2_048


def default_near_duplicate_distance(threshold: float) -> float:
    return DEFAULT_NEAR_DUPLICATE_SHARE * float(threshold)


def corpus_origin(root: Path, info: Mapping) -> str:
    """Where a dataset folder's images come from, through any ``balance`` steps.

    Two folders with the same origin share their identity namespace (a
    balanced sample of LFW and LFW itself): a name means the same person.
    Imported folders record the source they were imported from; a balanced
    folder records the folder it was drawn from, whose own origin is then used.
    """
    seen: set[str] = set()
    root = Path(root).resolve()
    while True:
        key = str(root)
        if key in seen or not info:
            return f"folder:{key}"
        seen.add(key)
        if info.get("created_by") == "audit dataset balance" and info.get("source"):
            root = Path(str(info["source"])).resolve()
            info = _read_info(root)
            continue
        kind = info.get("kind")
        source = info.get("source")
        return f"{kind}:{source}" if kind and source else f"folder:{key}"


def _read_info(folder: Path) -> dict:
    """The dataset.json of a folder a balanced one was drawn from; {} where it is gone or unreadable
    (the origin then falls back to the folder itself)."""
    try:
        return read_info(folder)
    except InputError:
        return {}


def near_duplicate_mask(train_vectors: np.ndarray, audit_vectors: np.ndarray, *, metric: Metric,
                        max_distance: float) -> np.ndarray:
    """True for each training vector within ``max_distance`` of some audit vector.

    Brute force in blocks (a million training images against ten thousand
    audit images is 10^10 distances: minutes, once per corpus and audit set;
    the result is part of the cached training set).  NaN rows never match.
    """
    train = np.asarray(train_vectors, dtype=np.float32)
    audit = np.asarray(audit_vectors, dtype=np.float32)
    out = np.zeros(len(train), dtype=bool)
    audit = audit[np.all(np.isfinite(audit), axis=1)]
    ok = np.flatnonzero(np.all(np.isfinite(train), axis=1))
    if len(audit) == 0 or len(ok) == 0:
        return out
    for start in range(0, len(ok), _BLOCK):
        rows = ok[start:start + _BLOCK]
        nearest = np.full(len(rows), np.inf)
        for a in range(0, len(audit), _BLOCK):
            d = cross_distances(train[rows].astype(np.float64), audit[a:a + _BLOCK].astype(np.float64), metric)
            nearest = np.minimum(nearest, d.min(axis=1))
        out[rows] = nearest <= max_distance
    return out


def overlap_reasons(train: pd.DataFrame, audit: pd.DataFrame) -> np.ndarray:
    """Per training row: ``same_image``, ``same_identity`` or ``""`` (kept).

    Both tables have ``content_hash``, ``identity``, ``origin`` (from
    :func:`corpus_origin`) and ``has_identities`` (bool per row: whether the
    row's dataset has real identities, not one image per person).
    """
    reasons = np.full(len(train), "", dtype=object)
    hashes = set(audit["content_hash"].astype(str))
    reasons[train["content_hash"].astype(str).isin(hashes).to_numpy()] = REASON_SAME_IMAGE
    named = audit[audit["has_identities"].astype(bool)]
    people = set(zip(named["origin"].astype(str), named["identity"].astype(str)))
    if people:
        keys = list(zip(train["origin"].astype(str), train["identity"].astype(str)))
        same = np.array([k in people for k in keys]) & train["has_identities"].astype(bool).to_numpy()
        reasons[(reasons == "") & same] = REASON_SAME_IDENTITY
    return reasons


@dataclass
class BalancePlan:
    """Which rows to embed per cell, and how many each cell should end with."""

    attributes: tuple[str, ...]
    per_group: int | None
    selected: np.ndarray                      # row positions, in a seeded order
    cells: np.ndarray                         # each selected row's cell label
    dropped_no_label: np.ndarray              # row positions without a label for an attribute
    available: dict[str, int] = field(default_factory=dict)


def balance_attributes(table: pd.DataFrame, balance: str | Sequence[str], group_by: Sequence[str]) -> tuple[str, ...]:
    """The attributes to balance over: ``group-by`` (the audit's), ``none``, or a comma list.

    Attributes the corpus lacks entirely are left out (the corpus cannot be
    balanced over them); asking for one explicitly is an error.
    """
    if isinstance(balance, str):
        if balance == BALANCE_NONE:
            return ()
        if balance == BALANCE_GROUP_BY:
            return tuple(a for a in group_by if a in table.columns and table[a].astype(str).str.strip().ne("").any())
        balance = [a.strip() for a in balance.split(",") if a.strip()]
    missing = [a for a in balance if a not in table.columns]
    if missing:
        raise InputError(f"--train-balance {','.join(balance)!r}: the training data has no attribute "
                         f"{', '.join(missing)}; balance over some of {', '.join(map(str, table.columns))}, "
                         f"'{BALANCE_GROUP_BY}' (the audit's --group-by) or '{BALANCE_NONE}'.")
    return tuple(balance)


def plan_balance(table: pd.DataFrame, attributes: Sequence[str], *, per_group: int | None = None,
                 margin: float = DEFAULT_BALANCE_MARGIN, seed: int = 0) -> BalancePlan:
    """Pick rows to embed: per cell, ``per_group`` (default: the smallest cell) plus a margin.

    Without attributes every row is selected (capped at ``per_group`` when given).
    """
    attributes = tuple(attributes)
    rng = np.random.default_rng(seed)
    if per_group is not None and per_group < 1:
        raise InputError(f"--train-per-group {per_group!r}: must be at least 1.")
    if not attributes:
        order = rng.permutation(len(table))
        if per_group is not None:
            order = order[:per_group]
        return BalancePlan((), per_group, order, np.full(len(order), "all", dtype=object), np.zeros(0, int),
                           {"all": len(table)})
    values = table[list(attributes)].astype(str).apply(lambda c: c.str.strip())
    labelled = (values != "").all(axis=1).to_numpy()
    cells = group_labels(values, attributes)
    available = {c: int(n) for c, n in pd.Series(cells[labelled]).value_counts().sort_index().items()}
    if not available:
        raise InputError(f"no training image has a label for every one of {', '.join(attributes)}, so the "
                         "training set cannot be balanced over them: pass --train-balance none or a "
                         "training dataset with those attributes.")
    target = min(available.values()) if per_group is None else per_group
    take = int(math.ceil(target * (1 + margin))) + 2
    selected, selected_cells = [], []
    for cell in available:
        rows = np.flatnonzero(labelled & (cells == cell))
        rows = rows[rng.permutation(len(rows))][:take]
        selected.append(rows)
        selected_cells.append(np.full(len(rows), cell, dtype=object))
    return BalancePlan(attributes, target, np.concatenate(selected), np.concatenate(selected_cells),
                       np.flatnonzero(~labelled), available)


def trim_to_balance(cells: np.ndarray, usable: np.ndarray, per_group: int | None) -> np.ndarray:
    """Keep, per cell, the first ``n`` usable rows, ``n`` the same for every cell.

    ``n`` is ``per_group`` or less: the smallest number of usable rows any
    cell has.  ``cells`` and ``usable`` are aligned with the plan's
    selection (whose order is already seeded-random per cell).
    """
    cells = np.asarray(cells, dtype=object)
    usable = np.asarray(usable, dtype=bool)
    labels = sorted(set(cells.tolist()))
    counts = {c: int((usable & (cells == c)).sum()) for c in labels}
    n = min(counts.values()) if counts else 0
    if per_group is not None:
        n = min(n, per_group)
    keep = np.zeros(len(cells), dtype=bool)
    for c in labels:
        keep[np.flatnonzero(usable & (cells == c))[:n]] = True
    return keep


def composition(table: pd.DataFrame, attributes: Sequence[str]) -> dict[str, dict[str, int]]:
    """Images per value of each attribute, and per cell of their intersection (JSON-ready)."""
    out: dict[str, dict[str, int]] = {}
    attrs = [a for a in attributes if a in table.columns]
    for a in attrs:
        counts = table[a].astype(str).replace("", "(blank)").value_counts().sort_index()
        out[a] = {str(k): int(v) for k, v in counts.items()}
    if len(attrs) > 1:
        cells = pd.Series(group_labels(table, attrs)).value_counts().sort_index()
        out["*".join(attrs)] = {str(k): int(v) for k, v in cells.items()}
    return out
