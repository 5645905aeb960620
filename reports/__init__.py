"""The audit report: one HTML file and one PDF from a finished run's folder.

Rendering reads ``results.json`` and the sample images it names; it never
re-runs a probe, so a report can be re-rendered (``audit report RUN``) with
other options, e.g. ``--no-faces`` before sharing it outside the team.

* :mod:`reports.text` turns metric names and disparities into plain words;
* :mod:`reports.figures` draws the charts (matplotlib, Agg, PNG data URIs);
* :mod:`reports.render` builds the template context and writes the files.
"""

from __future__ import annotations

__all__ = ["render_report"]


def render_report(*args, **kwargs):
    """Lazy alias of :func:`reports.render.render_report` (keeps ``import reports`` light)."""
    from reports.render import render_report as _render_report  # matplotlib, WeasyPrint: on use

    return _render_report(*args, **kwargs)
