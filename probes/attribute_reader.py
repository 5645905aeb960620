"""An attribute reader: what a target's embedding says about a person's gender, race or age band.

The attributes probe (:mod:`probes.attributes`) asks two questions of one
classifier per attribute: how much of a person's demographics the embedding
gives away (Terhörst et al., "Beyond Identity", IJCB 2020), and whether the
inversion generator redraws one group's faces as another's.  Both need a
reader that never saw the people it reads, so it learns from the *training*
faces only: the corpus the generator trained on (``--train-dataset``), or,
without one, the inversion probe's training split of the audit set.

The reader is scikit-learn's ``LogisticRegression`` on standardised vectors
(a ``Pipeline``), its regularisation chosen by cross-validation over
:data:`C_GRID` with people as the unit (``StratifiedGroupKFold``: two images
of one person never sit on both sides of a fold, so the cross-validated
accuracy is that on new people, and every fold holds every class).  A class
with fewer than :data:`MIN_CLASS_PEOPLE` training people is left out (the
reader cannot learn it; an audit person of that class is then always
misread, and the section says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from audit.data.importers import age_band
from audit.errors import InputError

AGE = "age"
AGE_BAND = "age_band"
#: Attributes read where the dataset has them, beside the run's --group-by attributes.
KNOWN_ATTRIBUTES = ("gender", "race", AGE_BAND)
#: A class needs this many training people for the reader to learn it.
MIN_CLASS_PEOPLE = 10
#: An attribute with more classes than this is not a demographic label to read (a raw age, an id).
MAX_CLASSES = 12
#: Folds of the cross-validation: three keep a run's readers within seconds (a reader of 9 classes on
#: 5,000 faces fits in well under a second; the chosen strength barely changes with more folds).
N_FOLDS = 3
#: Inverse regularisation strengths tried by the cross-validation.
C_GRID = (0.01, 0.1, 1.0)
MAX_ITER = 2000
#: The solver's tolerance: a label is read, not a coefficient reported, so 1e-3 is plenty (4x faster).
TOLERANCE = 1e-3
#: Training images beyond this are subsampled: a linear reader of a few classes on 128-512 dimensions
#: learns nothing more from more faces, and the run's time stays small.
MAX_TRAIN_IMAGES = 5_000


def with_age_band(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with an ``age_band`` column derived from ``age`` where it has ages but no bands.

    An age that is not a whole number of years gets no band (None), never a guess.
    """
    if AGE_BAND in table.columns or AGE not in table.columns:
        return table
    ages = pd.to_numeric(table[AGE], errors="coerce")
    bands = [age_band(int(a)) if math.isfinite(a) and a >= 0 and float(a).is_integer() else None
             for a in ages.astype(np.float64)]
    return table.assign(**{AGE_BAND: pd.Series(bands, index=table.index, dtype=object)})


def labels_of(values: Sequence) -> np.ndarray:
    """Labels as strings, None where missing (NaN, None or an empty cell)."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = None if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "" else str(v)
    return out


def attributes_to_read(table: pd.DataFrame, group_by: Sequence[str]) -> list[str]:
    """The run's --group-by attributes, then gender, race and age band where ``table`` has them."""
    return [a for a in dict.fromkeys([*group_by, *KNOWN_ATTRIBUTES]) if a in table.columns]


@dataclass
class Reader:
    """One attribute's trained classifier, or the reason there is none (``skipped``)."""

    attribute: str
    classes: list[str] = field(default_factory=list)
    pipeline: Pipeline | None = None
    skipped: str | None = None
    left_out_classes: dict[str, int] = field(default_factory=dict)
    n_train_images: int = 0
    n_train_people: int = 0
    c: float | None = None
    cv_accuracy: float = math.nan
    cv_balanced_accuracy: float = math.nan

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """The predicted label of each vector (None for a row that is not finite)."""
        out = np.full(len(vectors), None, dtype=object)
        if self.pipeline is None or not len(vectors):
            return out
        x = np.asarray(vectors, dtype=np.float64)
        finite = np.all(np.isfinite(x), axis=1)
        if finite.any():
            out[finite] = self.pipeline.predict(x[finite]).astype(object)
        return out

    def summary(self) -> dict:
        return {"attribute": self.attribute, "skipped": self.skipped, "classes": list(self.classes),
                "left_out_classes": dict(self.left_out_classes), "n_train_images": self.n_train_images,
                "n_train_people": self.n_train_people, "regularization_c": self.c,
                "cv_accuracy": self.cv_accuracy, "cv_balanced_accuracy": self.cv_balanced_accuracy}


