"""Every problem of a user's file on one line: `hw.yaml: 3 errors: a (...); b (...); c (...)`.

`format_errors` joins error items into that line, whitespace collapsed and capped at MAX_LINE_CHARS with
"; … and N more". `validation_error` turns a pydantic ValidationError into such a line: each error becomes
`field.path (message, got VALUE)`, with the value shown short (a 39 MB expansion or a 5000-digit integer
prints as a few characters), and an unknown key names the closest known one (difflib). Neither imports
pydantic: the error it is given has already loaded it.
"""

from __future__ import annotations

import difflib
import re
import reprlib
import typing
from typing import Any

from moelab.errors import MoelabError

MAX_LINE_CHARS = 400  # one terminal-friendly line, long enough for four or five typical errors
MAX_VALUE_CHARS = 40  # the offending value as shown in an error: enough to recognise it
MAX_INT_DIGITS = 40  # an integer up to this many digits prints in full; a longer one as its digit count
_MIN_ITEM_CHARS = 80  # an error item is clipped to at least this much, so the first one always says something

_MODELS: dict[str, type] = {}  # model class name -> class, for the known keys of an unknown-key error

_short = reprlib.Repr()
_short.maxstring = MAX_VALUE_CHARS
_short.maxother = MAX_VALUE_CHARS
_short.maxlong = MAX_VALUE_CHARS
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4
_short.maxlevel = 2


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _fair_share(lengths: list[int], budget: int) -> int:
    """The clip length L for which the items, each cut to L, fill `budget` (short ones keep their length, long
    ones, such as a nested file's own errors, share the rest); at least _MIN_ITEM_CHARS."""
    low, high = _MIN_ITEM_CHARS, max(max(lengths), _MIN_ITEM_CHARS)
    while low < high:
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


def format_errors(source: str, errors: list[str]) -> str:
    """`source: item` for one error, `source: N errors: a; b; c` for several, on one line of at most
    MAX_LINE_CHARS (later items replaced by "; … and N more")."""
    items = [" ".join(str(e).split()) for e in errors] or ["invalid"]
    head = f"{' '.join(str(source).split())}: " + (f"{len(items)} errors: " if len(items) > 1 else "")
    item_limit = _fair_share([len(i) for i in items], MAX_LINE_CHARS - len(head) - 2 * (len(items) - 1))
    line = head
    for i, item in enumerate(items):
        piece = ("; " if i else "") + _clip(item, item_limit)
        left = len(items) - i - 1
        tail = len(f"; … and {left} more") if left else 0
        if i and len(line) + len(piece) + tail > MAX_LINE_CHARS:
            return f"{line}; … and {left + 1} more"
        line += piece
    return line


def show_value(value: Any) -> str:
    """A short, safe rendering of a user's value for an error message (moelab's one renderer of values: an
    integer as its digits, 4294967296 not 4.29497e+09, or "an integer of N digits" past MAX_INT_DIGITS; a float
    as repr, so 1e-300 stays 1e-300; null, true and false as JSON and YAML write them)."""
    if value is None or isinstance(value, bool):  # as the user's JSON or YAML file spells them
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        if abs(value) < 10**MAX_INT_DIGITS:
            return str(value)
        digits = len(str(abs(value))) if abs(value).bit_length() < 14_000 else int(value.bit_length() * 0.30103) + 1
        return f"an integer of {digits} digits"
    if isinstance(value, float):
        return repr(value)
    try:
        return _clip(" ".join(_short.repr(value).split()), MAX_VALUE_CHARS + 10)
    except (ValueError, RecursionError):  # an integer past Python's digit limit, somewhere inside
        return f"a {type(value).__name__}"


def register_model(cls: type) -> type:
    """Remember a model class so that unknown-key errors about it can name its known keys."""
    _MODELS[cls.__name__] = cls
    return cls


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_in(tp: Any) -> Any:
    """The pydantic model inside an annotation (Optional, Annotated, dict values, list items), else None."""
    for _ in range(8):
        if hasattr(tp, "model_fields"):
            return tp
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if not args:
            return None
        tp = args[-1] if typing.get_origin(tp) is dict else args[0]
    return None


def _known_keys(model: Any, parent: tuple) -> list[str]:
    """The keys a mapping at `parent` (a pydantic loc) accepts, following fields from `model` down."""
    for part in parent:
        if model is None:
            return []
        if isinstance(part, int) or part == "[key]":
            continue
        field = model.model_fields.get(part)
        if field is None:
            # a dict key on the way (dict[str, Model]): stay on the value type
            continue
        model = _model_in(field.annotation)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


_WORDS = {"a valid integer": "an integer", "a valid number": "a number", "a valid dictionary": "a mapping",
          "a valid string": "a string", "a valid list": "a list", "a valid boolean": "true or false"}


def _message(msg: str) -> str:
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    msg = re.sub(r"^(?:Input|List|String|Dictionary|Value|Tuple|Set|Object) should ", "must ", msg)
    msg = re.sub(r" after validation, not \d+$", "", msg)
    for pydantic_word, file_word in _WORDS.items():
        msg = msg.replace(pydantic_word, file_word)
    return msg[:1].lower() + msg[1:] if not msg[:2].isupper() else msg


def error_items(exc: Any, model: type | None = None) -> list[str]:
    """Each error of a pydantic ValidationError as `field.path (message, got VALUE)`."""
    model = model or _MODELS.get(getattr(exc, "title", ""))
    items = []
    for err in exc.errors(include_url=False):
        loc, kind = tuple(err.get("loc", ())), err.get("type", "")
        path = _path(loc)
        if kind == "extra_forbidden" and loc:
            known = _known_keys(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            hint = (f" (did you mean {_path((*loc[:-1], close[0]))!r}?)" if close
                    else f" (known: {', '.join(known)})" if 0 < len(known) <= 8 else "")
            items.append(f"unknown key {_clip(_path(loc), MAX_VALUE_CHARS + 20)!r}{hint}")
        elif kind == "invalid_key":  # a YAML key that is not a string (`1: x`, `null: x`)
            parent = _path(loc[:-1])
            items.append(f"key {show_value(loc[-1] if loc else err.get('input'))}{' in ' + parent if parent else ''} "
                         "(keys must be strings)")
        elif kind == "missing":
            items.append(f"missing key {path!r}")
        elif not loc:  # a check across fields: its message says it all
            items.append(_message(err.get("msg", "")))
        else:
            what = "key " if loc[-1] == "[key]" else ""
            items.append(f"{path} ({what}{_message(err.get('msg', ''))}, got {show_value(err.get('input'))})")
    return items


def validation_error(source: str, exc: Any, model: type | None = None) -> MoelabError:
    """The one-line MoelabError for a pydantic ValidationError about the file `source`."""
    return MoelabError(format_errors(source, error_items(exc, model)))
