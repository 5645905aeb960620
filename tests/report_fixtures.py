"""A realistic finished run folder for the report tests, made without running any probe.

``build_run`` writes ``results.json`` as ``audit run`` would (5 race groups,
2 genders and their 10 intersections, every probe's figures, disparities and
detail, a policy verdict) and small real PNG sample images made with Pillow,
so that the report can be rendered and checked in a few seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RACES = ("White", "Black", "Asian", "Indian", "Others")
GENDERS = ("Male", "Female")
ALL_PROBES = ("detection", "inversion", "volume", "verification", "attributes")
#: Images per race group; "Others" is small so that some intersections get the small_group flag.
IMAGES_PER_RACE = {"White": 420, "Black": 400, "Asian": 400, "Indian": 380, "Others": 56}
SMALL_GROUP_PEOPLE = 30

#: metric -> (unit, better, typical value, spread across groups)
METRIC_SHAPES = {
    "detection": {"failure_rate": ("rate", "lower", 0.012, 0.6)},
    "inversion": {
        "sar_at_own_fmr_1e-2": ("rate", "lower", 0.30, 0.6),
        "rank1_equal_gallery": ("rate", "lower", 0.25, 0.6),
        "leakage_auc": ("rate", "lower", 0.90, 0.08),
        "mean_distance": ("number", "higher", 0.55, 0.12),
        "success_rate_at_default": ("rate", "lower", 0.42, 0.7),
        "success_rate_at_crossing": ("rate", "lower", 0.31, 0.35),
        "success_rate_at_fmr_1e-3": ("rate", "lower", 0.08, 0.5),
        "no_face_rate": ("rate", None, 0.03, 0.4),
        "random_pair_distance_within": ("number", "higher", 0.82, 0.08),
        "type2_distance": ("number", "higher", 0.61, 0.1),
    },
    "volume": {
        "log_volume_per_dim": ("number", "higher", -2.4, 0.05),
        "relative_log_volume_per_dim": ("number", "higher", 0.0, 0.0),
        "effective_dimensionality": ("number", "higher", 31.0, 0.1),
        "nn_distance_impostor": ("number", "higher", 0.43, 0.1),
        "impostor_match_rate": ("rate", "lower", 0.05, 0.5),
        "spread_ratio": ("number", "higher", 1.0, 0.08),
    },
    "verification": {
        "fnmr_at_default": ("rate", "lower", 0.03, 0.5),
        "fmr_at_default": ("rate", "lower", 0.004, 0.6),
        "fnmr_at_fmr_1e-3": ("rate", "lower", 0.09, 0.8),
        "fmr_at_fmr_1e-3": ("rate", "lower", 0.001, 0.6),
        "threshold_at_fmr_1e-3": ("number", None, 0.42, 0.06),
    },
    "attributes": {
        "accuracy_race": ("rate", "lower", 0.85, 0.1),
        "balanced_accuracy_race": ("rate", "lower", 0.80, 0.1),
        "recon_accuracy_race": ("rate", "higher", 0.70, 0.2),
        "fidelity_race": ("number", "higher", 0.85, 0.15),
    },
}
#: How far each race group sits from the typical value (in units of the spread).
RACE_OFFSET = {"White": -0.6, "Black": 0.9, "Asian": 0.5, "Indian": 0.1, "Others": -0.2}
GENDER_OFFSET = {"Male": -0.2, "Female": 0.3}


def _groups(races: Sequence[str]) -> dict[str, dict[str, dict]]:
    """grouping -> group -> {n_images, n_people, offset}."""
    out: dict[str, dict[str, dict]] = {"all": {}, "race": {}, "gender": {}, "race*gender": {}}
    total = 0
    for race_key, race in zip(RACES, races):
        n = IMAGES_PER_RACE[race_key]
        total += n
        out["race"][race] = {"n_images": n, "n_people": n, "offset": RACE_OFFSET[race_key]}
        for gender in GENDERS:
            share = 0.55 if gender == "Male" else 0.45
            m = int(round(n * share))
            out["race*gender"][f"{race} / {gender}"] = {
                "n_images": m, "n_people": m, "offset": RACE_OFFSET[race_key] + GENDER_OFFSET[gender]}
    for gender in GENDERS:
        m = sum(v["n_images"] for k, v in out["race*gender"].items() if k.endswith(f" / {gender}"))
        out["gender"][gender] = {"n_images": m, "n_people": m, "offset": GENDER_OFFSET[gender]}
    out["all"]["all"] = {"n_images": total, "n_people": total, "offset": 0.0}
    return out


def _figures(probe: str, groups: dict, rng: np.random.Generator) -> list[dict]:
    figures = []
    for metric, (unit, better, typical, spread) in METRIC_SHAPES[probe].items():
        for grouping, members in groups.items():
            for group, info in members.items():
                n_people = info["n_people"]
                value = typical * (1 + spread * info["offset"] * 0.6) + rng.normal(0, abs(typical) * 0.01 + 1e-4)
                if metric == "relative_log_volume_per_dim":
                    value = 0.04 * info["offset"] + rng.normal(0, 0.005)
                half = (abs(typical) * 0.15 + 0.01) / math.sqrt(max(n_people, 1) / 100)
                count = None
                if unit == "rate":
                    value = float(np.clip(value, 0.0005, 0.999))
                    count = int(round(value * info["n_images"]))
                    half = 1.96 * math.sqrt(value * (1 - value) / max(n_people, 1))
                    low, high = max(0.0, value - half), min(1.0, value + half)
                else:
                    low, high = value - half, value + half
                flags = []
                if n_people < SMALL_GROUP_PEOPLE:
                    flags.append("small_group")
                if unit == "rate" and count is not None and count < 30 and better is not None:
                    flags.append("few_errors")
                figures.append({"probe": probe, "metric": metric, "grouping": grouping, "group": group,
                                "value": round(float(value), 6), "ci_low": round(float(low), 6),
                                "ci_high": round(float(high), 6), "n_images": info["n_images"],
                                "n_people": n_people, "count": count, "better": better, "flags": flags})
    return figures


def _disparities(figures: list[dict], rng: np.random.Generator) -> list[dict]:
    """Every pair of groups, a gap and (for positive figures) a ratio, with p-values; some are findings."""
    from scipy import special

    from probes.findings import mark_findings
    from audit.results import Disparity, disparities_to_dicts

    out = []
    keys = dict.fromkeys((f["probe"], f["metric"], f["grouping"]) for f in figures if f["grouping"] != "all"
                         and f["metric"] != "relative_log_volume_per_dim")  # as the volume probe: none of its own
    for probe, metric, grouping in keys:
        rows = [f for f in figures if (f["probe"], f["metric"], f["grouping"]) == (probe, metric, grouping)]
        better = rows[0]["better"]
        mine = []
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                hi, lo = sorted((rows[i], rows[j]), key=lambda f: f["value"], reverse=True)
                worst, best = (lo, hi) if better == "higher" else (hi, lo)
                flags = sorted({flag for f in (hi, lo) for flag in f["flags"]})
                se = math.hypot((hi["ci_high"] - hi["ci_low"]) / 3.92, (lo["ci_high"] - lo["ci_low"]) / 3.92)
                gap = hi["value"] - lo["value"]
                p = float(2 * special.ndtr(-gap / se)) if se > 0 else 1.0
                mine.append(Disparity(probe, metric, grouping, "gap", round(gap, 6), round(gap - 1.96 * se, 6),
                                      round(gap + 1.96 * se, 6), worst["group"], best["group"], flags,
                                      p_value=p))
                if lo["value"] > 0:
                    ratio = hi["value"] / lo["value"]
                    spread = math.exp(1.96 * se / lo["value"])
                    mine.append(Disparity(probe, metric, grouping, "ratio", round(ratio, 6),
                                          round(ratio / spread, 6), round(ratio * spread, 6), worst["group"],
                                          best["group"], flags, p_value=p))
        for kind in ("gap", "ratio"):
            of_kind = [d for d in mine if d.kind == kind]
            if of_kind:
                max(of_kind, key=lambda d: d.value).worst_pair = True
        out += mine
    summary = mark_findings(out, "holm")
    return disparities_to_dicts(out), summary


def _face_png(path: Path, skin: tuple[int, int, int], *, seed: int, blur: float = 0.0) -> None:
    """A 64x64 drawing of a face: enough to be a real, non-trivial PNG."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (64, 64), tuple(int(c) for c in rng.integers(150, 230, 3)))
    draw = ImageDraw.Draw(image)
    draw.ellipse((14, 8, 50, 58), fill=skin, outline=(40, 30, 20))
    draw.ellipse((22, 24, 28, 29), fill=(30, 30, 30))
    draw.ellipse((36, 24, 42, 29), fill=(30, 30, 30))
    draw.line((32, 30, 30, 40), fill=(90, 60, 50), width=2)
    draw.arc((24, 38, 40, 50), 20, 160, fill=(120, 40, 40), width=2)
    draw.rectangle((14, 4, 50, 14), fill=tuple(int(c) for c in rng.integers(10, 90, 3)))
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


