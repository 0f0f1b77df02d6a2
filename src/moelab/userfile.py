"""Read a file a user gives (config.json, hardware, workload, corpus, checkpoint JSON) without surprises.

- Regular files only: a directory, FIFO, socket or device (`/dev/zero`) is refused before a byte is read,
  and the file is opened non-blocking, so a FIFO swapped in after the check cannot hang the reader.
- At most `max_bytes`, checked while reading (st_size is not trusted: /proc files report 0).
- UTF-8 text, or one line saying it is not.
- JSON as RFC 8259 has it: no NaN/Infinity literals, no duplicate keys, integers of at most
  MAX_INT_DIGITS digits, nesting at most MAX_DEPTH.
- YAML through PyYAML's safe loader with four changes: aliases are refused (an alias bomb of n levels
  expands to 9^n nodes from a few hundred bytes), so are merge keys (`<<:`, which mostly merge aliases),
  duplicate keys are refused, and plain scalars resolve by
  YAML 1.2's core schema (https://yaml.org/spec/1.2.2/#103-core-schema), so `2e9` is the number 2e9 (YAML
  1.1 reads it as a string), only true/false are booleans (1.1 also takes yes/no/on/off), `012` is twelve
  (1.1: octal ten), and `1:30`, `1_000` and `2024-01-01` stay strings (1.1: 90, 1000 and a date). Nesting
  and integer sizes are bounded as for JSON, and a float too large for a double is refused.
  (A 1.2 resolver set for PyYAML rather than ruamel.yaml: one YAML library, already a dependency.)

Every failure is a MoelabError of one line that starts with the file's name.
"""

from __future__ import annotations

import json
import os
import re
import stat
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from moelab.errors import MoelabError

MAX_FILE_BYTES = 4 * 2**20  # config.json, hardware and workload files (the largest real config is ~10 KB)
MAX_DEPTH = 64  # containers inside containers; real files nest 4 deep
MAX_INT_DIGITS = 40  # 2**128 has 39 digits; a larger integer is no count, size or rate moelab reads

_CHUNK = 2**16


