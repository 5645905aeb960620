"""The inversion probe's generators when they do not learn from the audit set itself.

Either finished generator folders (``--generator``), each refused if it saw
an audit image or person, or one generator per seed trained on corpora
minus the audit set (``--train-dataset``), found in the cache where an
identical one was trained before.  Either way every audit person is a test
person.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from audit.cache import default_cache_path
from audit.generator_stage import (AuditSide, CorpusSettings, GeneratorRequest, build_training_set,
                                   check_artifact_against_audit, dataset_keys, obtain_generator, seeded_configs,
                                   training_size_warning)
from audit.probe_registry import ProbeInputs
from probes.inversion.probe import Reconstructor, measure_reconstructions
from probes.inversion.splits import test_every_person
from probes.inversion.training import resolve_device
from probes.inversion.training_set import default_near_duplicate_distance

log = logging.getLogger(__name__)


def inversion_on_corpus(inputs: ProbeInputs, table, vectors, rows, impostors, training, embed_fn):
    """Generators trained on a corpus (or given), measured on every audit person.

    Returns the section's details, the measurement and the corpus training
    set (None for saved generators: the attributes probe reads theirs).
    """
    config, embset = inputs.settings, inputs.embeddings
    audit = AuditSide(dataset_keys(inputs.dataset, embset.table["content_hash"].astype(str).tolist()),
                      embset.vectors[embset.ok])
    details: dict = {"warnings": []}
    training_set = None
    if config.generator_paths:
        artifacts, sources = _saved_generators(inputs, audit, details)
    else:
        artifacts, sources, training_set = _trained_generators(inputs, audit, training, embed_fn, details)
    split = test_every_person(table, seed=config.seed)
    device = str(resolve_device(config.device))
    generators = [Reconstructor(a.model().to(device), device, f"seed {a.info['settings']['seed']}")
                  for a in artifacts]
    measured = measure_reconstructions(
        generators=generators, embeddings=vectors, chips=embset.chips[rows], table=table, split=split,
        embed_fn=embed_fn, metric=inputs.target.metric, default_threshold=inputs.target.default_threshold,
        impostor_distances=impostors, out_dir=inputs.out_dir, groupings=inputs.groupings, person=inputs.person,
        seed=config.seed, eval_batch_size=training.eval_batch_size, n_resamples=config.n_resamples,
        label_columns=inputs.dataset.attributes)
    details.update(measured.details)
    details.update(generator_details(artifacts, sources))
    details["split_sizes"] = {str(k): int(v) for k, v in split.value_counts().items()}
    return details, measured, training_set


def _saved_generators(inputs: ProbeInputs, audit, details: dict) -> tuple[list, list[str]]:
    """The ``--generator`` folders, each refused if it saw an audit image or person."""
    config, target = inputs.settings, inputs.target
    max_distance = (config.near_duplicate_distance if config.near_duplicate_distance is not None
                    else default_near_duplicate_distance(target.default_threshold))
    artifacts = inputs.saved_generators
    for artifact in artifacts:
        check_artifact_against_audit(artifact, audit, metric=target.metric, max_distance=max_distance)
    details["training_set"] = artifacts[0].info.get("training_set") or None
    details["training_source"] = "a saved generator (--generator)"
    return artifacts, ["--generator " + str(a.folder) for a in artifacts]


def _trained_generators(inputs: ProbeInputs, audit, training, embed_fn, details: dict):
    """One generator per seed, trained on the corpora minus the audit set (or found in the cache)."""
    config, out = inputs.settings, inputs.out_dir
    settings = CorpusSettings(tuple(config.train_datasets), balance=config.train_balance,
                              per_group=config.train_per_group,
                              near_duplicate_distance=config.near_duplicate_distance)
    training_set = build_training_set(inputs.embedder, inputs.corpora, audit, group_by=inputs.group_by,
                                      settings=settings, chip_size=config.image_size, seed=config.seed)
    cache_path = (config.cache_path or default_cache_path()) if config.use_cache else None
    folder_of = (lambda k: None) if cache_path else (lambda k: Path(out) / "checkpoints" / f"generator-{k}")
    artifacts, sources = [], []
    for k, seeded in enumerate(seeded_configs(training, config.generator_seeds)):
        request = GeneratorRequest(inputs.target, inputs.embedder.preprocessing, seeded,
                                   average_identities=config.average_identities,
                                   identity_model=inputs.identity_model, progress=config.show_progress)
        artifacts.append(obtain_generator(request, training_set, embed_fn=embed_fn, folder=folder_of(k),
                                          cache_path=cache_path))
        sources.append(str(artifacts[-1].folder))
    details["training_set"] = training_set.summary()
    details["training_source"] = "a training corpus (--train-dataset)"
    warning = training_size_warning(int(training_set.rows("train").sum()))
    if warning:
        details["warnings"].append(warning)
        log.warning(warning)
    return artifacts, sources, training_set


def generator_details(artifacts: Sequence, sources: Sequence[str]) -> dict:
    """How the generators were trained, for results.json: the first one's history and settings, then each."""
    first = artifacts[0]
    return {
        "history": [{k: h.get(k) for k in ("epoch", "train_loss", "val_mean_distance", "val_failures")}
                    for h in first.history()],
        "best_epoch": first.info.get("best_epoch"),
        "best_val_mean_distance": first.info.get("best_val_mean_distance"),
        "device": first.info.get("device", "cpu"),
        "training_seconds": first.info.get("training_seconds"),
        "samples_per_second": first.info.get("samples_per_second"),
        "training_config": first.info.get("settings"),
        "average_identities": bool(first.info.get("average_identities")),
        "generators": [{"label": f"seed {a.info['settings']['seed']}", "source": src,
                        "key": a.info.get("key"), "best_epoch": a.info.get("best_epoch"),
                        "best_val_mean_distance": a.info.get("best_val_mean_distance"),
                        "training_seconds": a.info.get("training_seconds")}
                       for a, src in zip(artifacts, sources)],
    }
