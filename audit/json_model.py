"""Typed records read from JSON and written back, checked field by field.

results.json is read by three tools (the gate, the report, a later run's
baseline) and sometimes edited by hand, so each of its sections is a
dataclass here and every field is checked for its declared type once, when
the file is read.  A field of the wrong type is a :class:`ResultsError`
naming its path (``probes.verification.summary[2].fta``) and the value;
nothing downstream guesses.

Why not a validation library: the rules are few and specific to this file
(JSON has no NaN, so ``null`` in a ``float`` field is NaN; keys a newer
minor version adds must survive a read and a write), and the error must
read like the tool's other errors.  The types handled are the ones the
schema uses: ``str``, ``int``, ``float``, ``bool``, ``X | None``,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``Any`` and nested
dataclasses.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from audit.errors import InputError, ResultsError

T = TypeVar("T")

#: What a reader is told to do about a field of the wrong type.
DAMAGED = "the file was edited or damaged. Re-run the audit, or restore the file."
#: The deepest nesting a JSON file may have.  The tool's own files nest fewer than 10 levels;
#: deeper input would exhaust Python's recursion in the parser or in the code that walks it.
MAX_JSON_DEPTH = 100


class FieldError(ResultsError):
    """A field of the wrong type, or missing: where it is and what is wrong.

    Its message speaks of results.json; a reader of another file rewords it
    from :attr:`where` and :attr:`problem`.
    """

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} {problem}: {DAMAGED}")
        self.where = where
        self.problem = problem


class JSONFileError(InputError):
    """A JSON file that cannot be read: :attr:`problem` says why ("is not valid JSON (...)")."""

    def __init__(self, path: str | os.PathLike, problem: str, *, unreadable: bool = False) -> None:
        super().__init__(f"{str(path)!r} {problem}.")
        self.path = str(path)
        self.problem = problem
        #: The file exists but the OS refused to read it (permissions), not its content.
        self.unreadable = unreadable


def parse_json_file(path: str | os.PathLike) -> Any:
    """Parse a JSON file the user gave, or raise :class:`JSONFileError` saying why it cannot be.

    Every JSON file the tool reads from its user (dataset.json, a race
    dictionary, generator.json, results.json) comes through here, so that no
    file can end a run with a traceback: not UTF-8, not JSON, a number of
    more than 4,300 digits, or nesting deep enough to exhaust the parser's
    recursion (refused beyond :data:`MAX_JSON_DEPTH` levels).  A byte-order
    mark, which some editors add, is read past.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JSONFileError(path, f"is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                                  f"{exc.start})") from None
    except OSError as exc:
        raise JSONFileError(path, f"cannot be read ({exc.strerror or exc})", unreadable=True) from exc
    try:
        data = json.loads(text)
    except RecursionError:
        data, deep = None, True
    except ValueError as exc:       # JSONDecodeError, and ints past Python's digit limit
        raise JSONFileError(path, f"is not valid JSON ({exc})") from None
    else:
        deep = _deeper_than(data, MAX_JSON_DEPTH)
    if deep:
        raise JSONFileError(path, f"nests JSON more than {MAX_JSON_DEPTH} levels deep, which no file of "
                                  "this tool does")
    return data


