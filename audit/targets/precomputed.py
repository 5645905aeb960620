"""The precomputed target (``precomputed:FILE``): vectors another system exported.

For systems that cannot be called, only asked for their vectors.  The file
holds one row per image, keyed by the dataset's ``image_id`` (the manifest
path; ``\\`` and a leading ``./`` are ignored when matching):

* CSV with columns ``image_id, v0, v1, ..., vN``;
* CSV with ``image_id`` and one column holding a JSON list (``"[0.1, ...]"``);
* Parquet with the same layouts (a list column or ``v0..vN``).  Needs pyarrow.

An image with no row is recorded as an ``error`` ("no precomputed vector for
this image"), never dropped.  ``embed`` cannot compute a vector for a new
image (the inversion probe's reconstructions), unless the model that made the
vectors is given as ``reembed=<spec>`` (its own options as ``reembed.KEY=VALUE``);
its dimension and metric must agree with the file's.

The metric is ``euclidean`` unless ``metric=cosine``.  The threshold should
be given (``threshold=``); without it, the placeholder 0.6 is used, a warning
is logged and results.json records ``threshold_source: "placeholder default"``.
The fingerprint is the file's SHA-256.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from audit.errors import InputError, TargetError
from audit.outputs import file_sha256
from audit.targets.options import option_choice, option_float
from audit.targets.base import EmbedOutcome, Metric, Target

log = logging.getLogger(__name__)

METRICS = ("euclidean", "cosine")
DEFAULT_METRIC = "euclidean"
#: Placeholder when no threshold is given (dlib's euclidean figure), with a warning.
PLACEHOLDER_THRESHOLD = 0.6
DEFAULT_ID_COLUMN = "image_id"
MISSING_REASON = "no precomputed vector for this image"
REEMBED_PREFIX = "reembed."
#: A vector column: v0, v1, ... (ASCII digits, at most nine: a longer number is no column index).
_V_COLUMN = re.compile(r"^v([0-9]{1,9})$")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_NO_REEMBED = ("precomputed vectors cannot embed new images (the inversion probe's "
               "reconstructions need the model): pass --target-option reembed=<spec> with the "
               "model that produced the vectors (e.g. reembed=dlib or reembed=onnx:model.onnx), "
               "or leave the inversion probe out.")


def normalise_image_id(image_id: Any) -> str:
    """The form both the file's and the dataset's ids are compared in."""
    text = str(image_id).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


class PrecomputedTarget(Target):
    """Vectors exported by another system, looked up by image id."""

    name: ClassVar[str] = "precomputed"
    input_kind = "precomputed"  # type: ignore[assignment]  # see base.InputKind
    parallel_safe: ClassVar[bool] = False
    METRIC: ClassVar[str] = DEFAULT_METRIC
    DEFAULT_THRESHOLD: ClassVar[float] = PLACEHOLDER_THRESHOLD
    OPTIONS: ClassVar[dict[str, str]] = {
        "metric": "euclidean (default) or cosine",
        "threshold": "same-person distance of the system (placeholder 0.6 with a warning)",
        "id_column": f"column of image ids (default {DEFAULT_ID_COLUMN!r})",
        "vector_column": "column holding each vector as a JSON list (default: v0..vN columns, "
                         "else the only other column)",
        "reembed": "target spec of the model that made the vectors, to embed reconstructions",
        "reembed.*": "an option of the reembed target, e.g. reembed.preset=arcface",
    }

    def __init__(self, *, path: str, metric: str = DEFAULT_METRIC, threshold: Any = None,
                 id_column: str = DEFAULT_ID_COLUMN, vector_column: str | None = None,
                 reembed: str | None = None, **reembed_options: Any) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise InputError(f"precomputed vectors file {str(self.path)!r} does not exist; give "
                             f"--target precomputed:FILE with a .csv or .parquet file.")
        stray = sorted(k for k in reembed_options if not k.startswith(REEMBED_PREFIX))
        if stray:
            raise InputError(f"unknown target option(s) {stray} for target 'precomputed'; it "
                             f"accepts: {', '.join(sorted(self.OPTIONS))}.")
        if reembed_options and not reembed:
            raise InputError(f"options {sorted(reembed_options)} are for a reembed target, but "
                             f"reembed= is not given.")
        self.metric_name = option_choice("metric", metric, METRICS)
        if threshold is None or threshold == "":
            log.warning("precomputed target: no threshold given; using the placeholder %.2f "
                        "(%s). Set the system's own with --target-option threshold=...",
                        PLACEHOLDER_THRESHOLD, self.metric_name)
            self._threshold = PLACEHOLDER_THRESHOLD
            self.threshold_source = "placeholder default"
        else:
            self._threshold = option_float("threshold", threshold, positive=True)
            self.threshold_source = "user"
        self.id_column = str(id_column)
        ids, self.vectors = _read_vectors(self.path, self.id_column, vector_column)
        self.image_ids = ids
        self._row = {normalise_image_id(i): k for k, i in enumerate(ids)}
        self._sha256 = file_sha256(str(self.path.resolve()))
        self._reembed: Target | None = None
        if reembed:
            self._reembed = self._build_reembed(str(reembed), {
                k[len(REEMBED_PREFIX):]: v for k, v in reembed_options.items()})
            self.chip_size = self._reembed.chip_size

    def _build_reembed(self, spec: str, options: dict) -> Target:
        from audit.targets import get_target  # the registry imports this module: a cycle at import time

        if spec.split(":", 1)[0].strip().lower() == "precomputed":
            raise InputError(f"reembed={spec!r}: the reembed target must be a model, not "
                             f"another precomputed file.")
        target = get_target(spec, **options)
        if target.dimension != self.dimension:
            raise TargetError(f"reembed={spec!r} gives {target.dimension}-D vectors but "
                              f"{str(self.path)!r} holds {self.dimension}-D ones: it cannot be the "
                              f"model that produced them.")
        if target.metric != self.metric_name:
            raise TargetError(f"reembed={spec!r} compares with {target.metric!r} but metric="
                              f"{self.metric_name!r}; pass --target-option metric={target.metric}.")
        return target

    # -- the Target interface ----------------------------------------------------------
    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def metric(self) -> Metric:
        return self.metric_name  # type: ignore[return-value]

    @property
    def default_threshold(self) -> float:
        return self._threshold

    @property
    def reembed_target(self) -> Target | None:
        """The model that can embed new images (reconstructions), if one was given."""
        return self._reembed

    def fingerprint(self) -> str:
        return f"precomputed:sha256:{self._sha256}"

    def details(self) -> dict:
        return {"file": self.path.name, "file_sha256": self._sha256,
                "n_vectors": int(len(self.image_ids)), "threshold_source": self.threshold_source,
                "reembed": (self._reembed.info().to_dict() if self._reembed is not None else None)}

    def __repr__(self) -> str:
        return (f"PrecomputedTarget(path={str(self.path)!r}, n_vectors={len(self.image_ids)}, "
                f"dimension={self.dimension}, metric={self.metric_name!r})")

    def lookup(self, image_ids: Sequence[str]) -> list[EmbedOutcome]:
        """One outcome per id, in order: the file's vector, or an error where it has none."""
        outcomes = []
        for image_id in image_ids:
            row = self._row.get(normalise_image_id(image_id))
            outcomes.append(EmbedOutcome.error(MISSING_REASON) if row is None
                            else EmbedOutcome.ok(self.vectors[row]))
        return outcomes

    def embed(self, images: Sequence[np.ndarray]) -> list[EmbedOutcome]:
        """Only with ``reembed=``: the images go to that target (its ``input_kind``)."""
        if self._reembed is None:
            raise TargetError(_NO_REEMBED)
        return self._reembed.embed(images)

    def close(self) -> None:
        if self._reembed is not None:
            self._reembed.close()


