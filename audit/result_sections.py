"""The sections of results.json other than the figures and disparities, as typed records.

Each section is what one stage of a run wrote (the target's description,
the dataset's, each probe's details, the gate's verdict) and what the report
and the gate read.  Every field has a default, so a file that lacks an
optional section part still reads; a field that is present must have its
declared type (:mod:`audit.json_model` checks it).  The shapes are
documented in ``docs/results-schema.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, TypeVar

from audit.json_model import Record, from_json, to_json

NAN = math.nan
R = TypeVar("R", bound=Record)


# --------------------------------------------------------------------------- run

@dataclass(kw_only=True)
class ToolSection(Record):
    name: str = "face-bias-audit"
    version: str | None = None


@dataclass(kw_only=True)
class TargetSection(Record):
    """The target as it described itself: enough to tell two runs of different models apart."""

    name: str = ""
    version: str | None = None
    dimension: int | None = None
    metric: str | None = None
    default_threshold: float | None = None
    fingerprint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class DatasetSection(Record):
    """The audited dataset; ``describe`` is ``audit dataset describe``'s document for it."""

    path: str | None = None
    n_images: int | None = None
    n_identities: int | None = None
    has_identities: bool | None = None
    group_by: list[str] = field(default_factory=list)
    n_excluded: int | None = None
    labels_source: str | None = None
    describe: dict[str, Any] = field(default_factory=dict)

    def groupings(self) -> dict[str, dict[str, dict]]:
        """grouping -> group -> {n_images, n_people}, from ``describe.groupings``.

        ``audit dataset describe`` writes a list of groupings, each with a
        list of groups; older or hand-made files may hold the nested mapping.
        Both are read.
        """
        raw = self.describe.get("groupings") or {}
        if isinstance(raw, dict):
            return {str(k): dict(v or {}) for k, v in raw.items() if isinstance(v, (dict, type(None)))}
        out: dict[str, dict[str, dict]] = {}
        for entry in raw if isinstance(raw, list) else []:
            if isinstance(entry, dict) and "grouping" in entry:
                out[str(entry["grouping"])] = {str(g.get("group")): dict(g) for g in entry.get("groups") or []
                                               if isinstance(g, dict)}
        return out

    def exclusions(self) -> dict[str, int]:
        """Exclusion reason -> count, from either form of ``describe.exclusions``."""
        raw = self.describe.get("exclusions") or {}
        counts: dict[str, int] = {}
        for key, value in raw.items() if isinstance(raw, dict) else []:
            if isinstance(value, dict) and isinstance(value.get("by_reason"), list):
                for item in value["by_reason"]:
                    if isinstance(item, dict):
                        reason = str(item.get("reason"))
                        counts[reason] = counts.get(reason, 0) + int(item.get("count") or 0)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                counts[str(key)] = counts.get(str(key), 0) + int(value)
        return counts


@dataclass(kw_only=True)
class EnvironmentSection(Record):
    python: str | None = None
    platform: str | None = None
    device: str | None = None
    libraries: dict[str, str | None] = field(default_factory=dict)


@dataclass(kw_only=True)
class DetectionRow(Record):
    """One group's detection outcomes (``attribute`` is its attribute, ``all`` for everyone)."""

    group: str = ""
    attribute: str = ""
    ok: int = 0
    no_face: int = 0
    error: int = 0
    failure_rate: float = NAN


@dataclass(kw_only=True)
class DetectionSection(Record):
    by_status: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    table: list[DetectionRow] = field(default_factory=list)


@dataclass(kw_only=True)
class FindingsSummary(Record):
    """How findings were chosen among the run's comparisons (``--correction``)."""

    method: str | None = None
    alpha: float | None = None
    n_comparisons: int = 0
    n_findings: int = 0
    n_blocked: int = 0
    n_without_p_value: int = 0


@dataclass(kw_only=True)
class PermutationTest(Record):
    """A permutation test of "no difference between the groups of one grouping"."""

    statistic_name: str | None = None
    statistic: float = NAN
    p_value: float = NAN
    n_permutations: int | None = None
    n_groups: int | None = None
    n_people: int | None = None


