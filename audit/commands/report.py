"""``audit report``: render a finished run's report (HTML and/or PDF) again."""

from __future__ import annotations

from pathlib import Path

import click

from audit.commands.terminal import echo

FORMAT_CHOICES = {"html": ("html",), "pdf": ("pdf",), "both": ("html", "pdf")}


@click.command("report")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--no-faces", is_flag=True,
              help="Leave every face image (originals and reconstructions) out of the report, "
                   "e.g. before sharing it beyond those allowed to see the dataset.")
@click.option("--format", "report_format", type=click.Choice(list(FORMAT_CHOICES)), default="both",
              show_default=True, help="Write report.html, report.pdf or both.")
def report(out: Path, no_faces: bool, report_format: str) -> None:
    """Render OUT/report.html and OUT/report.pdf from a finished run.

    OUT is the run folder written by 'audit run' (its results.json and the
    sample images it names). Nothing is recomputed: rendering again with
    other options takes seconds.

    \b
    Example:
      audit report runs/dlib
      audit report runs/dlib --no-faces --format pdf
    """
    from reports.render import render_report  # heavy (matplotlib, WeasyPrint): import on use

    written = render_report(out, no_faces=no_faces, formats=FORMAT_CHOICES[report_format])
    for path in written.values():
        echo(f"Wrote {path}")
