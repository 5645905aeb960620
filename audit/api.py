"""A run's results as pandas tables, for a notebook: ``load_results(run_folder)``.

The command line writes ``results.json``; a reader who wants to plot,
filter or join the figures should not have to parse it.  This module is
the small public surface for that (in the spirit of fairlearn's
``MetricFrame``: one object, the per-group figures and the differences
between groups as tables)::

    from audit.api import load_results

    run = load_results("runs/utk")
    run.figures                      # one row per (probe, metric, grouping, group)
    run.figure("inversion.sar_at_own_fmr_1e-2", grouping="race")
    run.disparities                  # one row per pair of groups, metric and kind
    run.findings                     # the disparities that survived the run's correction
    run.results                      # the typed record behind the tables

The tables are built once, from the typed :class:`audit.results.Results`
(which checks the file's schema version and every field's type), and are
plain DataFrames: changing them changes nothing on disk.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import cached_property

import pandas as pd

from audit.errors import InputError
from audit.results import Results
from audit.results import load_results as _load_typed

__all__ = ["load_results", "RunResults", "FIGURE_COLUMNS", "DISPARITY_COLUMNS"]

FIGURE_COLUMNS = ("key", "probe", "metric", "grouping", "group", "value", "ci_low", "ci_high", "n_people",
                  "n_images", "count", "better", "flags")
DISPARITY_COLUMNS = ("key", "probe", "metric", "grouping", "kind", "value", "ci_low", "ci_high", "worst_group",
                     "best_group", "p_value", "p_adjusted", "finding", "worst_pair", "flags")


def load_results(path: str | os.PathLike) -> "RunResults":
    """Read a run folder (or its ``results.json``) written by ``audit run``.

    Raises :class:`audit.errors.ResultsError` (an input error) naming the
    file and what is wrong where it is missing, not JSON, or damaged.
    """
    return RunResults(_load_typed(path))


@dataclass(frozen=True)
class RunResults:
    """One run's figures, disparities and findings as DataFrames; ``results`` is the typed record."""

    results: Results

    @cached_property
    def figures(self) -> pd.DataFrame:
        """One row per figure: ``key`` (``probe.metric``), the group, ``value`` with its 95% interval,
        the people and images behind it, and its ``flags`` (a tuple of names)."""
        rows = [{**asdict(f), "key": f.key, "flags": tuple(f.flags)} for f in self.results.figures]
        return pd.DataFrame(rows, columns=list(FIGURE_COLUMNS))

    @cached_property
    def disparities(self) -> pd.DataFrame:
        """One row per pair of groups, metric and kind (``gap`` or ``ratio``), with its interval, the
        p-value before and after the run's correction, and whether it is a finding."""
        rows = [{**{k: v for k, v in asdict(d).items() if k in DISPARITY_COLUMNS}, "key": d.key,
                 "flags": tuple(d.flags)} for d in self.results.disparities]
        return pd.DataFrame(rows, columns=list(DISPARITY_COLUMNS))

    @property
    def findings(self) -> pd.DataFrame:
        """The disparities that are findings, largest first within each metric."""
        found = self.disparities[self.disparities["finding"].astype(bool)]
        return found.sort_values(["key", "value"], ascending=[True, False]).reset_index(drop=True)

    @property
    def metrics(self) -> list[str]:
        """The figure keys of the run (``probe.metric``), in the order the run wrote them."""
        return list(dict.fromkeys(self.figures["key"]))

    def figure(self, key: str, grouping: str | None = None) -> pd.DataFrame:
        """One metric's groups, indexed by (grouping, group): value, interval, people, flags.

        ``key`` is ``probe.metric`` (see :attr:`metrics`); ``grouping`` keeps
        one grouping (``"race"``, ``"race x gender"``, ``"all"``).
        """
        table = self.figures[self.figures["key"] == key]
        if table.empty:
            raise InputError(f"key={key!r} is not a figure of this run; choose one of {self.metrics}.")
        if grouping is not None:
            groupings = list(dict.fromkeys(table["grouping"]))
            table = table[table["grouping"] == grouping]
            if table.empty:
                raise InputError(f"grouping={grouping!r} has no {key} figures; this run has {groupings}.")
        return table.set_index(["grouping", "group"])[["value", "ci_low", "ci_high", "n_people", "n_images",
                                                       "count", "flags"]]