def train_reader(attribute: str, vectors: np.ndarray, labels: Sequence, persons: Sequence, *,
                 seed: int = 0) -> Reader:
    """Cross-validate and fit the reader of ``attribute`` on training faces (never audit ones).

    ``vectors[i]`` is labelled ``labels[i]`` (None: unlabelled, left out)
    and shows ``persons[i]``.  Returns a :class:`Reader` with ``skipped``
    set where the labels do not allow one: fewer than two classes with
    :data:`MIN_CLASS_PEOPLE` people, or more than :data:`MAX_CLASSES` classes.
    """
    x = np.asarray(vectors, dtype=np.float64)
    y = labels_of(labels)
    people = np.asarray(persons, dtype=object).astype(str)
    if not (len(x) == len(y) == len(people)):
        raise InputError(f"the reader of {attribute!r} got {len(x)} vectors, {len(y)} labels and {len(people)} "
                         "persons: pass one of each per training image.")
    keep = np.array([v is not None for v in y], dtype=bool)
    if x.ndim == 2 and len(x):
        keep &= np.all(np.isfinite(x), axis=1)
    x, y, people = x[keep], y[keep], people[keep]
    reader = Reader(attribute)
    if not len(y):
        reader.skipped = f"the training faces carry no {attribute!r} label"
        return reader
    frame = pd.DataFrame({"label": y, "person": people})
    people_per_class = frame.groupby("label")["person"].nunique()
    if len(people_per_class) > MAX_CLASSES:
        reader.skipped = (f"{attribute!r} has {len(people_per_class)} values in the training faces (more than "
                          f"{MAX_CLASSES}): not a demographic label to read; band it first (e.g. age_band)")
        return reader
    learnable = people_per_class[people_per_class >= MIN_CLASS_PEOPLE]
    reader.left_out_classes = {str(k): int(v) for k, v in people_per_class.items() if k not in learnable.index}
    if len(learnable) < 2:
        reader.skipped = (f"fewer than two {attribute!r} classes have {MIN_CLASS_PEOPLE} training people "
                          f"(people per class: {', '.join(f'{k}: {v}' for k, v in people_per_class.items())})")
        return reader
    use = np.isin(y, learnable.index.to_numpy())
    x, y, people = x[use], y[use].astype(str), people[use]
    if len(x) > MAX_TRAIN_IMAGES:
        chosen = np.sort(np.random.default_rng(seed).choice(len(x), MAX_TRAIN_IMAGES, replace=False))
        x, y, people = x[chosen], y[chosen], people[chosen]
    n_folds = int(min(N_FOLDS, len(np.unique(people)), pd.Series(people).groupby(y).nunique().min()))
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("classify", LogisticRegression(max_iter=MAX_ITER, tol=TOLERANCE, random_state=seed))])
    reader.classes = sorted(str(c) for c in learnable.index)
    reader.n_train_images, reader.n_train_people = int(len(x)), int(len(np.unique(people)))
    if n_folds < 2:  # pragma: no cover - MIN_CLASS_PEOPLE >= 2 guarantees two folds
        reader.pipeline = pipeline.set_params(classify__C=1.0).fit(x, y)
        reader.c = 1.0
        return reader
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    search = GridSearchCV(pipeline, {"classify__C": list(C_GRID)}, cv=folds,
                          scoring={"balanced_accuracy": "balanced_accuracy", "accuracy": "accuracy"},
                          refit="balanced_accuracy", n_jobs=None, error_score="raise")
    search.fit(x, y, groups=people)
    best = int(search.best_index_)
    reader.pipeline = search.best_estimator_
    reader.c = float(search.best_params_["classify__C"])
    reader.cv_balanced_accuracy = float(search.cv_results_["mean_test_balanced_accuracy"][best])
    reader.cv_accuracy = float(search.cv_results_["mean_test_accuracy"][best])
    return reader