SKINS = ((236, 200, 170), (110, 70, 45), (225, 190, 140), (170, 120, 80), (200, 160, 120))


def _inversion_detail(groups: dict, run_dir: Path, rng: np.random.Generator) -> dict:
    thresholds = {"default": 0.6, "crossing": 0.71, "fmr_1e-3": 0.45}
    grid = [round(float(t), 4) for t in np.linspace(0.2, 1.0, 33)]
    sweep: dict[str, dict[str, list[float]]] = {}
    distributions: dict[str, dict[str, dict[str, list[float]]]] = {}
    for grouping in ("race", "gender", "race*gender"):
        sweep[grouping] = {}
        for group, info in groups[grouping].items():
            centre = 0.62 - 0.05 * info["offset"]
            sweep[grouping][group] = [round(1 / (1 + math.exp(-(t - centre) / 0.06)), 5) for t in grid]
    for grouping in ("race", "gender"):
        distributions[grouping] = {}
        for group, info in groups[grouping].items():
            genuine = rng.normal(0.58 - 0.04 * info["offset"], 0.09, 150)
            random_pair = rng.normal(0.84, 0.07, 300)
            distributions[grouping][group] = {"genuine": [round(float(v), 4) for v in genuine],
                                              "random_pair": [round(float(v), 4) for v in random_pair]}
    history = []
    for epoch in range(1, 21):
        history.append({"epoch": epoch, "train_loss": round(0.9 * math.exp(-epoch / 6) + 0.12, 4),
                        "val_mean_distance": None if epoch == 1 else round(0.75 * math.exp(-epoch / 8) + 0.5, 4),
                        "val_failures": 0})
    samples = []
    for i, (race, info) in enumerate(groups["race"].items()):
        for k in range(2):
            stem = f"samples/race_{i}_{k}"
            _face_png(run_dir / f"{stem}_orig.png", SKINS[i], seed=10 * i + k)
            _face_png(run_dir / f"{stem}_recon.png", SKINS[i], seed=10 * i + k, blur=1.8)
            samples.append({"grouping": "race", "group": race, "image_id": f"{race}/{k:04d}.jpg",
                            "original": f"{stem}_orig.png", "reconstruction": f"{stem}_recon.png",
                            "distance": round(0.5 + 0.03 * i + 0.02 * k, 4)})
    return {"thresholds": thresholds,
            "success_rate_at": {"default": 0.42, "crossing": 0.31, "fmr_1e-3": 0.08},
            "sweep": {"thresholds": grid, "by_group": sweep},
            "distributions": distributions, "history": history, "best_epoch": 12, "device": "cpu",
            "training_seconds": 100.0, "samples_per_second": 500.0, "sample_images": samples}


