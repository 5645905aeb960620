"""Target options (``--target-option key=value``): parsed once, converted by each target with the bad value named.

Apart from the registry so that a target module can import them while the
registry imports the targets.
"""

from __future__ import annotations

from typing import Any

from audit.errors import InputError

TRUE_WORDS = ("1", "true", "yes", "on")
#: The largest whole number a target option takes where the target names no bound: what fits
#: numpy's and torch's 64-bit integers (a larger one fails deep inside them).
MAX_OPTION_INT = 2 ** 63 - 1
FALSE_WORDS = ("0", "false", "no", "off")


def parse_target_options(items: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``["engine=dlib", "threshold=0.55"]`` -> ``{"engine": "dlib", "threshold": "0.55"}``.

    Keys are lower-cased and ``-`` becomes ``_`` (``batch-size`` = ``batch_size``);
    values stay strings (the target converts them).  A repeated key is an
    error rather than "last one wins", so a typo in a long command is seen.
    """
    options: dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or not key:
            raise InputError(f"--target-option {item!r} is not of the form key=value "
                             f"(for example --target-option threshold=0.6).")
        if key in options:
            raise InputError(f"--target-option {key!r} is given twice ({options[key]!r} and "
                             f"{value.strip()!r}); give it once.")
        options[key] = value.strip()
    return options


def option_float(name: str, value: Any, *, positive: bool = False) -> float:
    """A target option as a float, or an InputError naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"target option {name}={value!r} is not a number.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InputError(f"target option {name}={value!r} must be a finite number.")
    if positive and not number > 0:
        raise InputError(f"target option {name}={value!r} must be greater than 0.")
    return number


def option_int(name: str, value: Any, *, minimum: int | None = None,
               maximum: int | None = None) -> int:
    """A target option as an int within bounds, or an InputError naming it."""
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        raise InputError(f"target option {name}={value!r} is not a whole number.") from None
    if minimum is not None and number < minimum:
        raise InputError(f"target option {name}={value!r} must be >= {minimum}.")
    maximum = MAX_OPTION_INT if maximum is None else maximum
    if number > maximum:
        raise InputError(f"target option {name}={value!r} must be <= {maximum}.")
    return number


def option_bool(name: str, value: Any) -> bool:
    """A target option as a bool (true/false, yes/no, 1/0, on/off)."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise InputError(f"target option {name}={value!r} must be one of {TRUE_WORDS + FALSE_WORDS}.")


def option_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """A target option that must be one of ``choices`` (compared case-insensitively)."""
    word = str(value).strip()
    for choice in choices:
        if word.lower() == choice.lower():
            return choice
    raise InputError(f"target option {name}={value!r} must be one of {choices}.")


def check_option_keys(target_name: str, options: dict, known: dict[str, str]) -> None:
    """Refuse option keys a target does not know, listing the ones it does."""
    prefixes = tuple(k[:-1] for k in known if k.endswith(".*"))
    unknown = sorted(k for k in set(options) - set(known) if not (prefixes and k.startswith(prefixes)))
    if unknown:
        raise InputError(f"unknown target option(s) {unknown} for target {target_name!r}; "
                         f"it accepts: {', '.join(sorted(known))} (see docs/targets.md).")
