"""The ``audit`` command line.

The CLI only parses options, calls library functions and turns the
project's own errors (:mod:`audit.errors`) into one ``Error: ...`` line and
an exit code.  Each command lives in :mod:`audit.commands`.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

import click

from audit import __version__
from audit.crash import internal_error_message, write_crash_log
from audit.errors import EXIT_INPUT_ERROR, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_SIGNAL_BASE, AuditError
from audit.outputs import describe_os_error, is_environment_error
from audit.sinks import terminal_text
from audit.threads import prepare_environment

EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    audit gate (or run --policy): a rule failed
  2    usage or input error (bad option, dataset, policy, results; an unwritable
       or full output disk): the message names the problem and the fix
  3    a target stopped the run (quota, budget, unreachable API), or a download
       did (unreachable server); rerun to resume
  4    internal error: a bug in this tool; the message names the log file with the
       traceback
  130  interrupted (Ctrl-C); rerun the same command to resume
  143  stopped by SIGTERM (a CI job cancelled, timeout, docker stop); 129 by SIGHUP
       (the terminal closed): rerun the same command to resume
"""

#: Signals that ask the tool to stop -- a CI job cancelled, ``timeout``, ``docker stop`` (SIGTERM), the
#: terminal closed (SIGHUP) -- handled as Ctrl-C is; the exit code is 128 + the signal's number.
STOP_SIGNALS = ("SIGTERM", "SIGHUP")


class StopRequested(KeyboardInterrupt):
    """A stop signal, raised where Ctrl-C's KeyboardInterrupt would be: every clean-up for it runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While the block runs, a stop signal stops the command as Ctrl-C does (at the next bytecode).

    A signal the parent ignores (``nohup`` ignores SIGHUP) stays ignored;
    a process forked from this one dies of the signal as before.  Outside
    the main thread (an embedding library's own thread) nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    main_pid = os.getpid()

    def stop(signum: int, frame) -> None:
        if os.getpid() != main_pid:   # a forked child inherited the handler: end as the signal says
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise StopRequested(signum)

    saved = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is None or signal.getsignal(number) == signal.SIG_IGN:
            continue
        saved[number] = signal.signal(number, stop)
    try:
        yield
    finally:
        for number, previous in saved.items():
            signal.signal(number, previous)


#: Command modules that could not be imported: the CLI refuses to run rather than
#: silently lacking a command.
_BROKEN_COMMANDS: dict[str, BaseException] = {}


def _command_words(group: click.Group, args: list[str]) -> list[str]:
    """``["dataset", "import"]`` from the arguments: the command path, for messages."""
    words, current = [], group
    for arg in args:
        if not isinstance(current, click.Group) or arg not in current.commands:
            break
        words.append(arg)
        current = current.commands[arg]
    return words


def _error_line(message: str) -> None:
    """The one ``Error: ...`` line, on one line and through :func:`audit.sinks.terminal_text`.

    Messages quote labels, groups and file names from the dataset: their
    control characters are shown, never sent to the terminal.
    """
    click.echo(f"Error: {terminal_text(' '.join(str(message).split()))}", err=True)


class TerminalLogHandler(logging.Handler):
    """Log records on the current stderr, as Python's last-resort handler writes them, but escaped.

    Warnings quote group labels and image paths (a small group, a chunk that
    killed its workers): each record goes through :func:`audit.sinks.terminal_text`.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(terminal_text(self.format(record), multiline=True) + "\n")
        except Exception:  # logging must never stop the command
            self.handleError(record)


_format_warning = warnings.formatwarning


def _terminal_safe_warning(message, category, filename, lineno, line=None) -> str:
    """Python's warning text with its control characters shown (a library may quote a label)."""
    return terminal_text(_format_warning(message, category, filename, lineno, line), multiline=True)


def _guard_terminal() -> None:
    """Route log records and warnings through :func:`audit.sinks.terminal_text` (once per process)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = TerminalLogHandler(logging.WARNING)
        root.addHandler(handler)
    warnings.formatwarning = _terminal_safe_warning


class AuditGroup(click.Group):
    """A click group that reports every error as one clean line and an exit code.

    The project's own errors (:class:`AuditError`) carry their message and
    exit code.  An OS error that is the user's environment (permission
    denied, read-only or full disk) is named with its path and the fix.
    Anything else is a bug: one line saying so, the traceback in a log file,
    exit code 4.  Never a Python traceback on the terminal.
    """

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        for name, exc in _BROKEN_COMMANDS.items():
            formatter.write_paragraph()
            formatter.write_text(f"Broken installation: {name} cannot be imported ({type(exc).__name__}: "
                                 f"{exc}); reinstall the tool.")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["audit.args"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):  # noqa: D401 - click API
        args = ctx.meta.get("audit.args", [])
        command = " ".join(["audit", *_command_words(self, args)])
        _guard_terminal()
        try:
            if _BROKEN_COMMANDS:
                name, exc = next(iter(_BROKEN_COMMANDS.items()))
                raise RuntimeError(f"the command module {name!r} cannot be imported "
                                   f"({type(exc).__name__}: {exc}); the installation is broken: "
                                   "reinstall the tool (pip install -e .)") from exc
            with stop_signals_interrupt():
                return super().invoke(ctx)
        except AuditError as exc:
            _error_line(str(exc))
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", None)
            said = f"Stopped by {signal.Signals(signum).name}" if signum else "Interrupted"
            click.echo(f"{said}. Everything computed so far is cached: rerun the same command to resume.",
                       err=True)
            ctx.exit(EXIT_SIGNAL_BASE + signum if signum else EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # the one place that catches everything: nothing escapes as a traceback
            if is_environment_error(exc):
                _error_line(describe_os_error(exc, what='', action='use'))
                ctx.exit(EXIT_INPUT_ERROR)
            log = write_crash_log(exc, command=["audit", *args])
            _error_line(internal_error_message(exc, command=command, log=log))
            ctx.exit(EXIT_INTERNAL_ERROR)


@click.group(cls=AuditGroup, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="audit")
def cli() -> None:
    """Probe a face recognition model for demographic bias.

    \b
    Example, from a folder of labelled faces to a report and a CI verdict:
      audit dataset import utkface ~/data/UTKFace utk/
      audit dataset balance utk/ balanced/ --by race,gender --per-group 100
      audit run --target dlib --dataset balanced/ --train-dataset utk/ --out runs/dlib \\
          --generator-channels 128 --epochs 10 --batch-size 64
      audit gate runs/dlib --policy examples/policy.toml

    The generator learns from utk/ minus every audited person (--train-dataset);
    without a corpus it trains on part of the audit set, too few faces to learn identity.
    """


COMMAND_MODULES = (("audit.commands.dataset", "dataset"), ("audit.commands.embed", "embed"),
                   ("audit.commands.run", "run"), ("audit.commands.generator", "generator"),
                   ("audit.commands.report", "report"),
                   ("audit.commands.gate", "gate"), ("audit.commands.targets", "targets"),
                   ("audit.commands.probes", "probes"))


def _register_commands(modules: tuple[tuple[str, str], ...] = COMMAND_MODULES) -> None:
    """Add each command; one that cannot be imported makes every command fail loudly.

    A command silently missing from ``audit --help`` reads as "no such
    feature"; a broken installation must say so instead.
    """
    for module_name, attribute in modules:
        try:
            cli.add_command(getattr(importlib.import_module(module_name), attribute))
        except Exception as exc:  # any failure to import is a broken installation
            _BROKEN_COMMANDS[module_name] = exc


_register_commands()


def main() -> None:
    prepare_environment()      # before any command loads torch: see audit.threads
    cli(prog_name="audit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