def _verification_detail(groups: dict, rng: np.random.Generator) -> dict:
    """What the verification probe writes beside its figures: thresholds, DET curves, matrices, FDR, summary."""
    thresholds = np.array([0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65])
    det, own, counts, summary = {}, {}, {}, []
    for grouping, members in groups.items():
        for group, info in members.items():
            shift = 0.03 * info["offset"]
            fmr = [float(v) for v in 1 / (1 + np.exp(-(thresholds - 0.62 - shift) / 0.04))]
            fnmr = [float(v) for v in 1 / (1 + np.exp((thresholds - 0.38 - shift) / 0.05))]
            det.setdefault(grouping, {})[group] = {"fmr": fmr, "fnmr": fnmr}
            pairs = info["n_images"] * (info["n_images"] - 1) // 2
            estimable = pairs >= 30_000
            own[f"{grouping}: {group}"] = {"threshold": round(0.42 - shift, 4), "estimable": estimable,
                                           "interval": [round(0.40 - shift, 4), round(0.44 - shift, 4)],
                                           "impostor_pairs": pairs,
                                           **({} if estimable else {"reason": "a threshold at FMR 0.001 needs at "
                                                                    f"least 30,000 distinct impostor pairs; {pairs:,} "
                                                                    "were available"})}
            counts[f"{grouping}: {group}"] = {"genuine_pairs": 3 * info["n_people"],
                                              "impostor_pairs": {"possible": pairs, "used": pairs}}
            summary.append({"grouping": grouping, "group": group, "n_images": info["n_images"],
                            "n_people": info["n_people"], "failed_to_acquire": 3, "fta": 0.01, "fta_ci": [0.003, 0.03],
                            "fnmr_at_default": 0.03, "fnmr_at_default_ci": [0.02, 0.045],
                            "fnmr_at_default_pairs": 3 * info["n_people"], "fmr_at_default": 0.004,
                            "fmr_at_default_ci": [0.003, 0.006], "fmr_at_default_pairs": pairs})
    race = list(groups["race"])
    value = [[round(0.001 * (3 if r == c else 1) * (1 + 0.2 * i), 6) for c in range(len(race))]
             for i, r in enumerate(range(len(race)))]
    matrix = {"race": {"groups": race, "pairs": [[20_000] * len(race) for _ in race],
                       "fmr": {"global_fmr_1e-3": {"threshold": 0.42, "value": value,
                                                   "ci_low": [[v * 0.7 for v in row] for row in value],
                                                   "ci_high": [[v * 1.4 for v in row] for row in value]}}}}
    fdr = {g: {"global_fmr_1e-3": {"value": 0.97, "ci_low": 0.94, "ci_high": 0.99, "alpha": 0.5,
                                   "largest_fmr_difference": 0.002, "largest_fnmr_difference": 0.05}}
           for g in ("race", "gender")}
    return {"match_rule": "distance <= threshold", "default_threshold": 0.6, "target_fmr": 0.001,
            "global_threshold_at_target_fmr": 0.42, "global_threshold_interval": [0.41, 0.43],
            "global_threshold_estimable": True, "pairs": "generated", "impostor_pairs": "generated",
            "max_impostor_pairs": 200_000, "images_without_face": 20,
            "generalised_note": "rates count images without a face as non-matches",
            "pair_counts": counts, "thresholds_by_group": own,
            "det": {"thresholds": thresholds.tolist(), "by_group": det},
            "cross_group_fmr": matrix, "fairness_discrepancy_rate": fdr, "summary": summary}