# -- reading ----------------------------------------------------------------------------
def _read_table(path: Path):
    import pandas as pd

    if path.suffix.lower() in _PARQUET_SUFFIXES:
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise TargetError(f"reading {path.name!r} needs pyarrow ({exc}). Install it with: "
                              f"pip install pyarrow  (or save the vectors as CSV).") from exc
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow's errors
            raise InputError(f"{str(path)!r} is not a readable Parquet file ({exc}).") from exc
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas' parser errors
        raise InputError(f"{str(path)!r} is not a readable CSV file ({exc}).") from exc


def _read_vectors(path: Path, id_column: str, vector_column: str | None) -> tuple[list[str], np.ndarray]:
    table = _read_table(path)
    columns = [str(c) for c in table.columns]
    if id_column not in columns:
        raise InputError(f"{path.name!r} has no column {id_column!r} (columns: {columns[:8]}"
                         f"{'...' if len(columns) > 8 else ''}); name the id column "
                         f"{DEFAULT_ID_COLUMN!r} or pass --target-option id_column=NAME.")
    if len(table) == 0:
        raise InputError(f"{path.name!r} has no rows.")
    ids = [str(i) for i in table[id_column]]
    normalised = [normalise_image_id(i) for i in ids]
    seen: set[str] = set()
    duplicates = sorted({i for i in normalised if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    if duplicates:
        raise InputError(f"{path.name!r} has several rows for the image ids {duplicates[:5]}"
                         f"{'...' if len(duplicates) > 5 else ''}; keep one vector per image.")
    v_columns = sorted((int(m.group(1)), c) for c in columns if (m := _V_COLUMN.match(c)))
    if vector_column is not None:
        if vector_column not in columns:
            raise InputError(f"vector_column={vector_column!r} is not a column of {path.name!r} "
                             f"(columns: {columns[:8]}).")
        vectors = _parse_list_column(table[vector_column], ids, vector_column)
    elif v_columns:
        numbers = [n for n, _ in v_columns]
        if numbers != list(range(len(numbers))):
            repeated = sorted({c for n, c in v_columns if numbers.count(n) > 1})
            if repeated:
                raise InputError(f"{path.name!r}: the columns {repeated[:5]} name the same vector index; "
                                 "keep one of them.")
            raise InputError(f"{path.name!r}: vector columns must be v0..v{max(numbers)} without "
                             f"gaps; missing {['v%d' % m for m in _first_gaps(numbers)]}.")
        block = table[[c for _, c in v_columns]]
        try:
            vectors = block.to_numpy(dtype=np.float64)
        except ValueError:
            vectors = _first_bad_number(block, ids)
    else:
        others = [c for c in columns if c != id_column]
        if len(others) != 1:
            raise InputError(f"{path.name!r}: cannot tell which columns hold the vectors (columns: "
                             f"{columns[:8]}). Use v0..vN columns, or one column with a JSON list "
                             f"and --target-option vector_column=NAME.")
        vectors = _parse_list_column(table[others[0]], ids, others[0])
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        k = int(np.argmin(finite))
        raise InputError(f"{path.name!r}: row {k + 1} (image_id {ids[k]!r}) has a missing or "
                         f"non-finite value; export finite numbers only.")
    return ids, vectors.astype(np.float32)


def _first_gaps(numbers: list[int], limit: int = 5) -> list[int]:
    """The first indices missing from sorted ``numbers`` (walked, never a range as long as the largest)."""
    missing, expected = [], 0
    for n in numbers:
        while expected < n and len(missing) < limit:
            missing.append(expected)
            expected += 1
        expected = n + 1
    return missing


def _first_bad_number(block, ids: list[str]) -> np.ndarray:
    for k, row in enumerate(block.itertuples(index=False)):
        for column, value in zip(block.columns, row):
            try:
                float(value)
            except (TypeError, ValueError):
                raise InputError(f"row {k + 1} (image_id {ids[k]!r}) has {value!r} in column "
                                 f"{column!r}, not a number.") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _parse_list_column(column, ids: list[str], name: str) -> np.ndarray:
    rows: list[np.ndarray] = []
    for k, cell in enumerate(column):
        try:
            values = json.loads(cell) if isinstance(cell, str) else cell
            array = np.asarray(values, dtype=np.float64).ravel()
        except (TypeError, ValueError, RecursionError):
            raise InputError(f"row {k + 1} (image_id {ids[k]!r}): column {name!r} holds "
                             f"{str(cell)[:40]!r}, not a list of numbers.") from None
        if rows and array.size != rows[0].size:
            raise InputError(f"row {k + 1} (image_id {ids[k]!r}) has {array.size} values; the "
                             f"rows before have {rows[0].size}. Every vector must have the same size.")
        if array.size == 0:
            raise InputError(f"row {k + 1} (image_id {ids[k]!r}) has an empty vector.")
        rows.append(array)
    return np.stack(rows)


__all__ = ["PrecomputedTarget", "MISSING_REASON", "normalise_image_id"]
