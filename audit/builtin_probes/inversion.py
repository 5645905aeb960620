"""The inversion probe behind the registry: faces reconstructed from the embeddings (:mod:`probes.inversion`).

Without a corpus the generator trains on the audit set's own training
split; with ``--train-dataset`` or ``--generator`` it never saw an audit
person (:mod:`audit.builtin_probes.inversion_generators`).  The figures are
then judged: identity signal, the FMR threshold's estimability, the spread
between generators (:mod:`audit.builtin_probes.inversion_marks`).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from audit.builtin_probes.inversion_generators import inversion_on_corpus
from audit.builtin_probes.inversion_marks import (INVERSION_METRICS, generator_spread, leakage_spread,
                                                  mark_no_signal, mark_unstable, mark_unstable_leakage)
from audit.generator_stage import training_size_warning
from audit.json_model import from_json, json_safe
from audit.probe_registry import ProbeInputs, ProbeOutput
from audit.result_sections import InversionSection
from audit.results import FLAG_NOT_ESTIMABLE, grouping_name
from audit.targets.base import STATUS_OK
from probes.inversion.leakage import leakage_figures
from probes.inversion.metrics import DEFAULT_FMR
from probes.inversion.probe import run_inversion_probe
from probes.inversion.splits import split_identities
from probes.pairs import fmr_threshold_estimable, not_estimable_reason, sample_impostor_pairs
from probes.stats import group_figures, permutation_test

log = logging.getLogger(__name__)

#: Real different-person pairs drawn (distinct, without replacement) to find the threshold at FMR 1e-3.
DEFAULT_IMPOSTOR_PAIRS = 200_000
#: The per-reconstruction table the run folder gets.
INVERSION_SAMPLES_FILE = "inversion_samples.csv"


def run(inputs: ProbeInputs) -> ProbeOutput:
    """Train (or reuse) the generators, reconstruct every test person's faces and measure them.

    ``products`` carries what the attributes probe reads: the
    reconstructions' table and vectors, the split the generator trained on
    (audit-set training) or the corpus training set.
    """
    config, embset, target = inputs.settings, inputs.embeddings, inputs.target
    usable = inputs.ok & (embset.table["chip_status"].to_numpy() == STATUS_OK)
    rows = np.flatnonzero(usable)
    table = embset.table.iloc[rows].reset_index(drop=True)
    vectors = embset.vectors[rows]
    impostor_pairs = sample_impostor_pairs(table[inputs.person].to_numpy(), DEFAULT_IMPOSTOR_PAIRS,
                                           seed=config.seed)
    impostors = impostor_pairs.distances(vectors, target.metric)
    training = config.training_config()
    embed_fn = inputs.embedder.embed_arrays if inputs.embedder.reembedding_target is not None else None
    products: dict = {"split": None, "training_set": None}
    if config.train_datasets or config.generator_paths:
        details, measured, products["training_set"] = inversion_on_corpus(inputs, table, vectors, rows, impostors,
                                                                          training, embed_fn)
        samples, signal, leakage = measured.samples, measured.signal, measured.leakage
        products["reconstruction_vectors"] = measured.reconstruction_vectors
    else:
        split = split_identities(table, person=inputs.person, stratify=list(inputs.group_by), seed=config.seed)
        result = run_inversion_probe(
            embeddings=vectors, chips=embset.chips[rows], table=table, split=split, embed_fn=embed_fn,
            metric=target.metric, default_threshold=target.default_threshold,
            impostor_distances=impostors, config=training, out_dir=inputs.out_dir, groupings=inputs.groupings,
            person=inputs.person, seed=config.seed, average_identities=config.average_identities,
            progress=config.show_progress, identity_model=inputs.identity_model,
            n_generators=config.generator_seeds, n_resamples=config.n_resamples,
            label_columns=inputs.dataset.attributes)
        samples, signal, leakage = result.samples, result.signal, result.leakage
        products["reconstruction_vectors"] = result.reconstruction_vectors
        products["split"] = (rows, split)
        details = dict(result.details)
        details["split_sizes"] = {str(k): int(v) for k, v in split.value_counts().items()}
        details["training_source"] = "the audit set's own training split"
        n_train = int((split == "train").sum())
        warning = training_size_warning(n_train)
        details["warnings"] = [warning] if warning else []
        if warning:
            log.warning(warning)
    products["samples"] = samples
    figures, disparities = [], []
    for metric, column, kind, better, kinds in INVERSION_METRICS:
        if column not in samples.columns or samples[column].notna().sum() == 0:
            continue
        new_figures, new_disparities = group_figures(
            samples, probe="inversion", metric=metric, value=column, person=inputs.person,
            groupings=inputs.groupings, better=better, kind=kind, n_resamples=config.n_resamples,
            seed=config.seed, disparity_kinds=kinds)
        figures.extend(new_figures)
        disparities.extend(new_disparities)
    if leakage is not None:
        leak_figures, leak_disparities = leakage_figures(leakage,
                                                         groupings=[grouping_name(g) for g in inputs.groupings])
        figures.extend(leak_figures)
        disparities.extend(leak_disparities)
    details["signal_summary"] = mark_no_signal(figures, disparities, signal)
    details["impostor_pairs"] = impostor_pairs.counts()
    if not fmr_threshold_estimable(impostor_pairs.n_used, DEFAULT_FMR):
        details["fmr_threshold_not_estimable"] = not_estimable_reason(impostor_pairs.n_used, DEFAULT_FMR)
        for item in [*figures, *disparities]:
            if item.metric == "success_rate_at_fmr_1e-3" and FLAG_NOT_ESTIMABLE not in item.flags:
                item.flags.append(FLAG_NOT_ESTIMABLE)
    if samples["generator"].nunique() > 1:
        details["generator_spread"] = generator_spread(samples, inputs.groupings)
        mark_unstable(disparities, samples, inputs.groupings)
        if leakage is not None:
            details["generator_spread"].update(leakage_spread(leakage))
            mark_unstable_leakage(disparities, leakage)
    tests = {"inversion.mean_distance": _permutation_tests(inputs, samples, value="distance")}
    section = from_json(InversionSection, json_safe(details), "inversion")
    return ProbeOutput(figures, disparities, section, tests, tables={INVERSION_SAMPLES_FILE: samples},
                       products=products, device=section.device)


def _permutation_tests(inputs: ProbeInputs, samples: pd.DataFrame, *, value: str) -> dict:
    """No difference between the groups of each grouping, tested on ``value`` with people permuted."""
    return {"*".join(grouping): permutation_test(samples, value=value, grouping=grouping, person=inputs.person,
                                                 n_permutations=inputs.n_resamples, seed=inputs.seed)
            for grouping in inputs.groupings}