def _policy_verdict(figures: list[dict]) -> dict:
    checks = []
    for f in figures:
        if (f["probe"], f["metric"], f["grouping"]) == ("verification", "fnmr_at_default", "race"):
            passed = f["ci_high"] <= 0.05
            checks.append({"rule_id": "fnmr-cap", "description": "FNMR at the default threshold stays under 5%",
                           "metric": "verification.fnmr_at_default", "grouping": "race", "group": f["group"],
                           "kind": None, "estimate": f["value"], "ci_low": f["ci_low"], "ci_high": f["ci_high"],
                           "judged_on": "ci_high", "judged_value": f["ci_high"], "bound": 0.05, "operator": "<=", "passed": passed,
                           "reason": "" if passed else f"upper bound {f['ci_high']:.4g} > 0.05"})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def _attributes_detail(groups: dict, races: Sequence[str]) -> dict:
    """The attributes probe's section: a race reader, chance levels, the confusion of race, one drifting group."""
    race_groups = list(groups["race"])
    chance = {grouping: {g: {"accuracy": 0.5, "balanced_accuracy": 1 / len(race_groups)} for g in members}
              for grouping, members in groups.items()}
    n = len(race_groups)
    real = [[80 if i == j else 5 for j in range(n)] for i in range(n)]
    reconstructed = [row[:] for row in real]
    drifting = race_groups[1]
    reconstructed[1] = [60 if j == 0 else (10 if j == 1 else 5) for j in range(n)]
    return {"training_source": "the generator's training corpus (--train-dataset)",
            "evaluated_on": "every audited person", "attributes": ["race", "gender"],
            "readers": {"race": {"attribute": "race", "classes": race_groups, "n_train_images": 6000,
                                 "n_train_people": 6000, "regularization_c": 0.1, "cv_accuracy": 0.86,
                                 "cv_balanced_accuracy": 0.81, "chance_accuracy": 0.21,
                                 "chance_balanced_accuracy": 1 / n, "readable": True},
                        "gender": {"attribute": "gender", "skipped": "the training faces carry no 'gender' label"}},
            "chance": {"race": chance}, "drift_bound": 0.9, "n_reconstructions": 1656,
            "n_reconstructions_without_vector": 0,
            "confusion": [{"grouping": "race", "sources": race_groups, "predicted": race_groups, "real": real,
                           "reconstructed": reconstructed}],
            "drift": [{"attribute": "race", "grouping": "race", "group": drifting, "fidelity": 0.12, "ci_low": 0.08,
                       "ci_high": 0.17, "drift": 0.88, "real_accuracy": 0.8, "recon_accuracy": 0.1,
                       "drifts_to": race_groups[0], "drifts_to_share": 0.6, "n_people": 400}]}


