"""CSV files read record by record, each with its line number: no row can be swallowed.

Python's ``csv`` module, given a quote that is never closed, reads every
following line into one value: one typo on line 12 of a manifest hides
lines 12-61 and the audit quietly measures a fifth of the dataset.  Here
the file is cut into records first, with a scanner that follows CSV's
quoting rules, and each record is then parsed on its own, strictly:

* every physical line ends up in exactly one record, whose ``line`` is
  where it starts;
* a record that spans lines is a value with a line break in it only if it
  parses cleanly into as many fields as the header has; otherwise the quote
  that opened it was left open, and the whole file is refused with an error
  naming the line where that quote opened (a guess at the user's intent
  would be a silent drop);
* a record confined to one line that cannot be parsed (a stray quote, a
  value longer than ``csv.field_size_limit()``) comes back with a
  ``problem``: the caller excludes that row and says why.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from audit.errors import DatasetError

_START, _FIELD, _QUOTED, _QUOTE_IN_QUOTED = range(4)

MSG_UNCLOSED_QUOTE = ("{path!r}: the quote opened on line {line} is never closed, so every line after it would "
                      "be read as one value. Close that quote, or double a quote that is part of a value (\"\").")
MSG_QUOTE_RUNS_ON = ("{path!r}: the quote opened on line {line} is only closed on line {end} ({why}), so lines "
                     "{line}-{end} would be read as one row. Close the quote on line {line}, or double a quote "
                     "that is part of a value (\"\").")
PROBLEM_BAD_QUOTES = ("a quote in the middle of a value ({error}); put the whole value in quotes and double "
                      "every quote inside it")
PROBLEM_TOO_LONG = "a value longer than {limit:,} characters, more than a path or a label ever needs"


@dataclass(frozen=True)
class CsvRecord:
    """One record: the line it starts on, its fields, and why it cannot be parsed (if so)."""

    line: int
    fields: list[str]
    end_line: int
    problem: str | None = None


def _scan(line: str, state: int) -> int:
    """The quoting state after ``line``, starting in ``state`` (the csv module's default dialect)."""
    if '"' not in line:  # the common case: nothing opens or closes
        return _QUOTED if state == _QUOTED else _START
    for ch in line:
        if state == _QUOTED:
            if ch == '"':
                state = _QUOTE_IN_QUOTED
        elif state == _QUOTE_IN_QUOTED:
            state = _QUOTED if ch == '"' else _START if ch in ",\r\n" else _FIELD
        elif state == _START:
            state = _QUOTED if ch == '"' else _START if ch in ",\r\n" else _FIELD
        elif ch in ",\r\n":  # _FIELD
            state = _START
    return _QUOTED if state == _QUOTED else _START


def _parse(chunk: str) -> tuple[list[str], str | None]:
    try:
        rows = list(csv.reader(io.StringIO(chunk, newline=""), strict=True))
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            return [], PROBLEM_TOO_LONG.format(limit=csv.field_size_limit())
        return [], PROBLEM_BAD_QUOTES.format(error=exc)
    if len(rows) != 1:  # cannot happen for a quote-balanced chunk; refuse rather than guess
        return [], PROBLEM_BAD_QUOTES.format(error=f"{len(rows)} records on one line")
    return rows[0], None


def _read_text(path: Path, *, what: str) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except PermissionError as exc:
        raise DatasetError(f"The {what} {str(path)!r} cannot be read: permission denied. Make it readable "
                           "(chmod u+r).") from exc
    except OSError as exc:
        raise DatasetError(f"The {what} {str(path)!r} cannot be read ({exc.strerror or exc}).") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DatasetError(f"The {what} {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}, "
                           f"line {line}); save it as UTF-8 CSV.") from exc


def read_csv_records(path: str | os.PathLike, *, what: str = "CSV file") -> tuple[CsvRecord | None,
                                                                                   list[CsvRecord]]:
    """The header record (None for an empty file) and every other non-blank record, in order.

    Raises :class:`DatasetError` for a file that cannot be read, and for a
    quote left open (naming the line where it opened).  Records whose
    ``problem`` is set are the caller's to exclude, with their line number.
    """
    path = Path(path)
    lines = list(io.StringIO(_read_text(path, what=what), newline=""))
    records: list[CsvRecord] = []
    header: CsvRecord | None = None
    i = 0
    while i < len(lines):
        start = i
        state = _scan(lines[i], _START)
        i += 1
        while state == _QUOTED and i < len(lines):
            state = _scan(lines[i], state)
            i += 1
        if state == _QUOTED:
            raise DatasetError(MSG_UNCLOSED_QUOTE.format(path=str(path), line=start + 1))
        chunk = "".join(lines[start:i])
        if header is not None and not chunk.strip("\r\n"):
            continue  # a blank line
        fields, problem = _parse(chunk)
        record = CsvRecord(line=start + 1, fields=fields, end_line=i, problem=problem)
        if header is None:
            if problem is not None:
                raise DatasetError(f"{str(path)!r}: its header (line {start + 1}) cannot be read: {problem}.")
            header = record
            continue
        spans_lines = record.end_line > record.line
        if spans_lines and (problem is not None or len(fields) != len(header.fields)):
            why = problem or f"the row then has {len(fields)} fields where the header has {len(header.fields)}"
            raise DatasetError(MSG_QUOTE_RUNS_ON.format(path=str(path), line=record.line, end=record.end_line,
                                                        why=why))
        records.append(record)
    return header, records
