"""Internal errors: one line on the terminal, the traceback in a log file.

A traceback tells a user nothing they can act on and buries the one fact
that matters: this is a bug in the tool, not a problem with their data.
:func:`internal_error_message` says that in one line, names what failed
(the command, and the file or item where the code recorded one with
:meth:`BaseException.add_note`), and points to the log file that
:func:`write_crash_log` filled with the traceback for the bug report.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Sequence

from audit import __version__
from audit.sinks import terminal_text

#: Folder for crash logs (default: the system's temporary folder).
LOG_DIR_ENV_VAR = "AUDIT_LOG_DIR"
LOG_PREFIX = "face-bias-audit-crash-"
#: The one-line message shows at most this much of the exception's text.
MAX_DETAIL_CHARS = 300


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_DETAIL_CHARS else line[:MAX_DETAIL_CHARS - 3] + "..."


def where_it_failed(exc: BaseException) -> str:
    """The file or item the failure concerns, where known: notes added on the way up, the OS's file name."""
    places = [_one_line(note) for note in getattr(exc, "__notes__", ()) or ()]
    filename = getattr(exc, "filename", None)
    if filename is not None and not any(str(filename) in p for p in places):
        places.append(f"file {str(filename)!r}")
    return "; ".join(places)


def write_crash_log(exc: BaseException, *, command: Sequence[str]) -> Path | None:
    """Write the traceback and the context a bug report needs; the log's path, or None if it cannot.

    Control characters in it (a hostile label quoted by an exception) are
    written as their escapes, so that reading the log cannot drive the
    terminal, and a file name that is not valid UTF-8 cannot stop the log
    from being written.
    """
    folder = os.environ.get(LOG_DIR_ENV_VAR) or tempfile.gettempdir()
    try:
        os.makedirs(folder, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix=LOG_PREFIX, suffix=".log", dir=folder)
        text = (f"face-bias-audit {__version__} internal error\n"
                f"time: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
                f"command: {shlex.join(command)}\n"
                f"python: {sys.version.split()[0]} on {platform.platform()}\n\n"
                + "".join(traceback.format_exception(exc)))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            # the traceback quotes labels and file names, and the log is read with cat or in a CI log
            fh.write(terminal_text(text, multiline=True))
    except OSError:
        return None
    return Path(path)


def internal_error_message(exc: BaseException, *, command: str, log: Path | None) -> str:
    """The one line an internal error prints (after ``Error: ``)."""
    detail = _one_line(str(exc))
    what = type(exc).__name__ + (f": {detail}" if detail else "")
    where = where_it_failed(exc)
    where = f" ({where})" if where else ""
    saved = (f"The traceback is in {str(log)!r}: please report the bug with that file."
             if log is not None else "The traceback could not be saved to a log file: set "
             f"{LOG_DIR_ENV_VAR} to a writable folder and rerun to get it.")
    return (f"internal error in '{command}': {what}{where}. This is a bug in face-bias-audit, not a "
            f"problem with your input. {saved}")