def read_json(path: str | os.PathLike, *, error: type[InputError] = InputError, fix: str) -> Any:
    """:func:`parse_json_file`, its error reworded as ``error`` naming the file, what is wrong and ``fix``."""
    try:
        return parse_json_file(path)
    except JSONFileError as exc:
        advice = f"Make it readable (chmod u+r), or: {fix}" if exc.unreadable else fix
        raise error(f"{str(path)!r} {exc.problem}: {advice}") from exc.__cause__


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than ``limit`` levels (walked without recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


@dataclass(kw_only=True)
class Record:
    """A JSON object with declared fields; keys it does not declare are kept in ``extra``.

    ``extra`` is how a file written by a newer minor version (which may add
    keys, never change one) survives being read and written by this one.
    """

    extra: dict[str, Any] = field(default_factory=dict)


def json_safe(value: Any) -> Any:
    """JSON has no NaN: write it as null so that every JSON parser reads the file."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        try:
            return json_safe(value.item())
        except (TypeError, ValueError):
            pass
    return value


def to_json(value: Any) -> Any:
    """A record (or anything holding records) as JSON data: declared fields in order, then ``extra``.

    Every field is written (null where it has no value), except an optional
    sub-record that is None: a probe that did not run has no section.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        absent = _optional_records(type(value))
        out = {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
               if f.name != "extra" and not (f.name in absent and getattr(value, f.name) is None)}
        for key, item in (getattr(value, "extra", None) or {}).items():
            out.setdefault(key, to_json(item))
        return json_safe(out)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return json_safe(value)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@cache
def _optional_records(cls: type) -> frozenset[str]:
    """The fields of ``cls`` that hold an optional record (``Section | None``)."""
    return frozenset(name for name, kind in _hints(cls).items()
                     if typing.get_origin(kind) in (types.UnionType, typing.Union)
                     and any(dataclasses.is_dataclass(a) for a in typing.get_args(kind)))


def from_json(kind: Any, data: Any, where: str) -> Any:
    """``data`` (parsed JSON) as ``kind``, each field checked; a ResultsError names ``where`` it went wrong."""
    if kind is Any:
        return data
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):   # the schema's unions are all ``X | None``
        if data is None and type(None) in args:
            return None
        return from_json(next(a for a in args if a is not type(None)), data, where)
    if dataclasses.is_dataclass(kind):
        return _record(kind, data, where)
    if origin is list or kind is list:
        items = _expect(data, list, "a list", where)
        return [from_json(args[0] if args else Any, item, f"{where}[{i}]") for i, item in enumerate(items)]
    if origin is tuple:
        items = _expect(data, list, "a list", where)
        return tuple(from_json(args[0] if args else Any, item, f"{where}[{i}]") for i, item in enumerate(items))
    if origin is dict or kind is dict:
        mapping = _expect(data, dict, "an object", where)
        value_kind = args[1] if len(args) == 2 else Any
        return {str(k): from_json(value_kind, v, f"{where}.{k}") for k, v in mapping.items()}
    return _scalar(kind, data, where)


def _record(kind: type[T], data: Any, where: str) -> T:
    mapping = _expect(data, dict, "an object", where)
    hints = _hints(kind)
    values: dict[str, Any] = {}
    declared = {f.name: f for f in dataclasses.fields(kind) if f.init}
    for name, spec in declared.items():
        if name == "extra":
            continue
        if name in mapping:
            values[name] = from_json(hints[name], mapping[name], f"{where}.{name}")
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise FieldError(where, f"lacks {name!r}")
    unknown = {k: v for k, v in mapping.items() if k not in declared or k == "extra"}
    if unknown and "extra" in declared:
        values["extra"] = unknown
    return kind(**values)


def _expect(data: Any, kind: type, words: str, where: str) -> Any:
    if not isinstance(data, kind):
        raise FieldError(where, f"is {_shown(data)}, not {words}")
    return data


def _scalar(kind: Any, data: Any, where: str) -> Any:
    """str, int, float or bool; JSON's null in a float field is NaN (results.json writes NaN as null)."""
    if kind is float:
        if data is None:
            return math.nan
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
        raise FieldError(where, f"is {_shown(data)}, not a number")
    if kind is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        if isinstance(data, float) and data.is_integer():
            return int(data)
        raise FieldError(where, f"is {_shown(data)}, not a whole number")
    if kind is bool:
        return _expect(data, bool, "true or false", where)
    if kind is str:
        return _expect(data, str, "text", where)
    raise TypeError(f"json_model cannot read the type {kind!r} (at {where})")


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"