@dataclass(frozen=True, kw_only=True)
class Check:
    """One gate rule judged on one figure or disparity, as the verdict records it.

    ``judged_on`` is ``"ci_high"``, ``"ci_low"`` or ``"estimate"``; for a
    baseline check ``judged_value`` is the worsening (absolute or relative)
    and ``baseline_value`` the baseline's number it was compared with.
    """

    rule_id: str
    description: str
    metric: str
    grouping: str
    group: str | None
    kind: str | None
    estimate: float
    ci_low: float | None
    ci_high: float | None
    judged_on: str
    judged_value: float
    bound: float
    operator: str
    passed: bool
    reason: str
    note: str = ""
    baseline_value: float | None = None
    against_baseline: bool = False
    flags: tuple[str, ...] = ()

    @property
    def subject(self) -> str:
        """``race / Black`` for a figure, ``race gap Black vs White`` for a disparity."""
        return subject_label(self.grouping, self.group, self.kind)

    def to_dict(self) -> dict:
        return to_json(self)


def subject_label(grouping: str, group: str | None, kind: str | None) -> str:
    """``race / Black`` for a figure, ``race gap Black vs White`` for a disparity between two groups."""
    if kind is None:
        return f"{grouping} / {group}"
    return f"{grouping} {kind} {group}" if group else f"{grouping} {kind}"


@dataclass(kw_only=True)
class VerdictSection(Record):
    """A policy's verdict on the run (``audit run --policy`` writes it; ``audit gate`` prints it)."""

    policy: str = "policy"
    policy_file: str | None = None
    passed: bool = False
    exit_code: int | None = None
    n_checks: int = 0
    n_failed: int = 0
    compared_with_baseline: bool = False
    summary: str = ""
    checks: list[Check] = field(default_factory=list)


# --------------------------------------------------------------------------- volume

@dataclass(kw_only=True)
class Spectrum(Record):
    top_eigenvalues: list[float] = field(default_factory=list)
    total_variance: float = NAN


@dataclass(kw_only=True)
class VolumeSection(Record):
    subsample_size: int | None = None
    n_draws: int | None = None
    seed: int | None = None
    metric: str | None = None
    threshold: float | None = None
    dimension: int | None = None
    unit: str | None = None
    spectra: dict[str, Spectrum] = field(default_factory=dict)


# --------------------------------------------------------------------------- verification

@dataclass(kw_only=True)
class VerificationSummaryRow(Record):
    """One group's line of the ISO/IEC 19795-10-style summary table."""

    grouping: str = ""
    group: str = ""
    n_images: int | None = None
    n_people: int | None = None
    failed_to_acquire: int | None = None
    fta: float = NAN
    fta_ci: list[float] | None = None
    fnmr_at_default: float = NAN
    fnmr_at_default_ci: list[float] | None = None
    fnmr_at_default_pairs: int | None = None
    fmr_at_default: float = NAN
    fmr_at_default_ci: list[float] | None = None
    fmr_at_default_pairs: int | None = None


@dataclass(kw_only=True)
class FmrCells(Record):
    """FMR between each pair of groups at one threshold: ``value[r][c]`` for groups r and c."""

    threshold: float = NAN
    value: list[list[float]] = field(default_factory=list)
    ci_low: list[list[float]] = field(default_factory=list)
    ci_high: list[list[float]] = field(default_factory=list)


@dataclass(kw_only=True)
class FmrMatrix(Record):
    groups: list[str] = field(default_factory=list)
    pairs: list[list[int]] = field(default_factory=list)
    fmr: dict[str, FmrCells] = field(default_factory=dict)


@dataclass(kw_only=True)
class FairnessDiscrepancy(Record):
    value: float = NAN
    ci_low: float | None = None
    ci_high: float | None = None
    alpha: float | None = None
    largest_fmr_difference: float = NAN
    largest_fnmr_difference: float = NAN
    interval: str | None = None


