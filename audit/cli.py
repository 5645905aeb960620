"""The ``audit`` command line.

The CLI only parses options, calls library functions and turns the
project's own errors (:mod:`audit.errors`) into one ``Error: ...`` line and
an exit code.  Each command lives in :mod:`audit.commands`.
"""

from __future__ import annotations

import sys

import click

from audit import __version__
from audit.errors import EXIT_INTERRUPTED, AuditError

EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    audit gate (or run --policy): a rule failed
  2    usage or input error (bad option, dataset, policy, results)
  3    a target stopped the run (quota, budget, unreachable API); rerun to resume
  130  interrupted; rerun the same command to resume
"""


class AuditGroup(click.Group):
    """A click group that reports :class:`AuditError` as one clean line."""

    def invoke(self, ctx: click.Context):  # noqa: D401 - click API
        try:
            return super().invoke(ctx)
        except AuditError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted. Everything computed so far is cached: rerun the same command "
                       "to resume.", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=AuditGroup, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="audit")
def cli() -> None:
    """Probe a face recognition model for demographic bias.

    \b
    Example, from a folder of labelled faces to a report and a CI verdict:
      audit dataset import utkface ~/data/UTKFace utk/
      audit dataset balance utk/ balanced/ --by race,gender --per-group 100
      audit run --target dlib --dataset balanced/ --out runs/dlib --epochs 20
      audit gate runs/dlib --policy examples/policy.toml
    """


def _register_commands() -> None:
    """Add each command module that exists; a command is one module's job."""
    import importlib

    for module_name, attribute in (("audit.commands.dataset", "dataset"),
                                   ("audit.commands.embed", "embed"),
                                   ("audit.commands.run", "run"),
                                   ("audit.commands.generator", "generator"),
                                   ("audit.commands.report", "report"),
                                   ("audit.commands.gate", "gate"),
                                   ("audit.commands.targets", "targets")):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        cli.add_command(getattr(module, attribute))


_register_commands()


def main() -> None:
    cli(prog_name="audit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
