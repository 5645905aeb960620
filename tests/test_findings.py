"""probes.findings: Holm and Benjamini-Hochberg over every comparison of a run; blocked never findings."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from audit.errors import InputError
from audit.results import FLAG_FEW_ERRORS, FLAG_NOT_ESTIMABLE, FLAG_NO_SIGNAL, Disparity
from probes.findings import adjust_p_values, mark_findings


def disparity(p, flags=(), value=0.1):
    return Disparity("p", "m", "race", "gap", value, 0.0, 0.2, "A", "B", list(flags), p_value=p)


def test_holm_adjusted_p_values_step_down():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 -> 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert adjust_p_values(p, "holm").tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_bh_is_scipys_false_discovery_control():
    p = np.random.default_rng(0).random(40) ** 3
    assert np.allclose(adjust_p_values(p, "bh"), stats.false_discovery_control(p, method="bh"))


def test_findings_are_those_that_survive_the_correction_over_the_whole_run():
    ds = [disparity(0.001), disparity(0.02), disparity(0.03), disparity(0.5)]
    summary = mark_findings(ds, "holm")
    assert [d.finding for d in ds] == [True, False, False, False]  # 0.02 * 3 = 0.06 > 0.05
    assert ds[0].p_adjusted == pytest.approx(0.004)
    assert summary == {"method": "holm", "alpha": 0.05, "n_comparisons": 4, "n_blocked": 0,
                       "n_without_p_value": 0, "n_findings": 1}
    mark_findings(ds, "bh")  # BH: 0.001*4/1, 0.02*4/2, 0.03*4/3 -> 0.004, 0.04, 0.04: three findings
    assert [d.finding for d in ds] == [True, True, True, False]


def test_a_disparity_under_a_blocking_flag_is_never_a_finding_nor_counted():
    ds = [disparity(1e-9, [FLAG_NOT_ESTIMABLE]), disparity(1e-9, [FLAG_NO_SIGNAL]), disparity(0.01, [FLAG_FEW_ERRORS]),
          disparity(None)]
    summary = mark_findings(ds)
    assert [d.finding for d in ds] == [False, False, True, False]
    assert ds[0].p_adjusted is None and ds[3].p_adjusted is None
    assert ds[2].p_adjusted == pytest.approx(0.01)  # the family holds only the one eligible comparison
    assert (summary["n_comparisons"], summary["n_blocked"], summary["n_without_p_value"]) == (1, 2, 1)


def test_uniform_p_values_give_no_finding_under_holm():
    """Two hundred comparisons of equal groups: some p < 0.05 by chance, no finding after the correction."""
    rng = np.random.default_rng(1)
    ds = [disparity(float(p)) for p in rng.random(200)]
    assert sum(d.p_value < 0.05 for d in ds) > 3
    assert mark_findings(ds, "holm")["n_findings"] == 0


def test_unknown_correction_names_the_choices():
    with pytest.raises(InputError, match=r"correction='bonferroni', must be one of holm, bh"):
        mark_findings([], "bonferroni")
