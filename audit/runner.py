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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from audit import __version__
from audit.errors import InputError
from audit.faces import FaceConfig
from audit.pipeline import (build_embedder, default_group_by, detection_table, load_dataset_for_run,
                            open_target)
from audit.results import (CORRECTIONS, DISPARITY_KINDS, GROUPS_FILE, RESULTS_FILE, SCHEMA_VERSION, Disparity,
                           Figure, disparities_to_dicts, figures_to_dicts, write_json_atomic)
from audit.targets.base import STATUS_OK

log = logging.getLogger(__name__)

PROBES = ("detection", "inversion", "volume", "verification")
DEFAULT_PROBES = PROBES
DEFAULT_SEED = 0
DEFAULT_EPOCHS = 150
DEFAULT_N_RESAMPLES = 1000
#: Real different-person pairs drawn (distinct, without replacement) to find the threshold at FMR 1e-3.
DEFAULT_IMPOSTOR_PAIRS = 200_000
#: How findings are chosen among the disparities (--correction).
DEFAULT_CORRECTION = "holm"
LIBRARIES = ("torch", "dlib-bin", "numpy", "pandas", "scipy", "scikit-learn", "jinja2", "weasyprint",
             "seaborn", "matplotlib", "httpx", "onnxruntime")

DETECTIONS_FILE = "detections.csv"
INVERSION_SAMPLES_FILE = "inversion_samples.csv"


@dataclass(frozen=True)
class RunConfig:
    """Everything ``audit run`` needs, validated at construction."""

    dataset_dir: Path
    out_dir: Path
    target_spec: str = "dlib"
    target_options: tuple[str, ...] = ()
    group_by: tuple[str, ...] | None = None
    probes: tuple[str, ...] = DEFAULT_PROBES
    face_config: FaceConfig = FaceConfig()
    cache_path: Path | None = None
    use_cache: bool = True
    workers: int | None = None
    seed: int = DEFAULT_SEED
    epochs: int = DEFAULT_EPOCHS
    image_size: int = 64
    batch_size: int = 200
    validate_every: int = 5
    average_identities: bool = False
    generator_channels: int = 512
    identity_loss: float = 0.0
    n_resamples: int = DEFAULT_N_RESAMPLES
    correction: str = DEFAULT_CORRECTION
    pairs_file: Path | None = None
    report: bool = True
    no_faces: bool = False
    policy_path: Path | None = None
    baseline_path: Path | None = None
    max_requests: int | None = None
    device: str = "auto"
    show_progress: bool = True
    command_line: str = ""

    def __post_init__(self) -> None:
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown or not self.probes:
            raise InputError(f"--probes {','.join(self.probes)!r}: unknown probe(s) {unknown}; "
                             f"choose from {', '.join(PROBES)}.")
        if self.epochs < 1:
            raise InputError(f"--epochs {self.epochs!r}: must be at least 1.")
        if self.image_size not in (64, 128):
            raise InputError(f"--image-size {self.image_size!r}: must be 64 or 128.")
        if self.n_resamples < 100:
            raise InputError(f"--resamples {self.n_resamples!r}: use at least 100 for a 95% interval.")
        if self.correction not in CORRECTIONS:
            raise InputError(f"--correction {self.correction!r}: choose {' or '.join(CORRECTIONS)} (Holm: "
                             "family-wise error, the default; bh: Benjamini-Hochberg false discovery rate).")

    def settings(self) -> dict:
        """The settings results.json records (paths as given, never secrets)."""
        data = asdict(self)
        data["face_config"] = asdict(self.face_config)
        data["target_options"] = [o.split("=", 1)[0] + "=..." if "key" in o.lower() or "pat" in o.lower()
                                  else o for o in self.target_options]
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()
                if k not in ("show_progress", "command_line")}


