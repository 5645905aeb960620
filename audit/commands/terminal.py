"""What the commands print: every line through :func:`audit.sinks.terminal_text`.

The commands print labels, identities, file names and messages that quote
them; any of these may come from a hostile dataset.  :func:`echo` is the
one way a command writes to the terminal, so that no control character of
theirs reaches it, whichever line it hides in.
"""

from __future__ import annotations

from typing import Any

import click

from audit.sinks import terminal_text


def echo(message: Any = "", *, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` of ``message`` with its control characters shown, not obeyed (line feeds kept)."""
    click.echo(terminal_text(message, multiline=True), err=err, nl=nl)
