"""Plain words for the report: what each metric means, numbers, disparities.

An auditor reads sentences, not ``inversion.success_rate_at_default``.  Each
metric the probes write has a title, a one-sentence meaning and the
direction that is better for the people in a group; a metric this module
does not know still renders, under its raw name, so a new probe never
breaks the report.

Numbers are formatted here, once, so that the tables, the sentences and the
tests agree on how a value is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from audit.results import Disparity, Figure


__all__ = ["MetricText", "METRICS", "MIXES_CROWDING", "LEAKAGE_KEYS", "FLAG_TEXT", "describe_metric", "format_value", "format_interval",
           "format_ratio", "format_count", "format_p", "disparity_sentence", "finding_sentence", "findings_by_pair",
           "better_text", "CORRECTION_TEXT"]


@dataclass(frozen=True)
class MetricText:
    """How the report names and explains one metric.

    ``unit`` is ``"rate"`` (written as a percentage) or ``"number"``;
    ``ratio_sentence`` phrases a ratio between the groups of higher and lower
    value (``{high}``, ``{low}``, ``{ratio}``), for metrics where "x times as
    often" reads naturally.
    """

    key: str
    title: str
    meaning: str
    better: str | None = None
    unit: str = "number"
    ratio_sentence: str | None = None


_AT_DEFAULT = "at the target's default decision threshold"
_AT_CROSSING = ("at the crossing threshold (where the distances of reconstructions and of random pairs "
                "of different people are equally likely)")
_AT_FMR = "at the threshold where 1 in 1,000 random pairs of different people are matched (FMR = 0.1%)"
_OWN_MATCHED = ("Reconstructions of {{high}} faces are matched to their originals {{ratio}}x as often as those of "
                "{{low}} faces, each at its group's own FMR = {fmr} threshold")
_RECON_MATCHED = "Reconstructions of {high} faces are matched to their originals {ratio}x as often as those of {low} faces"

METRICS: dict[str, MetricText] = {m.key: m for m in (
    MetricText("detection.failure_rate", "Detection failure rate",
               "Share of a group's images in which the face detector found no usable face; these images never "
               "reach the model, so the group is under-represented in every later figure.",
               "lower", "rate",
               "The detector fails on {high} images {ratio}x as often as on {low} images"),
    MetricText("inversion.sar_at_own_fmr_1e-2", "Identity leakage: success at the group's own FMR = 1%",
               "Share of a group's reconstructions that the model matches to their original at the threshold where "
               "a reconstruction matches 1 in 100 other people of the same group. It counts only what the "
               "embedding gives away about who a person is: a crowded group gains nothing from its crowding. "
               "About 1% means the reconstructions carry no identity.",
               "lower", "rate", _OWN_MATCHED.format(fmr="1%")),
    MetricText("inversion.sar_at_own_fmr_1e-1", "Identity leakage: success at the group's own FMR = 10%",
               "As the FMR = 1% figure, at the threshold where a reconstruction matches 1 in 10 other people of its "
               "group (estimable from fewer people).",
               "lower", "rate", _OWN_MATCHED.format(fmr="10%")),
    MetricText("inversion.sar_at_own_fmr_1e-3", "Identity leakage: success at the group's own FMR = 0.1%",
               "As the FMR = 1% figure, at the threshold where a reconstruction matches 1 in 1,000 other people of "
               "its group (needs about 200 people per group).",
               "lower", "rate", _OWN_MATCHED.format(fmr="0.1%")),
    MetricText("inversion.rank1_equal_gallery", "Identity leakage: rank 1 in an equal-size gallery",
               "Share of reconstructions whose own original is the nearest face in a gallery of the same size for "
               "every group (the original and other people of the same group, averaged over every such gallery): "
               "an attacker's chance of picking the right person out of a line-up of look-alikes. Chance is one "
               "over the gallery size.",
               "lower", "rate", "Reconstructions of {high} faces pick out their person {ratio}x as often as those of "
                                "{low} faces"),
    MetricText("inversion.leakage_auc", "Identity leakage: AUC",
               "Probability that a reconstruction is closer to its own original than to a random other person of "
               "its group. 50% is chance (no identity), 100% means every reconstruction is nearer its own person "
               "than anyone else of the group.",
               "lower", "rate"),
    MetricText("inversion.type2_sar_at_own_fmr_1e-2", "Identity leakage in other photos: success at own FMR = 1%",
               "As the success at the group's own FMR = 1%, against another photo of the same person rather than "
               "the photo the embedding came from: could the reconstruction unlock the person's other images?",
               "lower", "rate"),
    MetricText("inversion.type2_sar_at_own_fmr_1e-1", "Identity leakage in other photos: success at own FMR = 10%",
               "As the type II FMR = 1% figure, at the group's own FMR = 10% threshold.", "lower", "rate"),
    MetricText("inversion.type2_sar_at_own_fmr_1e-3", "Identity leakage in other photos: success at own FMR = 0.1%",
               "As the type II FMR = 1% figure, at the group's own FMR = 0.1% threshold.", "lower", "rate"),
    MetricText("inversion.type2_rank1_equal_gallery", "Identity leakage in other photos: rank 1 in an equal gallery",
               "As rank 1 in an equal-size gallery, with another photo of the person in the gallery.", "lower", "rate"),
    MetricText("inversion.type2_leakage_auc", "Identity leakage in other photos: AUC",
               "Probability that a reconstruction is closer to another photo of its person than to a random other "
               "person of its group (50% is chance).", "lower", "rate"),
    MetricText("inversion.mean_distance", "Reconstruction distance (mixes leakage with crowding)",
               "Mean distance, in the target's embedding space, between a face and the face reconstructed from "
               "its embedding alone. It mixes how much identity leaks with how tightly the model packs the group: "
               "in a crowded group any face of the group is close. Read it beside the random-pair distance within "
               "the group, and judge leakage by the identity-leakage figures.",
               "higher", "number"),
    MetricText("inversion.success_rate_at_default", "Reconstruction match rate, default threshold (mixes leakage "
               "with crowding)",
               f"Share of a group's reconstructions that the model accepts as the original person {_AT_DEFAULT}. "
               "At one fixed threshold a crowded group scores high even when its reconstructions do not say who "
               "the person is: compare it with the same-group random-match rate at that threshold, and judge "
               "leakage by the identity-leakage figures.",
               "lower", "rate", _RECON_MATCHED + " at the default threshold"),
    MetricText("inversion.random_match_rate_at_default", "Same-group random-match rate, default threshold",
               f"Share of a group's reconstructions that the model matches to a random *other* person of the same "
               f"group {_AT_DEFAULT}: how much of the fixed-threshold match rate the group's crowding alone gives.",
               None, "rate"),
    MetricText("inversion.success_rate_at_crossing", "Reconstruction match rate, crossing threshold (mixes leakage "
               "with crowding)",
               f"Share of a group's reconstructions accepted as the original person {_AT_CROSSING}: one threshold "
               "for every group, so it mixes leakage with crowding.",
               "lower", "rate", _RECON_MATCHED + " at the crossing threshold"),
    MetricText("inversion.success_rate_at_fmr_1e-3", "Reconstruction match rate, global FMR = 0.1% (mixes leakage "
               "with crowding)",
               f"Share of a group's reconstructions accepted as the original person {_AT_FMR}: one threshold for "
               "every group, so it mixes leakage with crowding.",
               "lower", "rate", _RECON_MATCHED + " at the FMR = 0.1% threshold"),
    MetricText("inversion.no_face_rate", "Reconstructions without a detectable face",
               "Share of reconstructions in which the face detector finds no face: a check of the generator's "
               "quality for the group rather than a harm in itself.",
               None, "rate"),
    MetricText("inversion.random_pair_distance_within", "Random-pair distance within the group",
               "Mean distance between the embeddings of two different people of the same group: the baseline a "
               "reconstruction must beat to pass as a particular person.",
               "higher", "number"),
    MetricText("inversion.type2_distance", "Distance to the person's other images",
               "Mean distance between a reconstruction and the embeddings of other images of the same person: "
               "whether a reconstruction could impersonate the person in new photos.",
               "higher", "number"),
    MetricText("volume.log_volume_per_dim", "Embedding volume per dimension (log)",
               "Log of the volume the group's embeddings occupy, divided by the dimension. A smaller volume "
               "means the model packs the group's faces closer together, so they are easier to confuse.",
               "higher", "number"),
    MetricText("volume.relative_log_volume_per_dim", "Relative embedding volume per dimension (log)",
               "The group's log volume per dimension minus that of the whole population: below 0 the model "
               "packs this group's faces more tightly than average.",
               "higher", "number"),
    MetricText("volume.effective_dimensionality", "Effective dimensionality",
               "How many dimensions of the embedding the group's faces actually use (participation ratio of the "
               "covariance eigenvalues). Fewer dimensions leave less room to tell people apart.",
               "higher", "number"),
    MetricText("volume.nn_distance_impostor", "Distance to the nearest other person",
               "Median distance from a face to the nearest face of a different person of the same group. Small "
               "distances mean look-alikes are easy to find.",
               "higher", "number"),
    MetricText("volume.impostor_match_rate", "Impostor match rate",
               f"Share of faces whose nearest different person of the same group is matched {_AT_DEFAULT}: they "
               "would be mistaken for someone else.",
               "lower", "rate",
               "{high} faces have a look-alike the model confuses them with {ratio}x as often as {low} faces"),
    MetricText("volume.spread_ratio", "Spread ratio",
               "Mean distance between the group's faces divided by the same mean over the whole population; "
               "below 1 the group is more tightly packed than average.",
               "higher", "number"),
    MetricText("verification.fnmr_at_default", "False non-match rate (default threshold)",
               f"Share of pairs of images of the same person that the model rejects {_AT_DEFAULT}: people who "
               "would be refused access to their own account.",
               "lower", "rate",
               "Genuine pairs of {high} people are rejected {ratio}x as often as those of {low} people"),
    MetricText("verification.fmr_at_default", "False match rate (default threshold)",
               f"Share of pairs of different people that the model accepts as the same person {_AT_DEFAULT}.",
               "lower", "rate",
               "Pairs of different {high} people are wrongly matched {ratio}x as often as pairs of {low} people"),
    MetricText("verification.fnmr_at_fmr_1e-3", "False non-match rate (global FMR = 0.1% threshold)",
               "Share of same-person pairs rejected at the one threshold that gives 1 in 1,000 false matches "
               "over the whole population.",
               "lower", "rate",
               "Genuine pairs of {high} people are rejected {ratio}x as often as those of {low} people "
               "at the global FMR = 0.1% threshold"),
    MetricText("verification.fmr_at_fmr_1e-3", "False match rate (global FMR = 0.1% threshold)",
               "The group's own false match rate at the threshold that gives 1 in 1,000 false matches over the "
               "whole population; above 0.1% the group is over-matched.",
               "lower", "rate",
               "Pairs of different {high} people are wrongly matched {ratio}x as often as pairs of {low} people "
               "at the global FMR = 0.1% threshold"),
    MetricText("verification.threshold_at_fmr_1e-3", "Threshold for FMR = 0.1% within the group",
               "The decision threshold the group alone would need for 1 in 1,000 false matches (as in Balanced "
               "Faces in the Wild); thresholds far from the global one mean that one threshold does not fit every "
               "group. It rests on about 30 false matches only from 30,000 impostor pairs on: with fewer pairs "
               "(the count is in the Pairs column) it is flagged not estimable.",
               None, "number"),
    MetricText("verification.fnmr_at_own_fmr_1e-3", "False non-match rate (group's own FMR = 0.1% threshold)",
               "Share of same-person pairs rejected at the threshold that gives 1 in 1,000 false matches within "
               "the group itself (as Balanced Faces in the Wild reports it): the group's errors if the threshold "
               "were set for it.",
               "lower", "rate",
               "Genuine pairs of {high} people are rejected {ratio}x as often as those of {low} people, each at "
               "its group's own FMR = 0.1% threshold"),
)}

#: What a figure's flags tell the reader, in words (audit.results.FLAG_*).
FLAG_TEXT: dict[str, str] = {
    "small_group": "too few people in the group for a reliable figure",
    "few_errors": "the rate rests on fewer than 30 errors, so its interval is wide",
    "undefined": "no data, or a division by zero: the value is missing",
    "not_estimable": ("too little data for this kind of figure (a threshold at FMR f needs 30 / f impostor "
                      "pairs): shown, never a finding, and a policy rule on it fails"),
    "no_signal": "the inversion probe found no identity in its reconstructions: the figure measures noise",
    "unstable": "the disparity changes direction between generators: it describes the generator, not the model",
    "generator_drift": ("the generator redraws this group's faces as another group's (the attributes probe reads "
                        "its reconstructions as another group): a low inversion figure for it is partly the "
                        "generator's doing, not the model's"),
}
FLAG_SHORT: dict[str, str] = {"small_group": "small group", "few_errors": "few errors", "undefined": "undefined",
                              "not_estimable": "not estimable", "no_signal": "no signal", "unstable": "unstable",
                              "generator_drift": "generator drift"}

NOT_AVAILABLE = "n/a"
DISPARITY_KIND_TEXT = {
    "gap": "difference between two groups",
    "ratio": "ratio between two groups",
}
CORRECTION_TEXT = {"holm": "Holm's correction", "bh": "the Benjamini-Hochberg correction"}


#: Inversion figures read at one threshold (or as a distance) for every group: they mix how much identity
#: leaks with how crowded a group is, so they are never the first page's inversion findings.
MIXES_CROWDING = frozenset({"inversion.mean_distance", "inversion.success_rate_at_default",
                            "inversion.success_rate_at_crossing", "inversion.success_rate_at_fmr_1e-3"})

#: The identity-leakage figures (``probes.inversion.leakage``): the inversion probe's headline.
LEAKAGE_KEYS = frozenset(k for k in METRICS if k.startswith("inversion.")
                         and any(w in k for w in ("sar_at_own_fmr", "rank1_equal_gallery", "leakage_auc")))


#: The attributes probe's figures, by the prefix of their metric (``attributes.<prefix><attribute>``).
ATTRIBUTE_METRICS = (
    ("balanced_accuracy_", "Demographic leakage: balanced accuracy of reading {attribute}",
     "The mean over the {attribute} classes of the share of each class's real embeddings that a classifier, "
     "trained on other people's embeddings, reads as their own {attribute}: what the embedding gives away "
     "about it beyond identity. Chance is one over the number of classes.", "lower", "rate"),
    ("recon_accuracy_", "Generator fidelity: reconstructions read as their own {attribute}",
     "Share of the group's reconstructions that the same classifier reads as the source person's {attribute}.",
     "higher", "rate"),
    ("accuracy_", "Demographic leakage: accuracy of reading {attribute}",
     "Share of the group's real embeddings that a classifier, trained on other people's embeddings, reads as "
     "the person's own {attribute}. Compare it with chance (the largest class's share).", "lower", "rate"),
    ("fidelity_", "Generator fidelity: {attribute} kept by the reconstructions",
     "The share of the group's reconstructions read as the source's {attribute}, over the same share of the "
     "real embeddings: 1 means the generator keeps the group's {attribute}, below 1 it redraws some of its faces "
     "as another group's (so a low inversion figure for the group is partly the generator's doing).",
     "higher", "number"),
)


def _attribute_metric(key: str) -> MetricText | None:
    name = key.split(".", 1)[1] if key.startswith("attributes.") else None
    for prefix, title, meaning, better, unit in ATTRIBUTE_METRICS if name else ():
        if name.startswith(prefix) and len(name) > len(prefix):
            attribute = name[len(prefix):].replace("_", " ")
            return MetricText(key, title.format(attribute=attribute), meaning.format(attribute=attribute), better, unit)
    return None


def describe_metric(key: str) -> MetricText:
    """The metric's words; an unknown metric keeps its raw name and says so."""
    if key in METRICS:
        return METRICS[key]
    attribute_metric = _attribute_metric(key)
    if attribute_metric is not None:
        return attribute_metric
    return MetricText(key, key, "No description is known for this metric (written by a newer or third-party "
                                "probe); see the probe's documentation.")


