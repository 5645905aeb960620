"""``audit probes``: the measurements this installation can run."""

from __future__ import annotations

import json

import click

from audit.commands.terminal import echo
from audit.probe_registry import list_probes


@click.command("probes")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def probes(as_json: bool) -> None:
    """List the probes 'audit run --probes' accepts, what each needs, and where it comes from.

    NEEDS names the inputs the run prepares for a probe (embeddings, identities,
    face chips, a pairs file, generators) and the probes whose output it reads
    when they run too.  Plugins are packages that register a probe under the
    entry point group 'face_bias_audit.probes' (see docs/adding-a-probe.md).

    \b
    Example:
      audit probes
      audit run --dataset lfw/ --probes volume,verification --out runs/lfw
    """
    listings = list_probes()
    if as_json:
        echo(json.dumps([p.to_dict() for p in listings], indent=2))
        return
    header = ("PROBE", "TITLE", "NEEDS", "SOURCE")
    rows = [(p.name, p.title, p.needs, p.source if p.available else f"{p.source}: unavailable, {p.reason}")
            for p in listings]
    widths = [max(len(r[k]) for r in rows + [header]) for k in range(3)]
    for row in [header] + rows:
        echo("  ".join(cell.ljust(widths[k]) for k, cell in enumerate(row[:3])) + "  " + row[3])
