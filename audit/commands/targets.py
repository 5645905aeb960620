"""``audit targets``: the face models this installation can audit."""

from __future__ import annotations

import json

import click

from audit.commands.terminal import echo
from audit.targets import get_target, list_targets, parse_target_options


def _figure(value) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _print_fingerprint(spec: str, option_pairs: tuple[str, ...]) -> None:
    """The target's fingerprint alone on stdout: the model is opened, nothing is embedded."""
    target = get_target(spec, **parse_target_options(list(option_pairs)))
    try:
        echo(target.fingerprint())
    finally:
        target.close()


@click.command("targets")
@click.option("--options", "show_options", is_flag=True,
              help="Also list each target's --target-option keys.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.option("--fingerprint", "fingerprint_of", metavar="TARGET", default=None,
              help="Print only this target's fingerprint (what its embeddings and generators are keyed on): "
                   "a CI cache key for a generator trained against it.")
@click.option("--target-option", "target_option", multiple=True, metavar="KEY=VALUE",
              help="With --fingerprint: an option of the target (repeatable), as 'audit run' takes it.")
def targets(show_options: bool, as_json: bool, fingerprint_of: str | None, target_option: tuple[str, ...]) -> None:
    """List the targets (face models) that can be audited, and whether each can run here.

    Dimension, metric and threshold are the defaults; '-' means they depend on
    the model file or the options.  Plugins are packages that register a target
    under the entry point group 'face_bias_audit.targets'.

    \b
    Example:
      audit targets --options
      audit targets --fingerprint dlib
      audit run --target onnx:arcface.onnx --target-option preset=arcface \\
                --target-option threshold=0.65 --dataset balanced/ --out runs/arcface
    """
    if fingerprint_of is not None:
        _print_fingerprint(fingerprint_of, target_option)
        return
    if target_option:
        raise click.UsageError("--target-option applies to --fingerprint TARGET only.")
    listings = list_targets()
    if as_json:
        echo(json.dumps([t.to_dict() for t in listings], indent=2))
        return
    header = ("TARGET", "DIM", "METRIC", "THRESHOLD", "AVAILABLE", "NOTE")
    rows = [(t.usage, _figure(t.dimension), _figure(t.metric), _figure(t.default_threshold),
             "yes" if t.available else "no", t.reason or t.description) for t in listings]
    widths = [max(len(r[k]) for r in rows + [header]) for k in range(5)]
    for row in [header] + rows:
        echo("  ".join(cell.ljust(widths[k]) for k, cell in enumerate(row[:5])) + "  " + row[5])
    if show_options:
        for t in listings:
            if not t.options:
                continue
            echo(f"\n{t.usage} options (--target-option KEY=VALUE):")
            width = max(len(k) for k, _ in t.options)
            for key, text in t.options:
                echo(f"  {key.ljust(width)}  {text}")
