"""How often a generator's own artefact becomes a finding, by the number of generator seeds.

    python benchmarks/generator_artefacts.py                 # K = 1, 2, 3, 5 generators, 1,000 runs each
    python benchmarks/generator_artefacts.py --sims 200 --seeds 1,3

Each simulated run has two groups of ``--people`` people with the same
true figure.  Every generator adds its own shift to each group's figure
(a generator x group artefact) with a standard deviation of ``--artefact``
times the group figure's standard error; each person's value under each
generator is their level, plus that shift, plus noise.  The tool's code
judges the gap between the groups: ``probes.stats.group_figures`` (people
bootstrap over the K generators' samples), then
``probes.generator_seeds.judge_across_generators`` (the sign rule and the
generators' spread added to the variance).  The table gives the share of runs in which the
gap is a finding at 0.05 (every finding is false), under the sign rule
alone and with the spread, and the power of the same rules against a real
gap of three standard errors with the same artefacts.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.results import FLAG_UNSTABLE  # noqa: E402
from probes.generator_seeds import judge_across_generators  # noqa: E402
from probes.stats import group_figures  # noqa: E402

NOISE_SD = 0.5


def one_run(rng: np.random.Generator, n_people: int, k: int, artefact: float, true_gap_se: float,
            seed: int) -> tuple[bool, bool]:
    """(finding under the sign rule alone, finding with the generators' spread) for one run."""
    se = math.sqrt(1.0 + NOISE_SD ** 2 / k) / math.sqrt(n_people)   # the group mean's standard error
    levels = rng.normal(size=2 * n_people)
    levels[n_people:] += true_gap_se * se
    shifts = rng.normal(scale=artefact * se, size=(k, 2))
    person = np.tile(np.arange(2 * n_people), k)
    generator = np.repeat(np.arange(k), 2 * n_people)
    group = np.where(person < n_people, "A", "B")
    value = levels[person] + shifts[generator, (person >= n_people).astype(int)] + rng.normal(
        scale=NOISE_SD, size=person.size)
    samples = pd.DataFrame({"identity": person, "race": group, "generator": generator, "v": value})
    _, disparities = group_figures(samples, probe="inversion", metric="m", value="v", groupings=[["race"]],
                                   better="lower", kind="mean", n_resamples=400, seed=seed,
                                   disparity_kinds=("gap",))
    d = disparities[0]
    means = samples.groupby(["generator", "race"])["v"].mean().unstack("race")
    people_p = d.p_value
    judge_across_generators(d, means[d.worst_group].to_numpy(), means[d.best_group].to_numpy(), "lower")
    stable = FLAG_UNSTABLE not in d.flags
    sign_only = stable and people_p is not None and people_p <= 0.05
    with_test = stable and d.p_value is not None and d.p_value <= 0.05
    return sign_only, with_test


def table(seeds: list[int], sims: int, n_people: int, artefact: float, seed: int = 0) -> list[tuple]:
    rows = []
    for k in seeds:
        out = {}
        for label, gap in (("null", 0.0), ("power", 3.0)):
            rng = np.random.default_rng([seed, k, int(gap)])
            hits = np.array([one_run(rng, n_people, k, artefact, gap, i) for i in range(sims)])
            out[label] = hits.mean(axis=0)
        rows.append((k, *out["null"], *out["power"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3,5", help="numbers of generators, e.g. 1,3")
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--people", type=int, default=50, help="people per group")
    parser.add_argument("--artefact", type=float, default=1.0,
                        help="the artefact's standard deviation in standard errors of a group's figure")
    args = parser.parse_args(argv)
    rows = table([int(s) for s in args.seeds.split(",")], args.sims, args.people, args.artefact)
    print(f"{'generators':>10}{'false findings: sign rule':>28}{'+ spread':>10}"
          f"{'power: sign rule':>19}{'+ spread':>10}")
    for k, null_sign, null_t, power_sign, power_t in rows:
        print(f"{k:>10}{100 * null_sign:>27.1f}%{100 * null_t:>9.1f}%{100 * power_sign:>18.1f}%{100 * power_t:>9.1f}%")
    print(f"\n{args.sims} runs per cell, {args.people} people per group, artefact sd = {args.artefact:g} standard "
          "errors; nominal 5%.  Power: a true gap of 3 standard errors with the same artefacts.")


if __name__ == "__main__":
    main()