@dataclass(kw_only=True)
class DetCurve(Record):
    fmr: list[float] = field(default_factory=list)
    fnmr: list[float] = field(default_factory=list)
    genuine_pairs: int | None = None
    impostor_pairs: int | None = None


@dataclass(kw_only=True)
class DetCurves(Record):
    thresholds: list[float] = field(default_factory=list)
    fmr_levels: list[float] = field(default_factory=list)
    by_group: dict[str, dict[str, DetCurve]] = field(default_factory=dict)


@dataclass(kw_only=True)
class GroupThreshold(Record):
    threshold: float = NAN
    interval: list[float] | None = None
    estimable: bool = True
    impostor_pairs: int | None = None
    #: Kish's effective number of pairs of people behind the impostor pairs (a threshold at FMR f
    #: needs 30 / f of them as well as 30 / f image pairs).
    person_pairs: float | None = None
    reason: str | None = None


@dataclass(kw_only=True)
class VerificationSection(Record):
    """How the verification rates were counted, and the curves and tables behind them."""

    skipped: str | None = None
    metric: str | None = None
    match_rule: str | None = None
    default_threshold: float | None = None
    target_fmr: float | None = None
    global_threshold_at_target_fmr: float | None = None
    global_threshold_interval: list[float] | None = None
    global_threshold_estimable: bool = True
    global_threshold_reason: str | None = None
    impostor_pairs_needed: int | None = None
    generalised_rates: list[str] = field(default_factory=list)
    generalised_note: str | None = None
    pairs: str | None = None
    impostor_pairs: str | None = None
    pairs_dropped_unknown_images: int | None = None
    max_impostor_pairs: int | None = None
    seed: int | None = None
    images_without_face: int | None = None
    pair_counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    thresholds_by_group: dict[str, GroupThreshold] = field(default_factory=dict)
    det: DetCurves | None = None
    cross_group_fmr: dict[str, FmrMatrix] = field(default_factory=dict)
    fairness_discrepancy_rate: dict[str, dict[str, FairnessDiscrepancy]] = field(default_factory=dict)
    summary: list[VerificationSummaryRow] = field(default_factory=list)


# --------------------------------------------------------------------------- inversion

@dataclass(kw_only=True)
class SignalTest(Record):
    """Whether one group's reconstructions are closer to their own source than to the others sharing its labels."""

    grouping: str = ""
    group: str = ""
    n_people: int | None = None
    n_without_vector: int | None = None
    gap: float = NAN
    share_closer: float = NAN
    rank1_rate: float = NAN
    p_value: float = NAN
    alpha: float | None = None
    signal: bool = False
    reason: str | None = None
    stratified_on: list[str] = field(default_factory=list)
    n_strata: int | None = None
    n_alone: int | None = None


@dataclass(kw_only=True)
class SignalSummary(Record):
    tested: bool = False
    overall: bool | None = None
    p_value: float | None = None
    alpha: float | None = None
    groups_without_signal: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class TrainingSetSummary(Record):
    """What the generator learned from: the corpora, what was dropped and why, the composition."""

    datasets: list[str] = field(default_factory=list)
    balanced_over: list[str] = field(default_factory=list)
    per_group: int | None = None
    n_candidates: int | None = None
    n_train_images: int | None = None
    n_train_people: int | None = None
    n_val_people: int | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    composition: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(kw_only=True)
class GeneratorRecord(Record):
    label: str = ""
    source: str | None = None
    key: str | None = None
    best_epoch: int | None = None
    best_val_mean_distance: float | None = None
    training_seconds: float | None = None


@dataclass(kw_only=True)
class EpochRecord(Record):
    epoch: int | None = None
    train_loss: float | None = None
    val_mean_distance: float | None = None
    val_failures: int | None = None


@dataclass(kw_only=True)
class SampleImage(Record):
    """One original beside its reconstruction (paths relative to the run folder)."""

    grouping: str = ""
    group: str = ""
    image_id: str | None = None
    original: str | None = None
    reconstruction: str | None = None
    distance: float = NAN