def better_text(better: str | None) -> str:
    return {"lower": "lower is better for the group", "higher": "higher is better for the group"}.get(
        better or "", "neither direction is better in itself")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_value(value, unit: str = "number") -> str:
    """One number as the report writes it: rates as percentages, 3 significant digits."""
    if not _finite(value):
        return NOT_AVAILABLE
    if unit == "rate":
        text = f"{100 * value:.3g}"
        if "e" in text:  # a rate below 1e-4 %: write it plainly
            text = f"{100 * value:.6f}".rstrip("0").rstrip(".")
        return f"{text}%"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_count(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NOT_AVAILABLE
    return f"{int(value):,}"


def format_p(value) -> str:
    """A p-value: two significant digits, or ``< 0.0001``."""
    if not _finite(value):
        return NOT_AVAILABLE
    if value < 1e-4:
        return "< 0.0001"
    return f"{value:.2g}"


def format_ratio(value) -> str:
    """``1.3`` for a ratio (two decimals, trailing zeros dropped)."""
    if not _finite(value):
        return NOT_AVAILABLE
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def format_interval(low, high, unit: str = "number", *, ratio: bool = False) -> str:
    """``0.512–0.634`` (``-2.55 to -2.18`` below zero), or "" where the run computed no interval."""
    if not (_finite(low) and _finite(high)):
        return ""
    fmt = format_ratio if ratio else (lambda v: format_value(v, unit))
    joiner = " to " if low < 0 or high < 0 else "\u2013"  # "-2.55 to -2.18", never "-2.55–-2.18"
    return f"{fmt(low)}{joiner}{fmt(high)}"


def _figure_index(figures: Iterable[Figure]) -> dict[tuple, Figure]:
    return {(f.probe, f.metric, f.grouping, f.group): f for f in figures}


def _high_low(disparity: Disparity, figure_index: Mapping, better: str | None) -> tuple[str, str]:
    """Which of worst/best group has the higher value, from the figures if possible."""
    worst, best = disparity.worst_group, disparity.best_group
    key = (disparity.probe, disparity.metric, disparity.grouping)
    fw, fb = figure_index.get((*key, worst)), figure_index.get((*key, best))
    if fw and fb and _finite(fw.value) and _finite(fb.value):
        return (worst, best) if fw.value >= fb.value else (best, worst)
    return (best, worst) if better == "higher" else (worst, best)


def _better_of(key: str, figures: Iterable[Figure]) -> str | None:
    for f in figures:
        if f.key == key and f.better:
            return f.better
    return describe_metric(key).better


def _gap_words(metric: MetricText, value, low, high) -> tuple[str, str]:
    """``2.3 percentage points`` and its interval ``1–4 points`` for a rate; plain numbers otherwise."""
    if metric.unit == "rate":
        interval = format_interval(100 * low, 100 * high, ratio=True) if _finite(low) and _finite(high) else ""
        return f"{100 * value:.3g} percentage points", f"{interval} points" if interval else ""
    return format_value(value), format_interval(low, high)


def disparity_sentence(disparity: Disparity, figures: Iterable[Figure] = ()) -> str:
    """One comparison of two groups in plain words, with its 95% interval and what the correction said.

    E.g. "Reconstructions of Black faces are matched to their originals 1.3x
    as often as those of Asian faces at the default threshold (95% CI
    1.1–1.5)."  A caution follows where the interval includes no difference,
    and the adjusted p-value where the run corrected for its comparisons.
    """
    figures = list(figures)
    key = disparity.key
    metric = describe_metric(key)
    index = _figure_index(figures)
    better = _better_of(key, figures)
    kind = disparity.kind
    value, low, high = disparity.value, disparity.ci_low, disparity.ci_high
    grouping = disparity.grouping
    if not _finite(value):
        return (f"{metric.title} by {grouping}: the {DISPARITY_KIND_TEXT.get(kind, kind)} is undefined "
                "(a group has no data, or a ratio of values that are not positive).")
    hi_group, lo_group = _high_low(disparity, index, better)
    if kind in ("gap", "max_gap"):
        gap, interval = _gap_words(metric, value, low, high)
        sentence = f"{metric.title} is {gap} higher for {hi_group} faces than for {lo_group} faces"
        no_difference = 0.0
    else:
        template = metric.ratio_sentence or "{title} is {ratio}x as high for {high} faces as for {low} faces"
        sentence = template.format(title=metric.title, ratio=format_ratio(value), high=hi_group, low=lo_group)
        interval = format_interval(low, high, ratio=True)
        no_difference = 1.0
    if interval:
        sentence += f" (95% CI {interval})."
        if _finite(low) and low <= no_difference:
            sentence += " The interval includes no difference: this may be chance."
    else:
        sentence += " (no confidence interval was computed)."
    if _finite(disparity.p_adjusted):
        verdict = "A finding" if disparity.finding else "Not a finding"
        p = format_p(disparity.p_adjusted)
        sentence += f" {verdict} (adjusted p {p if p.startswith('<') else '= ' + p})."
    flags = [FLAG_SHORT.get(flag, flag) for flag in disparity.flags]
    if flags:
        sentence += f" Caution: {', '.join(flags)}."
    return sentence[0].upper() + sentence[1:]


def findings_by_pair(disparities: Iterable[Disparity]) -> list[list[Disparity]]:
    """The findings, one list per compared pair (its ratio and its gap), strongest evidence first."""
    pairs: dict[tuple, list[Disparity]] = {}
    for d in disparities:
        if d.finding and d.grouping != "all":
            pairs.setdefault((d.probe, d.metric, d.grouping, d.pair), []).append(d)
    return sorted(pairs.values(), key=lambda ds: min(_p_adjusted(d) for d in ds))


def _p_adjusted(d: Disparity) -> float:
    return d.p_adjusted if _finite(d.p_adjusted) else 1.0


def finding_sentence(pair: list[Disparity], figures: Iterable[Figure] = ()) -> str:
    """One finding in plain words: the ratio (or gap), both groups' values, the difference, the adjusted p.

    E.g. "The detector fails on Black images 2.1x as often as on White
    images (95% CI 1.4–3.2): 4.1% against 1.9%, 2.2 percentage points more
    (95% CI 1–3.4 points). Adjusted p = 0.003."
    """
    figures = list(figures)
    by_kind = {d.kind: d for d in pair}
    first = by_kind.get("ratio") or by_kind.get("gap") or pair[0]
    key = first.key
    metric = describe_metric(key)
    index = _figure_index(figures)
    hi_group, lo_group = _high_low(first, index, _better_of(key, figures))
    fig_key = (first.probe, first.metric, first.grouping)
    hi_fig, lo_fig = index.get((*fig_key, hi_group)), index.get((*fig_key, lo_group))
    if "ratio" in by_kind:
        r = by_kind["ratio"]
        template = metric.ratio_sentence or "{title} is {ratio}x as high for {high} faces as for {low} faces"
        sentence = template.format(title=metric.title, ratio=format_ratio(r.value), high=hi_group, low=lo_group)
        interval = format_interval(r.ci_low, r.ci_high, ratio=True)
        sentence += f" (95% CI {interval})" if interval else ""
    else:
        sentence = f"{metric.title} is higher for {hi_group} faces than for {lo_group} faces"
    if hi_fig and lo_fig:
        sentence += (f": {format_value(hi_fig.value, metric.unit)} against "
                     f"{format_value(lo_fig.value, metric.unit)}")
    if "gap" in by_kind:
        g = by_kind["gap"]
        gap, interval = _gap_words(metric, g.value, g.ci_low, g.ci_high)
        sentence += f", a difference of {gap}" + (f" (95% CI {interval})" if interval else "")
    p = format_p(min(_p_adjusted(d) for d in pair))
    sentence += f". Adjusted p {p}." if p.startswith("<") else f". Adjusted p = {p}."
    flags = sorted({FLAG_SHORT.get(flag, flag) for d in pair for flag in d.flags})
    if flags:
        sentence += f" Caution: {', '.join(flags)}."
    return sentence[0].upper() + sentence[1:]
