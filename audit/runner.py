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

import pandas as pd

from audit import __version__
# The inversion probe's constants and judging functions are importable from the runner too.
from audit.builtin_probes.inversion import DEFAULT_IMPOSTOR_PAIRS, INVERSION_SAMPLES_FILE  # noqa: F401
from audit.builtin_probes.inversion_marks import (INVERSION_METRICS, generator_spread, leakage_spread,  # noqa: F401
                                                  mark_no_signal, mark_unstable, mark_unstable_leakage)
from audit.data.describe import describe_dataset
from audit.data.manifest import load_dataset
from audit.data.remote import PAIRS_FILE, join_location, read_location
from audit.errors import InputError, OutputError
from audit.gate import evaluate_policy, load_policy
from audit.generator_stage import check_corpus_not_all_audit, dataset_keys, identity_model_for
from audit.images import ImageReadError
from audit.json_model import Record, from_json, json_safe
from audit.outputs import (check_own_folder, check_writable_folder, mark_own_folder, private_folder, write_atomic,
                           writing)
from audit.pipeline import build_embedder, default_group_by, load_dataset_for_run, open_target, opened_cache
from audit.probe_registry import Probe, ProbeInputs, ProbeOutput, run_order
from audit.result_sections import (DatasetSection, EnvironmentSection, FindingsSummary, PermutationTest, TargetSection,
                                   ToolSection)
from audit.results import (GROUPS_FILE, RESULTS_FILE, SCHEMA_VERSION, Disparity, Figure, Results, load_results,
                           probe_sections_arguments, write_json_atomic, written_by_audit_run)
from audit.run_config import RunConfig
from audit.sinks import csv_frame
from probes.findings import mark_findings
from probes.inversion.artifact import check_target, read_artifact
from probes.stats import figures_frame
from probes.verification import read_lfw_pairs
from reports.render import render_report

log = logging.getLogger(__name__)

LIBRARIES = ("torch", "dlib-bin", "numpy", "pandas", "scipy", "scikit-learn", "jinja2", "weasyprint",
             "seaborn", "matplotlib", "httpx", "onnxruntime")

#: PyTorch reports a failed checkpoint write (a full disk, most often) as a RuntimeError with these words.
TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed", "file write failed", "unexpected pos")
MSG_CHECKPOINT_WRITE = ("Cannot write the generator's checkpoints in {folder!r} ({error}): the disk is full or "
                        "refused the write. Free some space on that disk, or pass another --out on another disk; "
                        "the embeddings are cached and the last complete checkpoint kept, so a rerun resumes.")