@dataclass(kw_only=True)
class DistanceSamples(Record):
    """A group's reconstruction distances and its random-pair baseline, for the histograms."""

    genuine: list[float] = field(default_factory=list)
    random_pair: list[float] = field(default_factory=list)


@dataclass(kw_only=True)
class ThresholdSweep(Record):
    """The share of reconstructions matched at each threshold, per group."""

    thresholds: list[float] = field(default_factory=list)
    by_group: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass(kw_only=True)
class GroupLeakageRecord(Record):
    """One group's identity-leakage thresholds and curve (``probes.inversion.leakage``).

    ``thresholds`` the same-group threshold at each FMR (key ``1e-2``);
    ``curve`` the success at each of the section's ``curve_fmrs`` (None
    where too few pairs); ``not_estimable`` the metrics whose threshold
    rests on too few pairs, with the reason.
    """

    n_people: int = 0
    n_type2_people: int = 0
    thresholds: dict[str, float | None] = field(default_factory=dict)
    curve: list[float | None] = field(default_factory=list)
    not_estimable: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class LeakageSection(Record):
    """The identity-leakage figures' settings: one gallery size for every group, the FMRs, the curves."""

    gallery_size: int | None = None
    fmrs: list[float] = field(default_factory=list)
    curve_fmrs: list[float] = field(default_factory=list)
    headline_fmr: float | None = None
    groups: dict[str, dict[str, GroupLeakageRecord]] = field(default_factory=dict)


@dataclass(kw_only=True)
class GeneratorSpread(Record):
    """A group's figure under each generator (``values``, one per seed) and their range."""

    values: list[float] = field(default_factory=list)
    min: float | None = None
    max: float | None = None
    sd: float | None = None


@dataclass(kw_only=True)
class InversionSection(Record):
    """How the generator was obtained, whether it carries identity, and the distances behind the figures."""

    unavailable: str | None = None
    training_source: str | None = None
    warnings: list[str] = field(default_factory=list)
    training_set: TrainingSetSummary | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
    average_identities: bool = False
    device: str | None = None
    training_config: dict[str, Any] = field(default_factory=dict)
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_mean_distance: float | None = None
    training_seconds: float | None = None
    samples_per_second: float | None = None
    n_generators: int | None = None
    generators: list[GeneratorRecord] = field(default_factory=list)
    generator_spread: dict[str, dict[str, dict[str, GeneratorSpread]]] = field(default_factory=dict)
    n_test: int | None = None
    n_no_face: int | None = None
    reembedded: bool | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    success_rate_at: dict[str, float] = field(default_factory=dict)
    crossing_fold_thresholds: list[float] = field(default_factory=list)
    fmr_threshold_not_estimable: str | None = None
    random_pair_group: str | None = None
    n_impostor_pairs: int | None = None
    impostor_pairs: dict[str, Any] = field(default_factory=dict)
    signal: list[SignalTest] = field(default_factory=list)
    signal_summary: SignalSummary | None = None
    leakage: LeakageSection | None = None
    distributions: dict[str, dict[str, DistanceSamples]] = field(default_factory=dict)
    sweep: ThresholdSweep | None = None
    sample_images: list[SampleImage] = field(default_factory=list)


# --------------------------------------------------------------------------- attributes

@dataclass(kw_only=True)
class AttributeReaderRecord(Record):
    """One attribute's reader: what it learned from, how well it reads new people, chance beside it.

    ``cv_*`` are cross-validated on the training faces (people as folds);
    ``chance_*`` are the audit population's: the majority class's share for
    accuracy, one over the number of classes for balanced accuracy.
    ``readable`` says the audit population's balanced accuracy is above
    chance (its interval's lower end); fidelity is judged only then.
    """

    attribute: str = ""
    skipped: str | None = None
    classes: list[str] = field(default_factory=list)
    left_out_classes: dict[str, int] = field(default_factory=dict)
    n_train_images: int | None = None
    n_train_people: int | None = None
    regularization_c: float | None = None
    cv_accuracy: float = NAN
    cv_balanced_accuracy: float = NAN
    chance_accuracy: float = NAN
    chance_balanced_accuracy: float = NAN
    readable: bool = False
    n_audit_images: int | None = None
    n_audit_people: int | None = None


