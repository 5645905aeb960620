"""The attributes probe behind the registry: what embeddings and reconstructions say of a person's group.

The reader learns from the generator's training faces (:mod:`probes.attributes`):
the corpus's, a saved generator's, or the audit set's training split, so
that it is never judged on the people it learned from.  It reads the
inversion probe's output where that probe ran first; a drifting group's
inversion figures are flagged ``generator_drift``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.builtin_probes.common import output_of
from audit.probe_registry import ProbeInputs, ProbeOutput
from audit.result_sections import AttributesSection
from probes.attribute_reader import attributes_to_read, with_age_band
from probes.attributes import Reconstructions, TrainingFaces, attributes_probe, mark_generator_drift
from probes.inversion.splits import SPLIT_TRAIN, split_identities

#: The probe whose reconstructions it reads.
INVERSION = "inversion"


def run(inputs: ProbeInputs) -> ProbeOutput:
    ok = inputs.ok
    if not ok.any():
        return ProbeOutput(section=AttributesSection(skipped="no image has an embedding to read"))
    inversion = inputs.outputs.get(INVERSION)
    products = inversion.products if inversion is not None else {}
    table = with_age_band(inputs.table.reset_index(drop=True))
    attributes = attributes_to_read(table, inputs.group_by)
    training, evaluated, evaluated_on = _training(inputs, products, table, ok)
    columns = list(dict.fromkeys(["image_id", inputs.person, *inputs.group_by, *attributes]))
    reconstructions, unavailable = None, None
    vectors = products.get("reconstruction_vectors")
    samples = products.get("samples")
    if samples is not None and vectors is not None and np.isfinite(vectors).any():
        reconstructions = Reconstructions(samples, vectors)
    elif INVERSION in inputs.probes:
        unavailable = "the reconstructions could not be embedded (the target has no model to embed new images)"
    result = attributes_probe(training=training, audit_vectors=inputs.vectors[evaluated],
                              audit_samples=table.loc[evaluated, columns].reset_index(drop=True),
                              groupings=inputs.groupings, attributes=attributes, reconstructions=reconstructions,
                              fidelity_unavailable=unavailable, evaluated_on=evaluated_on,
                              n_resamples=inputs.n_resamples, seed=inputs.seed)
    earlier = list(inputs.outputs.values())
    mark_generator_drift([f for o in earlier for f in o.figures], [d for o in earlier for d in o.disparities],
                         result.details.drift)
    return output_of(result)


def _training(inputs: ProbeInputs, products: dict, table: pd.DataFrame,
              ok: np.ndarray) -> tuple[TrainingFaces, np.ndarray, str]:
    """The attribute reader's training faces, and the audit rows it may be judged on (never its own people)."""
    training_set, artifacts = products.get("training_set"), inputs.saved_generators
    if training_set is not None or artifacts:
        faces = training_set.table if training_set is not None else artifacts[0].training_set
        vectors = training_set.vectors if training_set is not None else artifacts[0].training_vectors
        faces = with_age_band(_corpus_labels(inputs.corpora, faces.reset_index(drop=True)))
        persons = (faces["dataset"].astype(str) + "\x1f" + faces["identity"].astype(str)).to_numpy() \
            if "dataset" in faces.columns else faces["identity"].astype(str).to_numpy()
        source = ("the generator's training corpus (--train-dataset)" if training_set is not None
                  else "the saved generator's training faces (--generator)")
        return (TrainingFaces(np.asarray(vectors, dtype=np.float64), faces, persons, source), np.flatnonzero(ok),
                "every audited person")
    if products.get("split") is not None:
        rows, split = products["split"]
    else:   # the split the inversion probe would train its generator on
        rows = np.flatnonzero(ok)
        split = split_identities(table.iloc[rows], person=inputs.person, stratify=list(inputs.group_by),
                                 seed=inputs.seed)
    train_rows = rows[split.to_numpy() == SPLIT_TRAIN]
    faces = table.iloc[train_rows].reset_index(drop=True)
    trained_people = set(faces["identity"].astype(str))
    evaluated = np.flatnonzero(ok & ~table["identity"].astype(str).isin(trained_people).to_numpy())
    return (TrainingFaces(inputs.vectors[train_rows].astype(np.float64), faces,
                          faces["identity"].astype(str).to_numpy(),
                          "the inversion probe's training split of the audit set"),
            evaluated, "the audited people outside that training split")


def _corpus_labels(corpora: list, faces: pd.DataFrame) -> pd.DataFrame:
    """The corpus manifests' attribute columns (age, ...) beside the training faces' own."""
    if not corpora or "dataset" not in faces.columns or "image_id" not in faces.columns:
        return faces
    labels = pd.concat([d.table.assign(dataset=str(d.root)) for d in corpora], ignore_index=True)
    extra = [c for c in labels.columns if c not in faces.columns and c not in ("path", "sha256")]
    if not extra:
        return faces
    labels = labels.drop_duplicates(["dataset", "image_id"]).set_index(["dataset", "image_id"])[extra]
    keys = pd.MultiIndex.from_arrays([faces["dataset"].astype(str), faces["image_id"].astype(str)])
    return pd.concat([faces, labels.reindex(keys).reset_index(drop=True)], axis=1)