@dataclass
class RunOutcome:
    results: dict
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
        self.probe_details: dict[str, dict] = {}
        self.tests: dict[str, dict] = {}
        self.findings: dict = {}

    # -- stages ------------------------------------------------------------------
    def run(self) -> RunOutcome:
        config = self.config
        started = time.monotonic()
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        dataset = load_dataset_for_run(config.dataset_dir, group_by=config.group_by)
        group_by = config.group_by or default_group_by(dataset)
        if not group_by:
            raise InputError(f"dataset {str(config.dataset_dir)!r} has no attribute to group by; "
                             "add attribute columns to its manifest or pass --group-by.")
        self.dataset, self.group_by = dataset, tuple(group_by)
        self.groupings = groupings_for(group_by)
        target_extra = {"max_requests": config.max_requests} if config.max_requests else {}
        target = open_target(config.target_spec, config.target_options, **target_extra)
        self.target = target
        need_chips = "inversion" in config.probes
        with build_embedder(target, face_config=config.face_config, cache_path=config.cache_path,
                            use_cache=config.use_cache, workers=config.workers,
                            show_progress=config.show_progress) as embedder:
            self.embedder = embedder
            embset = embedder.embed_dataset(dataset, chip_size=config.image_size if need_chips else None)
            self.embset = embset
            embset.table.drop(columns=["content_hash"]).to_csv(out / DETECTIONS_FILE, index=False)
            if "detection" in config.probes:
                self._detection()
            ok = embset.ok
            if "volume" in config.probes:
                self._volume(ok)
            if "verification" in config.probes:
                self._verification(ok)
            if "inversion" in config.probes:
                self._inversion(ok, out)
        self._findings()
        results = self._results(started)
        write_json_atomic(out / RESULTS_FILE, results)
        self._write_groups_csv(out)
        outcome = RunOutcome(results, out)
        if config.policy_path is not None:
            outcome.verdict = self._gate(results, out)
        if config.report:
            from reports.render import render_report

            outcome.report_files = render_report(out, no_faces=config.no_faces)
        return outcome

    def _samples(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        table = self.embset.table
        cols = ["image_id", "identity", *self.group_by]
        frame = table.loc[:, cols] if rows is None else table.loc[rows, cols]
        return frame.reset_index(drop=True)

    def _summarize(self, samples: pd.DataFrame, *, probe: str, metric: str, value: str, kind: str,
                   better: str | None, disparity_kinds: Sequence[str] = DISPARITY_KINDS) -> None:
        from probes.stats import group_figures

        figures, disparities = group_figures(
            samples, probe=probe, metric=metric, value=value, person="identity",
            groupings=self.groupings, better=better, kind=kind, n_resamples=self.config.n_resamples,
            seed=self.config.seed, disparity_kinds=disparity_kinds)
        self.figures.extend(figures)
        self.disparities.extend(disparities)

    def _permutation(self, samples: pd.DataFrame, *, key: str, value: str) -> None:
        from probes.stats import permutation_test

        tests = {}
        for grouping in self.groupings:
            name = "*".join(grouping)
            tests[name] = permutation_test(samples, value=value, grouping=grouping, person="identity",
                                           n_permutations=self.config.n_resamples, seed=self.config.seed)
        self.tests[key] = tests

    def _detection(self) -> None:
        samples = self._samples()
        samples["failed"] = (self.embset.table["status"].to_numpy() != STATUS_OK).astype(float)
        self._summarize(samples, probe="detection", metric="failure_rate", value="failed", kind="rate",
                        better="lower")
        self._permutation(samples, key="detection.failure_rate", value="failed")
        self.probe_details["detection"] = {
            "by_status": self.embset.status_counts(),
            "reasons": {str(k): int(v) for k, v in
                        self.embset.table.loc[~self.embset.ok, "reason"].value_counts().head(20).items()},
            "table": detection_table(self.embset.table, self.group_by).reset_index().to_dict("records"),
        }

    def _volume(self, ok: np.ndarray) -> None:
        from probes.volume import volume_probe

        result = volume_probe(self.embset.vectors[ok], self._samples(ok), groupings=self.groupings,
                              person="identity", metric=self.target.metric,
                              threshold=self.target.default_threshold, seed=self.config.seed)
        self.figures.extend(result.figures)
        self.disparities.extend(result.disparities)
        self.probe_details["volume"] = result.details

    def _verification(self, ok: np.ndarray) -> None:
        from probes.verification import read_lfw_pairs, verification_probe

        samples = self._samples()
        if samples.loc[ok, "identity"].duplicated().sum() == 0:
            self.probe_details["verification"] = {
                "skipped": "the dataset has no identity with two or more images: verification needs "
                           "genuine pairs (LFW has them; UTKFace does not)."}
            return
        pairs = None
        pairs_file = self.config.pairs_file
        if pairs_file is None and (Path(self.dataset.root) / "pairs.txt").is_file():
            pairs_file = Path(self.dataset.root) / "pairs.txt"
        if pairs_file is not None:
            pairs = read_lfw_pairs(pairs_file, folder=_pairs_folder(samples["image_id"]))
        # Every image, found face or not: the rates are generalised (ISO/IEC 19795-1).
        result = verification_probe(self.embset.vectors, samples, groupings=self.groupings,
                                    person="identity", metric=self.target.metric,
                                    threshold=self.target.default_threshold, pairs=pairs,
                                    seed=self.config.seed, acquired=np.asarray(ok, dtype=bool))
        self.figures.extend(result.figures)
        self.disparities.extend(result.disparities)
        self.probe_details["verification"] = result.details

    def _inversion(self, ok: np.ndarray, out: Path) -> None:
        from probes.inversion.probe import run_inversion_probe
        from probes.inversion.splits import split_identities
        from probes.inversion.training import TrainingConfig
        from probes.pairs import sample_impostor_pairs

        config = self.config
        usable = ok & (self.embset.table["chip_status"].to_numpy() == STATUS_OK)
        rows = np.flatnonzero(usable)
        table = self.embset.table.iloc[rows].reset_index(drop=True)
        split = split_identities(table, person="identity", stratify=list(self.group_by), seed=config.seed)
        vectors = self.embset.vectors[rows]
        impostor_pairs = sample_impostor_pairs(table["identity"].to_numpy(), DEFAULT_IMPOSTOR_PAIRS,
                                               seed=config.seed)
        impostors = impostor_pairs.distances(vectors, self.target.metric)
        training = TrainingConfig(epochs=config.epochs, batch_size=config.batch_size,
                                  validate_every=config.validate_every, seed=config.seed,
                                  device=config.device, image_size=config.image_size,
                                  base_channels=config.generator_channels,
                                  identity_weight=config.identity_loss)
        identity_model = None
        if config.identity_loss > 0:
            factory = getattr(self.target, "differentiable_model", None)
            if factory is None:
                raise InputError(f"--identity-loss needs a white-box target whose network runs in PyTorch "
                                 f"(dlib); {self.target.name!r} is a black box to this tool.")
            identity_model = factory()
        result = run_inversion_probe(
            embeddings=vectors, chips=self.embset.chips[rows], table=table, split=split,
            embed_fn=self.embedder.embed_arrays if self.embedder.reembedding_target is not None else None,
            metric=self.target.metric,
            default_threshold=self.target.default_threshold, impostor_distances=impostors,
            config=training, out_dir=out, groupings=self.groupings, person="identity", seed=config.seed,
            average_identities=config.average_identities, progress=config.show_progress,
            identity_model=identity_model)
        samples = result.samples
        samples.to_csv(out / INVERSION_SAMPLES_FILE, index=False)
        metrics = [("mean_distance", "distance", "mean", "higher"),
                   ("success_rate_at_default", "success_at_default", "rate", "lower"),
                   ("success_rate_at_crossing", "success_at_crossing", "rate", "lower"),
                   ("success_rate_at_fmr_1e-3", "success_at_fmr_1e-3", "rate", "lower"),
                   ("no_face_rate", "no_face", "rate", "lower"),
                   ("random_pair_distance_within", "random_pair_distance_within", "mean", None),
                   ("type2_distance", "type2_distance", "mean", "higher")]
        for metric, column, kind, better in metrics:
            if column not in samples.columns or samples[column].notna().sum() == 0:
                continue
            self._summarize(samples, probe="inversion", metric=metric, value=column, kind=kind, better=better)
        self._permutation(samples, key="inversion.mean_distance", value="distance")
        details = dict(result.details)
        details["split_sizes"] = {str(k): int(v) for k, v in split.value_counts().items()}
        details["impostor_pairs"] = impostor_pairs.counts()
        self.probe_details["inversion"] = details

    def _findings(self) -> None:
        """Correct every disparity's p-value for all the run's comparisons, once, after every probe."""
        from probes.findings import mark_findings

        self.findings = mark_findings(self.disparities, self.config.correction)

    # -- outputs -----------------------------------------------------------------
    def _results(self, started: float) -> dict:
        from audit.data.describe import describe_dataset

        dataset = self.dataset
        table = dataset.table
        device = self.probe_details.get("inversion", {}).get("device", "cpu")
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "face-bias-audit", "version": __version__},
            "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command_line": self.config.command_line,
            "seed": self.config.seed,
            "duration_seconds": round(time.monotonic() - started, 1),
            "target": self.target.info().to_dict(),
            "dataset": {"path": str(self.config.dataset_dir), "n_images": int(len(table)),
                        "n_identities": int(table["identity"].nunique()),
                        "has_identities": bool(dataset.has_identities),
                        "group_by": list(self.group_by),
                        "n_excluded": int(len(dataset.exclusions)),
                        "describe": describe_dataset(dataset, self.group_by)},
            "settings": self.config.settings(),
            "environment": environment(device),
            "detection": self.probe_details.get("detection"),
            "figures": figures_to_dicts(self.figures),
            "disparities": disparities_to_dicts(self.disparities),
            "findings": self.findings,
            "tests": self.tests,
            "probes": {k: v for k, v in self.probe_details.items() if k != "detection"},
            "policy_verdict": None,
        }

    def _write_groups_csv(self, out: Path) -> None:
        from probes.stats import figures_frame

        figures_frame(self.figures).to_csv(out / GROUPS_FILE, index=False)

    def _gate(self, results: dict, out: Path):
        from audit.gate import evaluate_policy, load_policy
        from audit.results import load_results

        policy = load_policy(self.config.policy_path)
        baseline = load_results(self.config.baseline_path) if self.config.baseline_path else None
        verdict = evaluate_policy(policy, results, baseline=baseline)
        results["policy_verdict"] = verdict.to_dict()
        write_json_atomic(out / RESULTS_FILE, results)
        return verdict


def run_audit(config: RunConfig) -> RunOutcome:
    return AuditRun(config).run()