def read_user_bytes(path: str | Path, what: str = "file", max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, or a MoelabError naming the file."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MoelabError(f"{what} {str(path)!r} not found") from None
    except OSError as e:
        raise MoelabError(f"{path}: cannot read {what} ({e.strerror})") from None
    except ValueError:  # a NUL byte in the name
        raise MoelabError(f"{what} {str(path)!r}: not a valid path") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise MoelabError(f"{path}: {what} is {kind}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise MoelabError(f"{path}: cannot read {what} ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise MoelabError(f"{path}: {what} is not a regular file")
        chunks, size = [], 0
        while chunk := f.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise MoelabError(f"{path}: {what} is larger than {max_bytes / 2**20:g} MiB")
            chunks.append(chunk)
    return b"".join(chunks)


def read_user_text(path: str | Path, what: str = "file", max_bytes: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`."""
    raw = read_user_bytes(path, what, max_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MoelabError(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None


def load_user_file(path: str | Path, what: str = "file", max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Parse a user's JSON (`.json`) or YAML (anything else) file under the rules above."""
    path = Path(path)
    text = read_user_text(path, what, max_bytes)
    return parse_json(text, str(path)) if path.suffix.lower() == ".json" else parse_yaml(text, str(path))


# --- JSON -----------------------------------------------------------------------------------------------


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key!r}")
        out[key] = value
    return out


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"{text} is out of range")
    return value


def _json_constant(name: str) -> float:
    raise _Refused(f"{name} is not a JSON number")


class _Refused(ValueError):
    """Raised inside the parsers' hooks; becomes the MoelabError's reason."""


@contextmanager
def _refusals(source: str, kind: str):
    """The failures JSON and YAML parsing share, as one-line MoelabErrors (each parser maps its own syntax
    errors inside this block)."""
    try:
        yield
    except MoelabError:  # already one line (a ValueError too, so it must pass the clause below)
        raise
    except _Refused as e:
        raise MoelabError(f"{source}: not accepted as {kind} ({e})") from None
    except RecursionError:
        raise MoelabError(f"{source}: {kind} nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError:  # Python's own limit on integer digits (4300)
        raise MoelabError(f"{source}: an integer of more than {MAX_INT_DIGITS} digits is not accepted") from None


def parse_json(text: str, source: str = "JSON") -> Any:
    """Strict JSON: see the module docstring."""
    with _refusals(source, "JSON"):
        try:
            value = json.loads(text, object_pairs_hook=_json_pairs, parse_int=_json_int, parse_float=_json_float,
                               parse_constant=_json_constant)
        except json.JSONDecodeError as e:
            raise MoelabError(f"{source}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    return _checked_tree(value, source)


def _checked_tree(value: Any, source: str) -> Any:
    """`value` once its nesting and integer sizes are within bounds (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) >= 10**MAX_INT_DIGITS:
            raise MoelabError(f"{source}: an integer of more than {MAX_INT_DIGITS} digits is not accepted")
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise MoelabError(f"{source}: nested too deeply (at most {MAX_DEPTH} levels)")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value


# --- YAML -----------------------------------------------------------------------------------------------

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution): floats need a dot or an exponent
# (plain digits stay integers); booleans are true/false in three spellings.
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?
                            |[-+]?[0-9]+[eE][-+]?[0-9]+
                            |[-+]?\.(?:inf|Inf|INF)
                            |\.(?:nan|NaN|NAN))$""", re.X)
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_12 = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")  # no 1.1 octal 012, 1_000 or 1:30
_REPLACED = ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
             "tag:yaml.org,2002:timestamp")  # 1.2's core schema has no timestamps: 2024-01-01 is a string


def _construct_int_12(loader, node) -> int:
    """A YAML 1.2 core integer: decimal (leading zeros are decimal), 0o octal or 0x hexadecimal."""
    text = loader.construct_scalar(node)
    digits = text.lstrip("+-")
    if len(digits) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(digits)} digits at line {node.start_mark.line + 1}")
    try:
        if digits[:2] in ("0o", "0x"):
            return int(text.replace(digits[:2], "", 1), 8 if digits[1] == "o" else 16)
        return int(text, 10)
    except ValueError:
        raise _Refused(f"{text!r} is not an integer (line {node.start_mark.line + 1})") from None


def _construct_float_12(loader, node) -> float:
    """A YAML 1.2 core float; one too large for a double is refused, as in JSON (`.inf` stays infinite)."""
    text = loader.construct_scalar(node)
    lowered = text.lower().lstrip("+-")
    if lowered in (".inf", ".nan"):
        return float(lowered.replace(".", "")) * (-1 if text.startswith("-") else 1)
    try:
        value = float(text)
    except ValueError:
        raise _Refused(f"{text!r} is not a number (line {node.start_mark.line + 1})") from None
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"{text} is out of range (line {node.start_mark.line + 1})")
    return value


def _refuse_merge(loader, node):
    """A `<<` merge key (or a !!merge tag): refused by name rather than by PyYAML's missing constructor."""
    raise _Refused(f"YAML merge keys (<<) are not accepted (line {node.start_mark.line + 1}); write the keys out")


@cache
def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader without aliases or duplicate keys, resolving scalars as YAML 1.2 does."""

        yaml_implicit_resolvers = {
            first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

        def __init__(self, stream) -> None:
            super().__init__(stream)
            self._depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.get_event()
                raise _Refused(f"YAML aliases are not accepted (*{event.anchor} at line {event.start_mark.line + 1})")
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels")
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        duplicate = key in seen
                        seen.add(key)
                    except TypeError:  # an unhashable key: PyYAML names it below
                        continue
                    if duplicate:
                        raise _Refused(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            return super().construct_mapping(node, deep)

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_12, list("tTfF"))
    Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT_12, list("-+0123456789"))
    Loader.add_constructor("tag:yaml.org,2002:int", _construct_int_12)
    Loader.add_constructor("tag:yaml.org,2002:float", _construct_float_12)
    Loader.add_constructor("tag:yaml.org,2002:merge", _refuse_merge)
    return Loader


def _yaml_problem(e: Exception) -> str:
    """PyYAML's error as `problem at line L, column C` (its own text quotes the whole stream's name and context)."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if problem and mark is not None:
        return f"{' '.join(str(problem).split())[:160]} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(e).split())[:200]


def parse_yaml(text: str, source: str = "YAML") -> Any:
    """Safe YAML 1.2 scalars, no aliases, no duplicate keys: see the module docstring."""
    import yaml

    with _refusals(source, "YAML"):
        try:
            value = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as e:
            raise MoelabError(f"{source}: not valid YAML ({_yaml_problem(e)})") from None
    return _checked_tree(value, source)