DETECTIONS_FILE = "detections.csv"
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
        self.pairs: pd.DataFrame | None = None
        self.findings: dict = {}
        #: The selected probes in the order they run, and what they need prepared between them.
        self.probes: list[Probe] = run_order(config.probes)
        self.needs = {need for probe in self.probes for need in probe.needs}
        #: Each probe's output, in the order they ran.
        self.outputs: dict[str, ProbeOutput] = {}

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
        need_chips = "chips" in self.needs
        self.corpora = self._load_corpora()
        check_corpus_not_all_audit(self.corpora, dataset_keys(dataset))   # --dataset C --train-dataset C
        with opened_cache(config.cache_path, use_cache=config.use_cache) as cache:
            target_extra = {"max_requests": config.max_requests} if config.max_requests else {}
            target = open_target(config.target_spec, config.target_options, **target_extra)
            self.target = target
            self.identity_model = None
            if "generators" in self.needs:   # a black box with --identity-loss is refused before any call
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
        for name, frame in self._probe_tables():
            self._write_table(out / name, frame)
        self._write_groups_csv(out)
        self._write_results(out, results)     # last: its presence says the run finished
        outcome = RunOutcome(results, out)
        if policy is not None:
            outcome.verdict = self._gate(results, out, policy, baseline)
        if config.report:
            outcome.report_files = render_report(out, no_faces=config.no_faces)
        return outcome

    def _run_probes(self, out: Path) -> None:
        """Each asked-for probe on the shared inputs, in dependency order; an unwritable checkpoint folder is an
        OutputError."""
        inputs = self._probe_inputs(out)
        for probe in self.probes:
            try:
                output = probe.run(inputs)
            except RuntimeError as exc:
                if not _is_checkpoint_write_failure(exc):
                    raise
                raise OutputError(MSG_CHECKPOINT_WRITE.format(folder=str(out / "checkpoints"),
                                                              error=str(exc).splitlines()[0])) from exc
            inputs.outputs[probe.name] = output
            self._record(probe.name, output)
        self.outputs = inputs.outputs

    def _probe_inputs(self, out: Path) -> ProbeInputs:
        """What every probe reads, built once: the embeddings and labels, the target's metric, the settings."""
        config, target = self.config, self.target
        return ProbeInputs(dataset=self.dataset, embeddings=self.embset, group_by=self.group_by,
                           groupings=self.groupings, metric=target.metric, threshold=target.default_threshold,
                           seed=config.seed, n_resamples=config.n_resamples, out_dir=out,
                           probes=tuple(p.name for p in self.probes), pairs=self.pairs, settings=config,
                           target=target, embedder=self.embedder, corpora=self.corpora,
                           saved_generators=list(getattr(self, "artifacts", [])),
                           identity_model=self.identity_model)

    def _probe_tables(self) -> list[tuple[str, pd.DataFrame]]:
        """The CSV files the probes asked for (checked by :meth:`_record`), in the order the probes ran."""
        return [(name, frame) for output in self.outputs.values() for name, frame in output.tables.items()]

    def _load_corpora(self) -> list:
        """The training corpora and saved generators, read before any target call: a typo must not cost a run."""
        if "generators" not in self.needs:
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
        if "pairs" not in self.needs:
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

    def _record(self, probe: str, output: ProbeOutput) -> None:
        """A probe's output into the run's figures, tests and details; its tables must be plain CSV names
        inside the run folder, none of the run's own files."""
        own = {DETECTIONS_FILE, GROUPS_FILE, RESULTS_FILE}
        for name in output.tables:
            if Path(name).name != name or not name.endswith(".csv") or name in own:
                raise ValueError(f"probe {probe!r} asked to write {name!r}: a probe's table is a plain file "
                                 f"name ending in .csv, none of {sorted(own)}.")
        self.figures.extend(output.figures)
        self.disparities.extend(output.disparities)
        self.tests.update(output.tests)
        if output.section is not None:
            self.probe_details[probe] = output.section

    def _findings(self) -> None:
        """Correct every disparity's p-value for all the run's comparisons, once, after every probe."""
        self.findings = mark_findings(self.disparities, self.config.correction)

    # -- outputs -----------------------------------------------------------------
    def _results(self, started: float) -> Results:
        dataset = self.dataset
        table = dataset.table
        device = next((o.device for o in self.outputs.values() if o.device), None) or "cpu"
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
            findings=from_json(FindingsSummary, json_safe(self.findings), "findings"),
            tests=from_json(dict[str, dict[str, PermutationTest]], json_safe(self.tests), "tests"),
            **probe_sections_arguments(self.probe_details), schema_version=SCHEMA_VERSION)

    def _write_groups_csv(self, out: Path) -> None:
        self._write_table(out / GROUPS_FILE, figures_frame(self.figures))

    def _gate(self, results: Results, out: Path, policy, baseline):
        verdict = evaluate_policy(policy, results, baseline=baseline)
        results.policy_verdict = verdict.to_section()
        self._write_results(out, results)
        return verdict


def _is_checkpoint_write_failure(exc: RuntimeError) -> bool:
    return any(words in str(exc) for words in TORCH_WRITE_FAILURES)


def run_audit(config: RunConfig) -> RunOutcome:
    return AuditRun(config).run()
