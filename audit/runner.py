"""``audit run``: dataset -> embeddings -> probes -> results.json -> report -> verdict.

Each stage writes what it paid for before the next starts: embeddings go
to the cache as they are computed, the generator checkpoints every epoch,
results.json is written atomically at the end.  A killed run, started
again with the same command, resumes from the cache and the last
checkpoint.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from audit import __version__
from audit.cache import default_cache_path
from audit.data.describe import describe_dataset
from audit.data.manifest import load_dataset
from audit.data.remote import PAIRS_FILE, join_location, read_location
from audit.errors import InputError, OutputError
from audit.gate import evaluate_policy, load_policy
from audit.generator_stage import (AuditSide, CorpusSettings, GeneratorRequest, build_training_set,
                                   check_artifact_against_audit, check_corpus_not_all_audit, dataset_keys,
                                   identity_model_for, obtain_generator, seeded_configs, training_size_warning)
from audit.images import ImageReadError
from audit.json_model import Record, from_json, json_safe
from audit.outputs import (check_own_folder, check_writable_folder, mark_own_folder, private_folder, write_atomic,
                           writing)
from audit.pipeline import build_embedder, default_group_by, load_dataset_for_run, open_target, opened_cache
from audit.result_sections import (DatasetSection, EnvironmentSection, FindingsSummary, InversionSection,
                                   PermutationTest, ProbeSections, TargetSection, ToolSection, VerificationSection)
from audit.result_sections import AttributesSection
from audit.results import (ALL, DISPARITY_KINDS, FLAG_NOT_ESTIMABLE, FLAG_NO_SIGNAL, GROUPS_FILE,
                           RESULTS_FILE, SCHEMA_VERSION, Disparity, Figure, Results, grouping_name, load_results,
                           write_json_atomic, written_by_audit_run)
from audit.run_config import RunConfig
from audit.sinks import csv_frame
from audit.targets.base import STATUS_OK
from probes.attribute_reader import attributes_to_read, with_age_band
from probes.attributes import Reconstructions, TrainingFaces, attributes_probe, mark_generator_drift
from probes.detection import detection_probe
from probes.findings import mark_findings
from probes.generator_seeds import judge_across_generators
from probes.inversion.artifact import check_target, read_artifact
from probes.inversion.leakage import LeakageResult, leakage_figures
from probes.inversion.metrics import DEFAULT_FMR
from probes.inversion.probe import Reconstructor, measure_reconstructions, run_inversion_probe
from probes.inversion.splits import SPLIT_TRAIN, group_labels, split_identities, test_every_person
from probes.inversion.training import resolve_device
from probes.inversion.training_set import default_near_duplicate_distance
from probes.pairs import fmr_threshold_estimable, not_estimable_reason, sample_impostor_pairs
from probes.stats import figures_frame, group_figures, permutation_test
from probes.verification import read_lfw_pairs, verification_probe
from probes.volume import volume_probe
from reports.render import render_report

log = logging.getLogger(__name__)

#: Real different-person pairs drawn (distinct, without replacement) to find the threshold at FMR 1e-3.
DEFAULT_IMPOSTOR_PAIRS = 200_000
LIBRARIES = ("torch", "dlib-bin", "numpy", "pandas", "scipy", "scikit-learn", "jinja2", "weasyprint",
             "seaborn", "matplotlib", "httpx", "onnxruntime")

#: PyTorch reports a failed checkpoint write (a full disk, most often) as a RuntimeError with these words.
TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed", "file write failed", "unexpected pos")
MSG_CHECKPOINT_WRITE = ("Cannot write the generator's checkpoints in {folder!r} ({error}): the disk is full or "
                        "refused the write. Free some space on that disk, or pass another --out on another disk; "
                        "the embeddings are cached and the last complete checkpoint kept, so a rerun resumes.")

DETECTIONS_FILE = "detections.csv"
INVERSION_SAMPLES_FILE = "inversion_samples.csv"
#: The marker's kind in a run folder (audit.outputs.OWNER_MARKER).
RUN_FOLDER_KIND = "run"


@dataclass
class RunOutcome:
    results: Results
    out_dir: Path
    report_files: dict = field(default_factory=dict)
    verdict: object | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict is None else self.verdict.exit_code


def groupings_for(group_by: Sequence[str]) -> list[list[str]]:
    """Each attribute alone, then their intersection."""
    groupings = [[a] for a in group_by]
    if len(group_by) > 1:
        groupings.append(list(group_by))
    return groupings


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment(device: str) -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(), "device": device,
            "libraries": library_versions()}


#: (metric, samples column, kind, better, disparity kinds).  Baselines (random pairs) are context
#: for the reader, not comparisons between groups: they get figures but no disparities.
INVERSION_METRICS = (
    ("mean_distance", "distance", "mean", "higher", DISPARITY_KINDS),
    ("success_rate_at_default", "success_at_default", "rate", "lower", DISPARITY_KINDS),
    ("random_match_rate_at_default", "random_match_at_default", "rate", None, ()),
    ("success_rate_at_crossing", "success_at_crossing", "rate", "lower", DISPARITY_KINDS),
    ("success_rate_at_fmr_1e-3", "success_at_fmr_1e-3", "rate", "lower", DISPARITY_KINDS),
    ("no_face_rate", "no_face", "rate", "lower", DISPARITY_KINDS),
    ("random_pair_distance_within", "random_pair_distance_within", "mean", None, ()),
    ("type2_distance", "type2_distance", "mean", "higher", DISPARITY_KINDS),
)


def mark_no_signal(figures: Sequence[Figure], disparities: Sequence[Disparity], signal) -> dict:
    """Flag inversion numbers that rest on reconstructions without identity (``no_signal``).

    Without signal overall, every inversion figure and disparity is flagged;
    otherwise a group without signal flags its own figures and every
    comparison it is part of.  Returns the summary results.json records.
    """
    tests = {(t.grouping, t.group): t for t in signal}
    overall = tests.get((ALL, ALL))
    if overall is None:
        return {"tested": False}
    missing = {key for key, t in tests.items() if not t.signal}
    for f in figures:
        if (not overall.signal or (f.grouping, f.group) in missing) and FLAG_NO_SIGNAL not in f.flags:
            f.flags.append(FLAG_NO_SIGNAL)
    for d in disparities:
        involved = {(d.grouping, d.worst_group), (d.grouping, d.best_group)}
        if (not overall.signal or involved & missing) and FLAG_NO_SIGNAL not in d.flags:
            d.flags.append(FLAG_NO_SIGNAL)
    return {"tested": True, "overall": bool(overall.signal), "p_value": overall.p_value,
            "alpha": overall.alpha, "groups_without_signal": [f"{g}: {lab}" for g, lab in sorted(missing)]}


def _group_means(samples: pd.DataFrame, column: str, grouping: Sequence[str]) -> pd.DataFrame:
    """Mean of ``column`` per (generator, group of ``grouping``): rows generator, columns group."""
    frame = pd.DataFrame({"generator": samples["generator"].to_numpy(),
                          "group": group_labels(samples, list(grouping)),
                          "value": pd.to_numeric(samples[column], errors="coerce").to_numpy()})
    return frame.groupby(["generator", "group"])["value"].mean().unstack("group")


def generator_spread(samples: pd.DataFrame, groupings: Sequence[Sequence[str]]) -> dict:
    """Each inversion figure per generator, per group: how much it moves with the generator's seed."""
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for metric, column, _, _, _ in INVERSION_METRICS:
        if column not in samples.columns or samples[column].notna().sum() == 0:
            continue
        per_grouping = {}
        for grouping in [[]] + [list(g) for g in groupings]:
            means = _group_means(samples, column, grouping)
            per_grouping[grouping_name(grouping)] = {
                str(group): {"values": [None if pd.isna(v) else round(float(v), 6) for v in means[group]],
                             "min": _finite(means[group].min()), "max": _finite(means[group].max()),
                             "sd": _finite(means[group].std(ddof=1))}
                for group in means.columns}
        out[f"inversion.{metric}"] = per_grouping
    return out


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def mark_unstable(disparities: Sequence[Disparity], samples: pd.DataFrame,
                  groupings: Sequence[Sequence[str]]) -> None:
    """Judge each inversion disparity across the generators (:mod:`probes.generator_seeds`).

    A difference between groups that flips with the generator's seed
    describes the generator, not the target: it is flagged ``unstable``
    and never a finding; with several generators the p-value also needs
    the generators' own test.
    """
    columns = {metric: (column, better) for metric, column, _, better, _ in INVERSION_METRICS}
    by_name = {grouping_name(g): list(g) for g in groupings}
    for d in disparities:
        if d.metric not in columns or d.grouping not in by_name or not d.worst_group or not d.best_group:
            continue
        column, better = columns[d.metric]
        means = _group_means(samples, column, by_name[d.grouping])
        if d.worst_group not in means or d.best_group not in means:
            continue
        judge_across_generators(d, means[d.worst_group].to_numpy(), means[d.best_group].to_numpy(), better)


