"""No signal, no finding: a generator that ignores its input is flagged, never a headline, never gateable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from audit.gate import evaluate_policy
from audit.policy import policy_from_dict
from audit.results import Disparity, Figure, disparities_to_dicts, figures_to_dicts
from audit.runner import INVERSION_METRICS, mark_no_signal, mark_unstable
from probes.inversion.probe import Reconstructor, measure_reconstructions
from probes.findings import mark_findings
from probes.stats import group_figures
from tests.fake_targets import ProjectionTarget


class AverageFace(nn.Module):
    """A 'generator' that draws the same face, with a little noise, whatever embedding it gets."""

    image_size = 64

    def __init__(self, face: np.ndarray) -> None:
        super().__init__()
        self.face = torch.from_numpy(face.astype(np.float32) / 255.0).permute(2, 0, 1)
        self.noise = torch.Generator().manual_seed(0)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        n = len(embeddings)
        noise = torch.rand((n, *self.face.shape), generator=self.noise) * 0.2
        return (self.face.unsqueeze(0) * 0.8 + noise).clamp(0, 1)


class Perfect(nn.Module):
    """A 'generator' that looks up the true chip of each embedding: all identity."""

    image_size = 64

    def __init__(self, vectors: np.ndarray, chips: np.ndarray) -> None:
        super().__init__()
        self.vectors = torch.from_numpy(vectors)
        self.chips = torch.from_numpy(chips.astype(np.float32) / 255.0).permute(0, 3, 1, 2)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        nearest = torch.cdist(embeddings, self.vectors).argmin(dim=1)
        return self.chips[nearest]


def audit_set(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    chips = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    target = ProjectionTarget()
    table = pd.DataFrame({"image_id": [f"{i}.png" for i in range(n)], "identity": [f"p{i}" for i in range(n)],
                          "race": ["A", "B", "C"] * (n // 3)})
    return target, chips, target.vectors(chips), table


def measure(model, tmp_path: Path):
    target, chips, vectors, table = audit_set()
    return measure_reconstructions(
        generators=[Reconstructor(model)], embeddings=vectors, chips=chips, table=table,
        split=np.array(["test"] * len(table), dtype=object), embed_fn=target.embed_fn, metric="euclidean",
        default_threshold=0.6, impostor_distances=None, out_dir=tmp_path, groupings=[["race"]], seed=0)


def summarize(samples: pd.DataFrame) -> tuple[list[Figure], list[Disparity]]:
    figures, disparities = [], []
    for metric, column, kind, better, kinds in INVERSION_METRICS:
        if column in samples and samples[column].notna().any():
            f, d = group_figures(samples, probe="inversion", metric=metric, value=column, person="identity",
                                 groupings=[["race"]], better=better, kind=kind, n_resamples=200,
                                 disparity_kinds=kinds)
            figures += f
            disparities += d
    return figures, disparities


def test_an_average_face_generator_has_no_signal_and_its_figures_cannot_pass_a_gate(tmp_path):
    _, chips, _, _ = audit_set()
    measured = measure(AverageFace(chips.mean(axis=0)), tmp_path)
    overall = next(t for t in measured.signal if t.grouping == "all")
    assert not overall.signal and overall.p_value > 0.01
    figures, disparities = summarize(measured.samples)
    summary = mark_no_signal(figures, disparities, measured.signal)
    assert summary["overall"] is False
    assert all("no_signal" in f.flags for f in figures) and all("no_signal" in d.flags for d in disparities)
    mark_findings(disparities, "holm")
    assert not any(d.finding for d in disparities)
    results = {"schema_version": "1.1", "figures": figures_to_dicts(figures),
               "disparities": disparities_to_dicts(disparities)}
    policy = policy_from_dict({"policy": {"name": "p"}, "rule": [
        {"id": "leak", "metric": "inversion.success_rate_at_default", "grouping": "race", "max": 1.0},
        {"id": "gap", "metric": "inversion.mean_distance", "grouping": "race", "disparity": "gap", "max": 9}]})
    verdict = evaluate_policy(policy, results)
    assert not verdict.passed and len(verdict.failures) == len(verdict.checks)
    assert all("no identity signal" in c.reason for c in verdict.failures)


def test_a_generator_that_carries_identity_has_signal_in_every_group(tmp_path):
    _, chips, vectors, _ = audit_set()
    measured = measure(Perfect(vectors, chips), tmp_path)
    assert all(t.signal for t in measured.signal) and len(measured.signal) == 4
    figures, disparities = summarize(measured.samples)
    assert mark_no_signal(figures, disparities, measured.signal)["groups_without_signal"] == []
    assert not any("no_signal" in f.flags for f in figures)
    # Baselines are context: figures, no disparities.
    assert any(f.metric == "random_pair_distance_within" for f in figures)
    assert not any(d.metric == "random_pair_distance_within" for d in disparities)


def test_a_disparity_that_flips_between_generators_is_unstable():
    samples = pd.DataFrame({"generator": [0, 0, 1, 1], "race": ["A", "B", "A", "B"],
                            "distance": [0.5, 0.6, 0.6, 0.5], "identity": ["a", "b", "a", "b"]})
    flips = Disparity("inversion", "mean_distance", "race", "gap", 0.0, worst_group="A", best_group="B")
    samples_steady = samples.assign(distance=[0.5, 0.6, 0.45, 0.62])
    steady = Disparity("inversion", "mean_distance", "race", "gap", 0.1, worst_group="A", best_group="B")
    mark_unstable([flips], samples, [["race"]])
    mark_unstable([steady], samples_steady, [["race"]])
    assert flips.flags == ["unstable"] and steady.flags == []


class GenderOnly(nn.Module):
    """A 'generator' that reads the gender from the embedding and draws that gender's average face: no identity."""

    image_size = 64

    def __init__(self, vectors: np.ndarray, chips: np.ndarray, female: np.ndarray) -> None:
        super().__init__()
        self.vectors = torch.from_numpy(vectors)
        self.female = torch.from_numpy(np.asarray(female, dtype=bool))
        as_float = chips.astype(np.float32) / 255.0
        self.faces = torch.from_numpy(np.stack([as_float[~female].mean(axis=0), as_float[female].mean(axis=0)]))
        self.faces = self.faces.permute(0, 3, 1, 2)
        self.noise = torch.Generator().manual_seed(0)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        nearest = torch.cdist(embeddings, self.vectors).argmin(dim=1)
        faces = self.faces[self.female[nearest].long()]
        return (faces * 0.9 + torch.rand(faces.shape, generator=self.noise) * 0.1).clamp(0, 1)