@dataclass(kw_only=True)
class ChanceRecord(Record):
    """A group's chance levels: the majority class's share (accuracy), 1 / classes (balanced accuracy)."""

    accuracy: float = NAN
    balanced_accuracy: float = NAN


@dataclass(kw_only=True)
class ConfusionRecord(Record):
    """Source label (rows) against the reader's label (columns): of the real embeddings and of the
    reconstructions; ``grouping`` is an attribute or an intersection (its labels joined with `` / ``)."""

    grouping: str = ""
    sources: list[str] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)
    real: list[list[int]] = field(default_factory=list)
    reconstructed: list[list[int]] = field(default_factory=list)


@dataclass(kw_only=True)
class DriftRecord(Record):
    """A group whose reconstructions the reader places in another group: fidelity below the bound."""

    attribute: str = ""
    grouping: str = ""
    group: str = ""
    fidelity: float = NAN
    ci_low: float | None = None
    ci_high: float | None = None
    drift: float = NAN
    real_accuracy: float = NAN
    recon_accuracy: float = NAN
    drifts_to: str | None = None
    drifts_to_share: float = NAN
    n_people: int | None = None


@dataclass(kw_only=True)
class AttributesSection(Record):
    """The attributes probe: its readers, chance levels, the confusion of reconstructions, the drifts."""

    skipped: str | None = None
    training_source: str | None = None
    evaluated_on: str | None = None
    attributes: list[str] = field(default_factory=list)
    readers: dict[str, AttributeReaderRecord] = field(default_factory=dict)
    chance: dict[str, dict[str, dict[str, ChanceRecord]]] = field(default_factory=dict)
    fidelity_unavailable: str | None = None
    drift_bound: float | None = None
    n_reconstructions: int | None = None
    n_reconstructions_without_vector: int | None = None
    confusion: list[ConfusionRecord] = field(default_factory=list)
    drift: list[DriftRecord] = field(default_factory=list)


@dataclass(kw_only=True)
class GenericSection(Record):
    """The details of a probe this module does not declare (a plugin's): every key kept as written.

    A file read where that probe is not installed keeps its section whole
    (in ``extra``) and writes it back unchanged; where it is installed, the
    report types it with the probe's own section class
    (:meth:`ProbeSections.section`).
    """


@dataclass(kw_only=True)
class ProbeSections(Record):
    """Each probe's details; a probe that did not run is None.  Other probes' details stay in ``extra``."""

    inversion: InversionSection | None = None
    volume: VolumeSection | None = None
    verification: VerificationSection | None = None
    attributes: AttributesSection | None = None

    @classmethod
    def of(cls, sections: Mapping[str, Record | None]) -> "ProbeSections":
        """Sections by probe name: each declared probe's into its field, any other probe's into ``extra``
        (after the declared ones in results.json, in the order given); None is no section."""
        declared = _declared(cls)
        return cls(**{k: v for k, v in sections.items() if k in declared},
                   extra={k: v for k, v in sections.items() if k not in declared and v is not None})

    def get(self, name: str) -> Any:
        """A probe's details by name, or None where it did not run (or kept none)."""
        if name in _declared(type(self)):
            return getattr(self, name)
        return self.extra.get(name)

    def section(self, name: str, kind: type[R] = GenericSection) -> R | None:  # type: ignore[assignment]
        """A probe's details as ``kind``: a section read from a file (a plain object in ``extra``) is
        checked field by field, a ResultsError naming ``probes.<name>.<field>`` where one is wrong."""
        value = self.get(name)
        if value is None or isinstance(value, kind):
            return value
        return from_json(kind, to_json(value), f"probes.{name}")


def _declared(cls: type) -> frozenset[str]:
    """The probe sections a record class declares as fields (``extra`` is not one)."""
    return frozenset(f.name for f in fields(cls) if f.name != "extra")