def leakage_spread(leakage: LeakageResult) -> dict:
    """Each leakage figure per generator, per group (the same records as :func:`generator_spread`)."""
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for (grouping, group), g in leakage.groups.items():
        for metric, values in g.per_generator.items():
            finite = [v for v in values if np.isfinite(v)]
            out.setdefault(f"inversion.{metric}", {}).setdefault(grouping, {})[group] = {
                "values": [round(float(v), 6) if np.isfinite(v) else None for v in values],
                "min": min(finite) if finite else None, "max": max(finite) if finite else None,
                "sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None}
    return out


def mark_unstable_leakage(disparities: Sequence[Disparity], leakage: LeakageResult) -> None:
    """:func:`mark_unstable` for the leakage figures (higher leaks more: the worst group is the higher)."""
    for d in disparities:
        worst = leakage.groups.get((d.grouping, d.worst_group or ""))
        best = leakage.groups.get((d.grouping, d.best_group or ""))
        if d.probe != "inversion" or worst is None or best is None or d.metric not in worst.per_generator \
                or d.metric not in best.per_generator:
            continue
        judge_across_generators(d, worst.per_generator[d.metric], best.per_generator[d.metric], "lower")


def _pairs_folder(image_ids: pd.Series) -> str:
    """The folder LFW-style image ids sit in (``images`` for ``images/<Name>/<Name>_0001.jpg``).

    Official pair lists name images by person and number only; the
    manifest's ids carry the import's folder in front.
    """
    parts = Path(str(image_ids.iloc[0])).parts if len(image_ids) else ()
    return "/".join(parts[:-2]) if len(parts) > 2 else ""


class AuditRun:
    """One audit: holds the dataset, target and embeddings while the probes run."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.figures: list[Figure] = []
        self.disparities: list[Disparity] = []
        self.probe_details: dict[str, Record] = {}
        self.tests: dict[str, dict] = {}
        self.inversion_samples: pd.DataFrame | None = None
        self.pairs: pd.DataFrame | None = None
        self.findings: dict = {}
        # What the attributes probe reads from the inversion probe: its reconstructions' vectors, and the
        # faces its generator trained on (the corpus's, or the audit set's training split: rows, labels).
        self.reconstruction_vectors: np.ndarray | None = None
        self.training_set = None
        self.inversion_split: tuple[np.ndarray, pd.Series] | None = None

    # -- stages ------------------------------------------------------------------
    def run(self) -> RunOutcome:
        config = self.config
        started = time.monotonic()
        out = Path(config.out_dir)
        # Everything that can be refused is refused before a target is called,
        # and before anything is written: an input error leaves no empty folder.
        check_writable_folder(out, what="the run folder", option="--out")
        check_own_folder(out, kind=RUN_FOLDER_KIND, option="--out", overwrite=config.overwrite,
                         written_before=written_by_audit_run)
        policy, baseline = self._load_policy()
        dataset = load_dataset_for_run(config.dataset_dir, group_by=config.group_by)
        self.pairs = self._read_pairs(dataset)      # parsed and checked before any target call
        group_by = config.group_by or default_group_by(dataset)
        if not group_by:
            raise InputError(f"dataset {str(config.dataset_dir)!r} has no attribute to group by; "
                             "add attribute columns to its manifest or pass --group-by.")
        self.dataset, self.group_by = dataset, tuple(group_by)
        self.groupings = groupings_for(group_by)
        need_chips = "inversion" in config.probes
        self.corpora = self._load_corpora()
        check_corpus_not_all_audit(self.corpora, dataset_keys(dataset))   # --dataset C --train-dataset C
        with opened_cache(config.cache_path, use_cache=config.use_cache) as cache:
            target_extra = {"max_requests": config.max_requests} if config.max_requests else {}
            target = open_target(config.target_spec, config.target_options, **target_extra)
            self.target = target
            self.identity_model = None
            if "inversion" in config.probes:   # a black box with --identity-loss is refused before any call
                self.identity_model = identity_model_for(target, config.identity_loss)
            embedder = build_embedder(target, face_config=config.face_config, cache=cache,
                                      workers=config.workers, show_progress=config.show_progress,
                                      scheduler=config.scheduler)
            self._check_generators(embedder)
            self.embedder = embedder
            embset = embedder.embed_dataset(dataset, chip_size=config.image_size if need_chips else None)
            self.embset = embset
            with writing(out, what="the run folder", option="--out"):
                private_folder(out)   # reconstructed faces, checkpoints, a report with faces: the owner's alone
                mark_own_folder(out, kind=RUN_FOLDER_KIND)   # before any checkpoint: a resume finds it the tool's
            self._run_probes(out)
        self._findings()
        results = self._results(started)
        # The run's tables are replaced together, at the end: a run that fails
        # halfway leaves the previous run's files as they were.
        self._write_table(out / DETECTIONS_FILE, embset.table.drop(columns=["content_hash"]))
        if self.inversion_samples is not None:
            self._write_table(out / INVERSION_SAMPLES_FILE, self.inversion_samples)
        self._write_groups_csv(out)
        self._write_results(out, results)     # last: its presence says the run finished
        outcome = RunOutcome(results, out)
        if policy is not None:
            outcome.verdict = self._gate(results, out, policy, baseline)
        if config.report:
            outcome.report_files = render_report(out, no_faces=config.no_faces)
        return outcome

    def _run_probes(self, out: Path) -> None:
        """Each asked-for probe on the embedded dataset; an unwritable checkpoint folder is an OutputError."""
        probes, ok = self.config.probes, self.embset.ok
        if "detection" in probes:
            self._detection()
        if "volume" in probes:
            self._volume(ok)
        if "verification" in probes:
            self._verification(ok)
        if "inversion" in probes:
            try:
                self._inversion(ok, out)
            except RuntimeError as exc:
                if not _is_checkpoint_write_failure(exc):
                    raise
                raise OutputError(MSG_CHECKPOINT_WRITE.format(folder=str(out / "checkpoints"),
                                                              error=str(exc).splitlines()[0])) from exc
        if "attributes" in probes:   # after the inversion probe: it reads the reconstructions
            self._attributes(ok)

    def _load_corpora(self) -> list:
        """The training corpora and saved generators, read before any target call: a typo must not cost a run."""
        if "inversion" not in self.config.probes:
            return []
        self.artifacts = [read_artifact(path) for path in self.config.generator_paths]
        return [load_dataset(path) for path in self.config.train_datasets]

    def _check_generators(self, embedder) -> None:
        """A saved generator must have learned this target's embeddings (no embedding paid yet)."""
        for artifact in getattr(self, "artifacts", []):
            check_target(artifact, fingerprint=self.target.fingerprint(), preprocessing=embedder.preprocessing,
                         dimension=self.target.dimension)

    def _read_pairs(self, dataset) -> pd.DataFrame | None:
        """The official pairs, read and checked before any target call: ``--pairs`` (a file or a URL), else
        the dataset folder's pairs.txt (a folder at a URL has it fetched beside its manifest)."""
        if "verification" not in self.config.probes:
            return None
        location = self.config.pairs_file
        if location is None:
            local = Path(dataset.root) / PAIRS_FILE
            if not local.is_file():
                return None
            location = local
            name = join_location(dataset.url, PAIRS_FILE) if getattr(dataset, "url", "") else str(local)
        else:
            name = str(location)
        try:
            data = read_location(location)
        except ImageReadError as exc:
            raise InputError(f"The pairs file {name!r} is not a regular file ({exc}); give LFW's pairs.txt.") from exc
        except FileNotFoundError:
            raise InputError(f"--pairs {name!r}: no such file. Give LFW's pairs.txt (a path or a URL), or "
                             "leave --pairs out to generate the pairs.") from None
        except OSError as exc:
            raise InputError(f"The pairs file {name!r} cannot be read ({exc}); check the path or URL and "
                             "its permissions.") from exc
        except Exception as exc:  # noqa: BLE001 - a store's own error class (botocore...)
            raise InputError(f"The pairs file {name!r} cannot be read ({type(exc).__name__}: {exc}).") from exc
        return read_lfw_pairs(name, folder=_pairs_folder(dataset.table["image_id"]), data=data)

    def _load_policy(self):
        """The policy and baseline, read before any work: a typo in them must not cost a run."""
        if self.config.policy_path is None:
            return None, None
        policy = load_policy(self.config.policy_path)
        baseline = load_results(self.config.baseline_path) if self.config.baseline_path else None
        return policy, baseline

    @staticmethod
    def _write_table(path: Path, frame: pd.DataFrame) -> None:
        """A CSV report of the run: labels that a spreadsheet would run as formulas are escaped (audit.sinks)."""
        write_atomic(path, csv_frame(frame).to_csv(index=False), what="the run folder's file", option="--out")

    @staticmethod
    def _write_results(out: Path, results: Results) -> None:
        with writing(out / RESULTS_FILE, what="the results file", option="--out"):
            write_json_atomic(out / RESULTS_FILE, results.to_dict())

    def _samples(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        table = self.embset.table
        cols = ["image_id", "identity", *self.group_by]
        frame = table.loc[:, cols] if rows is None else table.loc[rows, cols]
        return frame.reset_index(drop=True)

    def _summarize(self, samples: pd.DataFrame, *, probe: str, metric: str, value: str, kind: str,
                   better: str | None, disparity_kinds: Sequence[str] = DISPARITY_KINDS) -> None:
        figures, disparities = group_figures(
            samples, probe=probe, metric=metric, value=value, person="identity",
            groupings=self.groupings, better=better, kind=kind, n_resamples=self.config.n_resamples,
            seed=self.config.seed, disparity_kinds=disparity_kinds)
        self.figures.extend(figures)
        self.disparities.extend(disparities)

    def _permutation(self, samples: pd.DataFrame, *, key: str, value: str) -> None:
        tests = {}
        for grouping in self.groupings:
            name = "*".join(grouping)
            tests[name] = permutation_test(samples, value=value, grouping=grouping, person="identity",
                                           n_permutations=self.config.n_resamples, seed=self.config.seed)
        self.tests[key] = tests

    def _record(self, probe: str, result, *, tests_key: str | None = None) -> None:
        """A probe's result (:class:`probes.result.ProbeResult`) into the run's figures, tests and details."""
        self.figures.extend(result.figures)
        self.disparities.extend(result.disparities)
        if tests_key is not None:
            self.tests[tests_key] = result.tests
        self.probe_details[probe] = result.details

    def _detection(self) -> None:
        result = detection_probe(self.embset.table, attributes=self.group_by, groupings=self.groupings,
                                 n_resamples=self.config.n_resamples, seed=self.config.seed)
        self._record("detection", result, tests_key="detection.failure_rate")

    def _volume(self, ok: np.ndarray) -> None:
        result = volume_probe(self.embset.vectors[ok], self._samples(ok), groupings=self.groupings,
                              person="identity", metric=self.target.metric,
                              threshold=self.target.default_threshold, seed=self.config.seed)
        self._record("volume", result)

    def _verification(self, ok: np.ndarray) -> None:
        samples = self._samples()
        if samples.loc[ok, "identity"].duplicated().sum() == 0:
            self.probe_details["verification"] = VerificationSection(
                skipped="the dataset has no identity with two or more images: verification needs "
                        "genuine pairs (LFW has them; UTKFace does not).")
            return
        pairs = self.pairs
        # Every image, found face or not: the rates are generalised (ISO/IEC 19795-1).
        result = verification_probe(self.embset.vectors, samples, groupings=self.groupings,
                                    person="identity", metric=self.target.metric,
                                    threshold=self.target.default_threshold, pairs=pairs,
                                    seed=self.config.seed, acquired=np.asarray(ok, dtype=bool))
        self._record("verification", result)

    def _inversion(self, ok: np.ndarray, out: Path) -> None:
        config = self.config
        usable = ok & (self.embset.table["chip_status"].to_numpy() == STATUS_OK)
        rows = np.flatnonzero(usable)
        table = self.embset.table.iloc[rows].reset_index(drop=True)
        vectors = self.embset.vectors[rows]
        impostor_pairs = sample_impostor_pairs(table["identity"].to_numpy(), DEFAULT_IMPOSTOR_PAIRS,
                                               seed=config.seed)
        impostors = impostor_pairs.distances(vectors, self.target.metric)
        training = config.training_config()
        identity_model = self.identity_model
        embed_fn = self.embedder.embed_arrays if self.embedder.reembedding_target is not None else None
        if config.train_datasets or config.generator_paths:
            details, measured = self._inversion_on_corpus(table, vectors, rows, impostors, training,
                                                          identity_model, embed_fn, out)
            samples, signal, leakage = measured.samples, measured.signal, measured.leakage
            self.reconstruction_vectors = measured.reconstruction_vectors
        else:
            split = split_identities(table, person="identity", stratify=list(self.group_by), seed=config.seed)
            result = run_inversion_probe(
                embeddings=vectors, chips=self.embset.chips[rows], table=table, split=split, embed_fn=embed_fn,
                metric=self.target.metric, default_threshold=self.target.default_threshold,
                impostor_distances=impostors, config=training, out_dir=out, groupings=self.groupings,
                person="identity", seed=config.seed, average_identities=config.average_identities,
                progress=config.show_progress, identity_model=identity_model,
                n_generators=config.generator_seeds, n_resamples=config.n_resamples,
                label_columns=self.dataset.attributes)
            samples, signal, leakage = result.samples, result.signal, result.leakage
            self.reconstruction_vectors = result.reconstruction_vectors
            self.inversion_split = (rows, split)
            details = dict(result.details)
            details["split_sizes"] = {str(k): int(v) for k, v in split.value_counts().items()}
            details["training_source"] = "the audit set's own training split"
            n_train = int((split == "train").sum())
            warning = training_size_warning(n_train)
            details["warnings"] = [warning] if warning else []
            if warning:
                log.warning(warning)
        self.inversion_samples = samples
        start = len(self.figures), len(self.disparities)
        for metric, column, kind, better, kinds in INVERSION_METRICS:
            if column not in samples.columns or samples[column].notna().sum() == 0:
                continue
            self._summarize(samples, probe="inversion", metric=metric, value=column, kind=kind, better=better,
                            disparity_kinds=kinds)
        if leakage is not None:
            leak_figures, leak_disparities = leakage_figures(leakage, groupings=[grouping_name(g) for g in self.groupings])
            self.figures.extend(leak_figures)
            self.disparities.extend(leak_disparities)
        figures, disparities = self.figures[start[0]:], self.disparities[start[1]:]
        details["signal_summary"] = mark_no_signal(figures, disparities, signal)
        details["impostor_pairs"] = impostor_pairs.counts()
        if not fmr_threshold_estimable(impostor_pairs.n_used, DEFAULT_FMR):
            details["fmr_threshold_not_estimable"] = not_estimable_reason(impostor_pairs.n_used, DEFAULT_FMR)
            for item in [*figures, *disparities]:
                if item.metric == "success_rate_at_fmr_1e-3" and FLAG_NOT_ESTIMABLE not in item.flags:
                    item.flags.append(FLAG_NOT_ESTIMABLE)
        if samples["generator"].nunique() > 1:
            details["generator_spread"] = generator_spread(samples, self.groupings)
            mark_unstable(disparities, samples, self.groupings)
            if leakage is not None:
                details["generator_spread"].update(leakage_spread(leakage))
                mark_unstable_leakage(disparities, leakage)
        self._permutation(samples, key="inversion.mean_distance", value="distance")
        self.probe_details["inversion"] = from_json(InversionSection, json_safe(details), "inversion")

    def _attributes(self, ok: np.ndarray) -> None:
        """What the embeddings and their reconstructions say about a person's group (:mod:`probes.attributes`).

        The reader learns from the generator's training faces; a drifting
        group's inversion figures are flagged ``generator_drift``.
        """
        if not ok.any():
            self.probe_details["attributes"] = AttributesSection(skipped="no image has an embedding to read")
            return
        table = with_age_band(self.embset.table.reset_index(drop=True))
        attributes = attributes_to_read(table, self.group_by)
        training, evaluated, evaluated_on = self._attribute_training(table, ok)
        columns = list(dict.fromkeys(["image_id", "identity", *self.group_by, *attributes]))
        reconstructions, unavailable = None, None
        vectors = self.reconstruction_vectors
        if self.inversion_samples is not None and vectors is not None and np.isfinite(vectors).any():
            reconstructions = Reconstructions(self.inversion_samples, vectors)
        elif "inversion" in self.config.probes:
            unavailable = "the reconstructions could not be embedded (the target has no model to embed new images)"
        result = attributes_probe(training=training, audit_vectors=self.embset.vectors[evaluated],
                                  audit_samples=table.loc[evaluated, columns].reset_index(drop=True),
                                  groupings=self.groupings, attributes=attributes, reconstructions=reconstructions,
                                  fidelity_unavailable=unavailable, evaluated_on=evaluated_on,
                                  n_resamples=self.config.n_resamples, seed=self.config.seed)
        self._record("attributes", result)
        mark_generator_drift(self.figures, self.disparities, result.details.drift)

    def _attribute_training(self, table: pd.DataFrame, ok: np.ndarray) -> tuple[TrainingFaces, np.ndarray, str]:
        """The attribute reader's training faces, and the audit rows it may be judged on (never its own people)."""
        if self.training_set is not None or getattr(self, "artifacts", None):
            faces = self.training_set.table if self.training_set is not None else self.artifacts[0].training_set
            vectors = self.training_set.vectors if self.training_set is not None else self.artifacts[0].training_vectors
            faces = with_age_band(self._corpus_labels(faces.reset_index(drop=True)))
            persons = (faces["dataset"].astype(str) + "\x1f" + faces["identity"].astype(str)).to_numpy() \
                if "dataset" in faces.columns else faces["identity"].astype(str).to_numpy()
            source = ("the generator's training corpus (--train-dataset)" if self.training_set is not None
                      else "the saved generator's training faces (--generator)")
            return (TrainingFaces(np.asarray(vectors, dtype=np.float64), faces, persons, source), np.flatnonzero(ok),
                    "every audited person")
        if self.inversion_split is not None:
            rows, split = self.inversion_split
        else:   # the split the inversion probe would train its generator on
            rows = np.flatnonzero(ok)
            split = split_identities(table.iloc[rows], person="identity", stratify=list(self.group_by),
                                     seed=self.config.seed)
        train_rows = rows[split.to_numpy() == SPLIT_TRAIN]
        faces = table.iloc[train_rows].reset_index(drop=True)
        trained_people = set(faces["identity"].astype(str))
        evaluated = np.flatnonzero(ok & ~table["identity"].astype(str).isin(trained_people).to_numpy())
        return (TrainingFaces(self.embset.vectors[train_rows].astype(np.float64), faces,
                              faces["identity"].astype(str).to_numpy(),
                              "the inversion probe's training split of the audit set"),
                evaluated, "the audited people outside that training split")

    def _corpus_labels(self, faces: pd.DataFrame) -> pd.DataFrame:
        """The corpus manifests' attribute columns (age, ...) beside the training faces' own."""
        if not self.corpora or "dataset" not in faces.columns or "image_id" not in faces.columns:
            return faces
        labels = pd.concat([d.table.assign(dataset=str(d.root)) for d in self.corpora], ignore_index=True)
        extra = [c for c in labels.columns if c not in faces.columns and c not in ("path", "sha256")]
        if not extra:
            return faces
        labels = labels.drop_duplicates(["dataset", "image_id"]).set_index(["dataset", "image_id"])[extra]
        keys = pd.MultiIndex.from_arrays([faces["dataset"].astype(str), faces["image_id"].astype(str)])
        return pd.concat([faces, labels.reindex(keys).reset_index(drop=True)], axis=1)

    def _findings(self) -> None:
        """Correct every disparity's p-value for all the run's comparisons, once, after every probe."""
        self.findings = mark_findings(self.disparities, self.config.correction)

    def _inversion_on_corpus(self, table, vectors, rows, impostors, training, identity_model, embed_fn, out):
        """Generators trained on a corpus (or given): every audit person is a test person."""
        config = self.config
        audit = AuditSide(dataset_keys(self.dataset, self.embset.table["content_hash"].astype(str).tolist()),
                          self.embset.vectors[self.embset.ok])
        details: dict = {"warnings": []}
        if config.generator_paths:
            artifacts, sources = self._saved_generators(audit, details)
        else:
            artifacts, sources = self._trained_generators(audit, training, identity_model, embed_fn, out, details)
        split = test_every_person(table, seed=config.seed)
        device = str(resolve_device(config.device))
        generators = [Reconstructor(a.model().to(device), device, f"seed {a.info['settings']['seed']}")
                      for a in artifacts]
        measured = measure_reconstructions(
            generators=generators, embeddings=vectors, chips=self.embset.chips[rows], table=table, split=split,
            embed_fn=embed_fn, metric=self.target.metric, default_threshold=self.target.default_threshold,
            impostor_distances=impostors, out_dir=out, groupings=self.groupings, person="identity",
            seed=config.seed, eval_batch_size=training.eval_batch_size, n_resamples=config.n_resamples,
            label_columns=self.dataset.attributes)
        details.update(measured.details)
        details.update(_generator_details(artifacts, sources))
        details["split_sizes"] = {str(k): int(v) for k, v in split.value_counts().items()}
        return details, measured

    def _saved_generators(self, audit, details: dict) -> tuple[list, list[str]]:
        """The ``--generator`` folders, each refused if it saw an audit image or person."""
        config = self.config
        max_distance = (config.near_duplicate_distance if config.near_duplicate_distance is not None
                        else default_near_duplicate_distance(self.target.default_threshold))
        for artifact in self.artifacts:
            check_artifact_against_audit(artifact, audit, metric=self.target.metric, max_distance=max_distance)
        details["training_set"] = self.artifacts[0].info.get("training_set") or None
        details["training_source"] = "a saved generator (--generator)"
        return self.artifacts, ["--generator " + str(a.folder) for a in self.artifacts]

    def _trained_generators(self, audit, training, identity_model, embed_fn, out: Path,
                            details: dict) -> tuple[list, list[str]]:
        """One generator per seed, trained on the corpora minus the audit set (or found in the cache)."""
        config = self.config
        settings = CorpusSettings(tuple(config.train_datasets), balance=config.train_balance,
                                  per_group=config.train_per_group,
                                  near_duplicate_distance=config.near_duplicate_distance)
        training_set = build_training_set(self.embedder, self.corpora, audit, group_by=self.group_by,
                                          settings=settings, chip_size=config.image_size, seed=config.seed)
        cache_path = (config.cache_path or default_cache_path()) if config.use_cache else None
        folder_of = (lambda k: None) if cache_path else (lambda k: out / "checkpoints" / f"generator-{k}")
        artifacts, sources = [], []
        for k, seeded in enumerate(seeded_configs(training, config.generator_seeds)):
            request = GeneratorRequest(self.target, self.embedder.preprocessing, seeded,
                                       average_identities=config.average_identities,
                                       identity_model=identity_model, progress=config.show_progress)
            artifacts.append(obtain_generator(request, training_set, embed_fn=embed_fn, folder=folder_of(k),
                                              cache_path=cache_path))
            sources.append(str(artifacts[-1].folder))
        details["training_set"] = training_set.summary()
        details["training_source"] = "a training corpus (--train-dataset)"
        self.training_set = training_set
        warning = training_size_warning(int(training_set.rows("train").sum()))
        if warning:
            details["warnings"].append(warning)
            log.warning(warning)
        return artifacts, sources

    # -- outputs -----------------------------------------------------------------
    def _results(self, started: float) -> Results:
        dataset = self.dataset
        table = dataset.table
        details = dict(self.probe_details)
        inversion = details.get("inversion")
        device = getattr(inversion, "device", None) or "cpu"
        return Results(
            figures=list(self.figures), disparities=list(self.disparities),
            tool=ToolSection(name="face-bias-audit", version=__version__),
            created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            command_line=self.config.command_line, seed=self.config.seed,
            duration_seconds=round(time.monotonic() - started, 1),
            target=from_json(TargetSection, json_safe(self.target.info().to_dict()), "target"),
            dataset=DatasetSection(path=str(self.config.dataset_dir), n_images=int(len(table)),
                                   n_identities=int(table["identity"].nunique()),
                                   has_identities=bool(dataset.has_identities), group_by=list(self.group_by),
                                   n_excluded=int(len(dataset.exclusions)),
                                   describe=json_safe(describe_dataset(dataset, self.group_by))),
            settings=json_safe(self.config.settings()),
            environment=from_json(EnvironmentSection, environment(device), "environment"),
            detection=details.pop("detection", None),
            findings=from_json(FindingsSummary, json_safe(self.findings), "findings"),
            tests=from_json(dict[str, dict[str, PermutationTest]], json_safe(self.tests), "tests"),
            probes=ProbeSections(inversion=details.pop("inversion", None), volume=details.pop("volume", None),
                                 verification=details.pop("verification", None),
                                 attributes=details.pop("attributes", None), extra=details),
            schema_version=SCHEMA_VERSION)

    def _write_groups_csv(self, out: Path) -> None:
        self._write_table(out / GROUPS_FILE, figures_frame(self.figures))

    def _gate(self, results: Results, out: Path, policy, baseline):
        verdict = evaluate_policy(policy, results, baseline=baseline)
        results.policy_verdict = verdict.to_section()
        self._write_results(out, results)
        return verdict


def _generator_details(artifacts: Sequence, sources: Sequence[str]) -> dict:
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


def _is_checkpoint_write_failure(exc: RuntimeError) -> bool:
    return any(words in str(exc) for words in TORCH_WRITE_FAILURES)


def run_audit(config: RunConfig) -> RunOutcome:
    return AuditRun(config).run()