def test_a_generator_that_carries_only_gender_has_no_signal_when_gender_is_a_known_label(tmp_path):
    """Compared with everyone of the group it would pass (its faces have the right gender); compared with
    the people sharing its labels (race, and the dataset's gender column) it does not."""
    n = 60
    rng = np.random.default_rng(4)
    chips = rng.integers(0, 200, size=(n, 64, 64, 3)).astype(np.uint8)
    female = np.arange(n) % 2 == 0
    chips[female, :, :32] += 55                        # the gender shows in the face, so in the embedding
    target = ProjectionTarget()
    vectors = target.vectors(chips)
    table = pd.DataFrame({"image_id": [f"{i}.png" for i in range(n)], "identity": [f"p{i}" for i in range(n)],
                          "race": ["A", "B", "C"] * (n // 3), "gender": np.where(female, "F", "M"),
                          "age": [str(20 + i) for i in range(n)]})
    common = dict(generators=[Reconstructor(GenderOnly(vectors, chips, female))], embeddings=vectors, chips=chips,
                  table=table, split=np.array(["test"] * n, dtype=object), embed_fn=target.embed_fn,
                  metric="euclidean", default_threshold=0.6, impostor_distances=None, groupings=[["race"]], seed=0)
    unaware = measure_reconstructions(**common, out_dir=tmp_path / "a")
    assert all(t.signal for t in unaware.signal)       # race alone is known: the gender fools the test
    measured = measure_reconstructions(**common, out_dir=tmp_path / "b", label_columns=["race", "gender", "age"])
    assert not any(t.signal for t in measured.signal)
    assert all(t["stratified_on"] == ["race", "gender"] for t in measured.details["signal"])
    figures, disparities = summarize(measured.samples)
    assert mark_no_signal(figures, disparities, measured.signal)["overall"] is False