def build_run(run_dir: Path, *, probes: Sequence[str] = ALL_PROBES, races: Sequence[str] = RACES,
              policy: bool = True, seed: int = 0) -> Path:
    """Write a finished run (results.json + sample PNGs) into ``run_dir`` and return it.

    ``races`` renames the five race groups (e.g. to a hostile label for the
    escaping tests); ``probes`` leaves the others out, as ``--probes`` would.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    groups = _groups(races)
    figures: list[dict] = []
    for probe in probes:
        if probe != "attributes":     # added after the disparities: the other probes' findings stay as they were
            figures += _figures(probe, groups, rng)
    describe = {grouping: {g: {"n_images": v["n_images"], "n_people": v["n_people"]} for g, v in members.items()}
                for grouping, members in groups.items() if grouping != "all"}
    disparities, findings = _disparities(figures, rng)
    if "attributes" in probes:
        figures += _figures("attributes", groups, rng)
    results = {
        "schema_version": "1.0", "tool": {"name": "face-bias-audit", "version": "0.1.0"},
        "created_at": "2026-11-27T03:00:00Z",
        "command_line": "audit run --target dlib --dataset balanced/ --out runs/x --probes " + ",".join(probes),
        "seed": seed,
        "target": {"name": "dlib", "version": "20.0.1", "dimension": 128, "metric": "euclidean",
                   "default_threshold": 0.6,
                   "fingerprint": "sha256:3f1c0e5d9b7a2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6",
                   "details": {"engine": "torch", "model_file": "dlib_face_recognition_resnet_model_v1.dat"}},
        "dataset": {"path": "balanced/", "n_images": groups["all"]["all"]["n_images"],
                    "n_identities": groups["all"]["all"]["n_people"], "has_identities": False,
                    "group_by": ["race", "gender"],
                    "describe": {"groupings": describe, "exclusions": {"duplicate": 3, "unreadable": 1}}},
        "settings": {"probes": list(probes), "epochs": 20, "image_size": 64, "group_by": ["race", "gender"],
                     "bootstrap": 1000, "min_people": SMALL_GROUP_PEOPLE},
        "environment": {"python": "3.11.7", "platform": "Linux-6.1-x86_64", "device": "cpu",
                        "libraries": {"torch": "2.13.0", "dlib": "20.0.1", "numpy": "1.26.4"}},
        "detection": {"by_status": {"ok": 1980, "no_face": 20, "error": 0}} if "detection" in probes else None,
        "figures": figures,
        "disparities": disparities,
        "findings": findings,
        "probes": {},
        "policy_verdict": _policy_verdict(figures) if policy else None,
    }
    if "inversion" in probes:
        results["probes"]["inversion"] = _inversion_detail(groups, run_dir, rng)
    if "volume" in probes:
        results["probes"]["volume"] = {"subsample_size": 50, "n_draws": 200, "dimension": 128}
    if "verification" in probes:
        results["probes"]["verification"] = _verification_detail(groups, rng)
    if "attributes" in probes:
        results["probes"]["attributes"] = _attributes_detail(groups, races)
    (run_dir / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return run_dir


#: Labels that must be shown as text, never markup or a fetched URL.
HOSTILE_RACES = ("<script>alert(1)</script>", '<img src="http://example.com/x.png">', "file:///etc/passwd",
                 "Asian & \"Pacific\"", "Others")
_RENDERED: dict[str, tuple[Path, dict]] = {}


def rendered_run(tmp_path_factory, name: str, *, no_faces: bool = False, formats=("html", "pdf"),
                 **build_options) -> tuple[Path, dict]:
    """Build and render a run once per test session (rendering takes seconds); returns (run_dir, paths).

    Shared by test_report.py and test_report_browser.py so that the full
    report is rendered once, not once per module.
    """
    if name not in _RENDERED:
        from reports.render import render_report

        run_dir = build_run(tmp_path_factory.mktemp(f"report-{name}"), **build_options)
        _RENDERED[name] = (run_dir, render_report(run_dir, no_faces=no_faces, formats=formats))
    return _RENDERED[name]
