"""The one boundary for data that users give: files, decoded documents, command lines and RPC messages.

Every reader of user data calls this module, so each limit is stated once and every refusal reads
the same way: an ``InputError`` (a ``BalsamError``: one ``error:`` line at the CLI, INVALID_ARGUMENT
at the coordinator) or an ``InputTooLarge`` (RESOURCE_EXHAUSTED), naming where the problem is (the
file and line, the key path, the message field) and echoing at most a short prefix of the value.

The limits, and why each exists:

- Files: only regular files are read (a FIFO blocks its reader forever, ``/dev/zero`` never ends),
  and at most ``MAX_FILE_BYTES``; YAML at most ``MAX_YAML_BYTES``, since even libyaml reads it at
  about a MiB a second.
- Text: UTF-8 (a UTF-16 or UTF-32 file is recognised by its byte-order mark and named as such);
  a NUL byte means a binary file.
- Nesting: ``MAX_DEPTH`` levels. Decoders, encoders and every walk over the data recurse, and
  100,000 levels fit in 200 KB.
- YAML aliases count as copies of what they name: at most ``MAX_VALUES`` values after expansion
  (1 KB of "billion laughs" expands to 387 million). An alias inside what it names is refused.
- YAML values JSON cannot hold (dates, ``!!binary``, ``!!set``, other tags, keys that are not
  text) are refused naming the key and line: the data is stored and sent as JSON.
- Whole numbers: within +-(2^63 - 1), PostgreSQL's bigint and protobuf's int64 (and Python will not
  even parse more than 4300 digits). Numbers: finite (JSON has no NaN or infinity).
- Text values: at most ``MAX_TEXT`` characters (a program argument of the kernel holds 128 KiB),
  valid Unicode: a lone surrogate (what Python makes of invalid UTF-8 in a command line or of a
  ``\\ud800`` escape in JSON) can be neither stored nor sent.
- RPC messages (``check_message``): every text field at most ``MAX_FIELD_TEXT`` characters (some
  named fields more, ``FIELD_TEXT_LIMITS``) and free of NUL; numbers finite; enum values known;
  sequence numbers within ``MAX_SEQ``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import yaml


from balsam.errors import BalsamError

MAX_FILE_BYTES = 64 << 20
MAX_YAML_BYTES = 8 << 20
MAX_DEPTH = 64
MAX_VALUES = 5_000_000
MAX_INT = 2**63 - 1
MAX_TEXT = 65_536
MAX_INT_CHARS = 40  # longer whole numbers are refused from their text, before Python parses them
MAX_SEQ = 2**63 - 1  # sequence numbers are stored as bigint
MAX_FIELD_TEXT = 4096
FIELD_TEXT_LIMITS = {"params_json": 1 << 20, "message": MAX_TEXT, "reason": MAX_TEXT}
PREVIEW = 30  # characters of an offending value a message shows


class InputError(BalsamError):
    """Input refused at the boundary; ``reason`` is the message without its ``where`` prefix."""

    def __init__(self, reason: str, where: str = "") -> None:
        self.reason = reason
        super().__init__(f"{where}: {reason}" if where else reason)


class InputTooLarge(InputError):
    """Input refused for its size: RESOURCE_EXHAUSTED on the wire."""


def preview(value: str, limit: int = PREVIEW) -> str:
    """A short quoted prefix of ``value``, with its length when it was cut."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# -- files ----------------------------------------------------------------------------------------

_KINDS = ((stat.S_ISDIR, "is a folder, not a file"), (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
          (stat.S_ISCHR, "is a character device, not a regular file"), (stat.S_ISBLK, "is a block device, not a regular file"),
          (stat.S_ISSOCK, "is a socket, not a regular file"))  # fmt: skip


def read_text(path: str | Path, *, yaml_text: bool = False, where: str | None = None) -> str:
    """The text of a regular file, checked: its kind, its size and its encoding.

    ``yaml_text``: the file is read as YAML, so the smaller limit applies (a file found to be YAML
    only from its text is checked with ``check_yaml_size``). Errors are ``InputError`` whose message
    starts with ``where`` (default: the path).
    """
    where = str(path) if where is None else where
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one, before fstat can tell.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError("no such file", where) from None
    except OSError as exc:
        raise InputError(f"cannot read it: {(exc.strerror or str(exc)).lower()}", where) from None
    limit = MAX_YAML_BYTES if yaml_text else MAX_FILE_BYTES
    try:
        info = os.fstat(fd)
        for test, reason in _KINDS:
            if test(info.st_mode):
                raise InputError(reason, where)
        if info.st_size > limit:
            raise InputTooLarge(_too_big(info.st_size, yaml_text), where)
    except BaseException:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)  # the size may have changed since fstat
    if len(data) > limit:
        raise InputTooLarge(_too_big(len(data), yaml_text), where)
    return decode_text(data, where)


def check_yaml_size(text: str, where: str) -> None:
    """A file found to be YAML only from its text must fit YAML's limit too."""
    if len(text) > MAX_YAML_BYTES // 4 and (size := len(text.encode())) > MAX_YAML_BYTES:
        raise InputTooLarge(_too_big(size, True), where)


def _too_big(size: int, yaml_text: bool) -> str:
    if yaml_text:
        return f"is {_mib(size)} of YAML, more than {MAX_YAML_BYTES >> 20} MiB: reading YAML is slow, so give big batches as JSON lines"
    return f"is {_mib(size)}, more than the {MAX_FILE_BYTES >> 20} MiB one file may hold"


_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"), (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"))


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text from bytes (a UTF-8 byte-order mark is dropped); refuses other encodings and binary data."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            raise InputError(f"is {encoding} text: save it as UTF-8", where)
    nul = data.find(b"\0")
    if nul >= 0:
        raise InputError(f"holds a NUL byte (byte {nul}): a binary file, not text", where)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not UTF-8 text (byte {exc.start}{f', line {line}' if line > 1 else ''})", where) from None
    return text[1:] if text.startswith("\ufeff") else text


# -- the command line and names ------------------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character: not for a name that people type and read."""
    return bool(_CONTROL.search(text))


def check_argv(args: Iterable[str]) -> None:
    """Refuse arguments that are not UTF-8: Python turns each such byte into a lone surrogate, which no
    database, file name or message can carry further."""
    for number, arg in enumerate(args, start=1):
        at = _surrogate_at(arg)
        if at >= 0:
            code = ord(arg[at])
            byte = f" (byte 0x{code - 0xDC00:02x})" if 0xDC80 <= code <= 0xDCFF else ""
            raise InputError(f"argument {number} of the command line ({preview(arg)}) is not UTF-8 text{byte}")


def _surrogate_at(text: str) -> int:
    if text.isascii():
        return -1
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return -1


# -- values: what JSON can hold, within the limits ------------------------------------------------------


class _LongInt:
    """A whole number from JSON too long to parse; refused, with its path, by ``check_value``."""

    __slots__ = ("digits",)

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-+"))


def _parse_int(text: str) -> int | _LongInt:
    return int(text) if len(text) <= MAX_INT_CHARS else _LongInt(text)


# Made once: json.loads with any argument builds a decoder per call, a cost paid by every task of a
# workflow that has parameters. Shared by threads as json.loads shares its own default decoder.
_DECODER = json.JSONDecoder(parse_int=_parse_int)


def load_json(text: str, where: str, *, check: bool = True) -> Any:
    """JSON text decoded within the limits; ``json.JSONDecodeError`` for text that is not JSON.

    ``check=False`` leaves the value walk (``check_value``) to the caller, which may name its
    parts better (a job file checks each job with its label); numbers too long to parse are then
    left as placeholders that ``check_value`` refuses.
    """
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise InputError(f"nested deeper than {MAX_DEPTH} levels", where) from None
    if check:
        check_value(value, where)
    return value


def check_value(value: Any, where: str = "", *, max_values: int = MAX_VALUES) -> None:
    """Refuse anything JSON cannot hold or our limits do not allow, naming its path ("data.x[3]").

    Every job of a bulk request passes here, so plain values are checked in their container's loop
    and only containers go on the stack; each entry keeps its parent and key, so that a path is
    spelled out only for a refusal.
    """
    if not isinstance(value, dict | list | tuple):
        _check_plain(value, where, None, None)
        return
    stack: list[tuple[Any, tuple | None, Any, int]] = [(value, None, None, 0)]  # (container, parent entry, key, depth)
    count = 0
    while stack:
        entry = stack.pop()
        container, _, _, depth = entry
        if depth >= MAX_DEPTH:
            raise InputError(f"nested deeper than {MAX_DEPTH} levels", _at(where, entry))
        keyed = isinstance(container, dict)
        for key, child in container.items() if keyed else enumerate(container):
            count += 1
            if keyed and (type(key) is not str or len(key) > MAX_TEXT or not key.isascii()):
                _check_key(key, where, entry)
            kind = type(child)
            if kind is str:
                if len(child) > MAX_TEXT or not child.isascii():
                    _check_plain(child, where, entry, key)
            elif kind is int:
                if not -MAX_INT <= child <= MAX_INT:
                    _check_plain(child, where, entry, key)
            elif kind is float or kind is _LongInt:
                _check_plain(child, where, entry, key)
            elif isinstance(child, dict | list | tuple):
                if child:  # an empty one holds nothing to check
                    stack.append((child, entry, key, depth + 1))
            elif child is not None and kind is not bool:
                raise InputError(f"{kind.__name__} is not a JSON value", _at(where, (child, entry, key, 0)))
        if count > max_values:
            raise InputTooLarge(f"holds more than {max_values} values", where)


def _check_key(key: Any, where: str, entry: tuple) -> None:
    if type(key) is not str:
        raise InputError(f"a key must be text, not {type(key).__name__} {key!r}"[:200], _at(where, entry))
    found = _text_problem(key, MAX_TEXT, noun="a key")
    if found:
        raise found[0](found[1], _at(where, entry))


def _check_plain(item: Any, where: str, parent: tuple | None, key: Any) -> None:
    """One text or number; ``parent`` (the entry of its container, None for a whole value) and ``key`` name it."""
    kind = type(item)
    found = None
    if kind is str:
        found = _text_problem(item, MAX_TEXT)
    elif kind is int and not -MAX_INT <= item <= MAX_INT:
        found = InputError, _int_problem(item)
    elif kind is float and not math.isfinite(item):
        found = InputError, f"{item!r} is not a finite number (JSON has no NaN or infinity)"
    elif kind is _LongInt:
        found = InputError, f"a whole number of {item.digits} digits is outside +-(2^63 - 1)"
    if found:
        raise found[0](found[1], where if parent is None else _at(where, (item, parent, key, 0)))


def check_text(value: str, where: str, limit: int = MAX_TEXT) -> None:
    """One text value: its length and that it is valid Unicode."""
    found = _text_problem(value, limit)
    if found:
        raise found[0](found[1], where)


def _text_problem(text: str, limit: int, noun: str = "text") -> tuple[type[InputError], str] | None:
    """What is wrong with a text value, as the kind of refusal and its message; None if nothing is."""
    if len(text) > limit:
        return InputTooLarge, _too_long(text, limit, noun)
    at = _surrogate_at(text)
    if at >= 0:
        what = "a key that is not valid text" if noun == "a key" else "not valid text"
        return InputError, f"{what}: a lone surrogate ({text[at]!r} at character {at + 1}), which is not Unicode (invalid UTF-8?)"
    return None


def _too_long(text: str, limit: int, noun: str) -> str:
    return f"{noun} of {len(text)} characters; at most {limit} (it starts {text[:10]!r}...)"


def _int_problem(value: int) -> str:
    digits = len(str(abs(value))) if value.bit_length() < 14_000 else int(value.bit_length() * math.log10(2)) + 1
    if digits <= PREVIEW:
        return f"the whole number {value} is outside +-(2^63 - 1)"
    return f"a whole number of {digits} digits is outside +-(2^63 - 1)"


def _at(where: str, entry: tuple) -> str:
    """``where`` and the path of a ``check_value`` entry: "job 3: params.n"."""
    keys = []
    while entry[1] is not None:
        keys.append(entry[2])
        entry = entry[1]
    path = ""
    for key in reversed(keys):
        if isinstance(key, int):
            path += f"[{key}]"
        elif _plain(key):
            path += f".{key}" if path else key
        else:
            path += f"[{preview(key, 20)}]"
    return ": ".join(part for part in (where, _short(path)) if part)


def _short(path: str) -> str:
    return path if len(path) <= 120 else path[:117] + "..."


def _plain(key: str) -> bool:
    return key.replace("_", "a").replace("-", "a").isalnum() and len(key) <= 40


# -- YAML --------------------------------------------------------------------------------------------

# libyaml's parser, with PyYAML's composer and safe constructor: the same plain types, many times
# faster than the pure-Python parser on big files. libyaml refuses to nest more than 1000 levels
# itself; the pure-Python fallback's composer recurses and is caught on RecursionError.
# PyYAML itself is imported by the functions that read YAML: most commands never do.
_STANDARD = "tag:yaml.org,2002:"
_SCALARS = {_STANDARD + t for t in ("str", "int", "float", "bool", "null")}
_KEY_KINDS = {_STANDARD + "int": "a whole number", _STANDARD + "float": "a number", _STANDARD + "bool": "true or false",
              _STANDARD + "null": "null"}  # fmt: skip
_NOT_JSON = {"timestamp": "a date or time ({value}) is not a JSON value; quote it to keep it as text",
             "binary": "!!binary data is not a JSON value", "set": "!!set is not a JSON value; use a list",
             "omap": "!!omap is not a JSON value; use a mapping", "pairs": "!!pairs is not a JSON value; use a mapping"}  # fmt: skip


def yaml_problem(exc: yaml.YAMLError) -> tuple[int | None, int | None, str]:
    """(line, column, problem) of a YAML error, 1-based; the problem on one line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    if getattr(exc, "context", None) and getattr(exc, "problem", None):
        problem = f"{exc.context}, {exc.problem}"
    problem = " ".join(str(problem).split())
    if mark is None and getattr(exc, "position", None) is not None and getattr(exc, "name", None) is not None:
        return None, None, f"{problem} (character {exc.position + 1})"  # a ReaderError: the position in the text
    return (mark.line + 1, mark.column + 1, problem) if mark else (None, None, problem)


def load_yaml(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """A YAML document as plain data within the limits, and its root node (for the lines of its parts).

    ``yaml.YAMLError`` for text that is not YAML (``yaml_problem`` words it); ``InputError`` for a
    document that is YAML but not within the limits, naming the line and the key path.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise InputError(f"nested deeper than {MAX_DEPTH} levels", where) from None
        except yaml.YAMLError as exc:
            line, _column, problem = yaml_problem(exc)
            if "maximum nesting depth" in problem:  # libyaml's own bound, stated as ours
                raise InputError(f"{f'line {line}: ' if line else ''}nested deeper than {MAX_DEPTH} levels", where) from None
            raise
        if node is None:
            return None, None
        _check_nodes(node, where)
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node, where: str) -> None:
    """Tags, keys, long numbers, alias expansion and nesting of a composed document, each node once.

    Aliases make the node graph share nodes; the expanded size and height of each node are kept,
    so a document of n nodes costs O(n) however far its aliases would expand.
    """
    import yaml

    done: dict[int, tuple[int, int]] = {}  # node -> (values it expands to, levels it nests)
    active: set[int] = set()
    stack: list[tuple[yaml.Node, str, bool]] = [(root, "", False)]
    while stack:
        node, path, leaving = stack.pop()
        nid = id(node)
        if leaving:
            active.discard(nid)
            children = _children(node)
            keys = len(node.value) if isinstance(node, yaml.MappingNode) else 0
            values = 1 + keys + sum(done[id(c)][0] for c in children)
            height = 1 + max((done[id(c)][1] for c in children), default=0)
            if height > MAX_DEPTH:
                raise InputError(f"nested deeper than {MAX_DEPTH} levels", _yaml_at(where, node, path))
            if values > MAX_VALUES:
                raise InputTooLarge(f"aliases expand it to more than {MAX_VALUES} values", _yaml_at(where, node, path))
            done[nid] = (values, height)
            continue
        if nid in done:
            continue
        if nid in active:
            raise InputError("an alias that contains itself", _yaml_at(where, node, path))
        _check_tag(node, where, path)
        if isinstance(node, yaml.ScalarNode):
            done[nid] = (1, 0)
            continue
        active.add(nid)
        stack.append((node, path, True))
        if isinstance(node, yaml.SequenceNode):
            children = [(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
        else:
            children = [(child, _key_path(key, path, where)) for key, child in node.value]
        # In document order (the stack pops the last first): a shared node is named where it stands first.
        stack.extend((child, child_path, False) for child, child_path in reversed(children))


def _key_path(key: yaml.Node, path: str, where: str) -> str:
    """The path of a mapping's value under ``key``; refuses keys that are not text."""
    import yaml

    if not isinstance(key, yaml.ScalarNode):
        raise InputError("a key must be text, not a list or mapping", _yaml_at(where, key, path))
    if key.tag == _STANDARD + "merge":  # `<<: *defaults`: its values are the mapping's own
        return path
    if key.tag != _STANDARD + "str":
        if key.tag in _KEY_KINDS:
            problem = f"the key {key.value or '~'} is read as {_KEY_KINDS[key.tag]}; keys must be text: quote it"
        else:
            problem = f"the key {key.value!r} is not text"
        raise InputError(problem, _yaml_at(where, key, path))
    name = key.value if _plain(key.value) else preview(key.value, 20)
    return f"{path}.{name}" if path else name


def _children(node: yaml.Node) -> list[yaml.Node]:
    """The nodes inside a collection (a mapping's values; its keys are plain text, checked on the way)."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return node.value
    return [value for _key, value in node.value]


def _check_tag(node: yaml.Node, where: str, path: str) -> None:
    import yaml

    tag = node.tag
    if isinstance(node, yaml.ScalarNode):
        if tag == _STANDARD + "int" and len(node.value) > MAX_INT_CHARS:
            digits = len(node.value.lstrip("+-"))
            raise InputError(f"a whole number of {digits} digits is outside +-(2^63 - 1)", _yaml_at(where, node, path))
        if tag == _STANDARD + "float" and node.value.lower().lstrip("+-") in (".inf", ".nan"):
            raise InputError(f"{node.value} is not a finite number (JSON has no NaN or infinity)", _yaml_at(where, node, path))
        if tag in _SCALARS:
            return
    elif tag in (_STANDARD + "seq", _STANDARD + "map"):
        return
    short = tag[len(_STANDARD) :] if tag.startswith(_STANDARD) else None
    if short in _NOT_JSON:
        problem = _NOT_JSON[short].format(value=node.value if isinstance(node, yaml.ScalarNode) else "")
    else:
        shown = f"!!{short}" if short is not None else tag
        problem = f"the YAML tag {shown} is not a JSON value"
    raise InputError(problem, _yaml_at(where, node, path))


def _yaml_at(where: str, node: yaml.Node, path: str) -> str:
    return ": ".join(part for part in (where, f"line {node.start_mark.line + 1}", _short(path)) if part)


# -- RPC messages ---------------------------------------------------------------------------------------


def check_message(message: Any, where: str = "") -> None:
    """Refuse a protobuf message holding what no request may: over-long or NUL-holding text, numbers
    that are not finite, enum values that name nothing, sequence numbers beyond ``MAX_SEQ``.
    Errors name the field ("tasks[3].params_json"), after ``where``.

    Every request passes here, and every site's batch of events: the common case, a clean message,
    is one pass over a plan made once per message type (``_clean``: the fields a rule applies to,
    read by name). Only a message that pass doubts is walked again field by field, to name what it
    refuses (``_refuse``); both passes apply the same rules (``_rule``).
    """
    if not _clean(message, _plan_of(message.DESCRIPTOR)):
        _refuse(message, where)


def _refuse(message: Any, where: str) -> None:
    """Raise for the first field of ``message`` that breaks a rule, naming it; return if none does."""
    # (message, its field's path, its index in that field or None): a path is joined only when needed
    stack: list[tuple[Any, str, int | None]] = [(message, "", None)]
    while stack:
        current, path, index = stack.pop()
        for field, value in current.ListFields():
            kind, repeated, limit = _RULES.get(field) or _rule(field)
            if kind == "skip":
                continue
            if kind == "text":
                if not repeated:
                    if len(value) > limit or "\0" in value:
                        _check_field_text(value, _at_field(where, _field_path(path, index, field), None), limit)
                    continue
                for i, item in enumerate(value):
                    if len(item) > limit or "\0" in item:
                        _check_field_text(item, _at_field(where, _field_path(path, index, field), i), limit)
            elif kind == "message":
                name = _field_path(path, index, field)
                if repeated:
                    stack.extend(zip(value, itertools.repeat(name), itertools.count()))
                else:
                    stack.append((value, name, None))
            elif kind == "text-map":
                for key, item in value.items():
                    if len(key) > MAX_FIELD_TEXT or "\0" in key or len(item) > MAX_FIELD_TEXT or "\0" in item:
                        name = _field_path(path, index, field)
                        _check_field_text(key, _join(where, name), MAX_FIELD_TEXT, noun="a key")
                        _check_field_text(item, _join(where, f"{name}[{key!r}]"), MAX_FIELD_TEXT)
            elif kind == "map":  # other maps: text keys checked, message values walked
                name = _field_path(path, index, field)
                messages = field.message_type.fields_by_name["value"].type == field.TYPE_MESSAGE
                for key, item in value.items():
                    if isinstance(key, str):
                        _check_field_text(key, _join(where, name), MAX_FIELD_TEXT, noun="a key")
                    if messages:
                        stack.append((item, f"{name}[{key!r}]", None))
            else:
                for i, item in enumerate(value) if repeated else ((None, value),):
                    if kind == "double":
                        if not math.isfinite(item):
                            raise InputError(f"{item!r} is not a finite number", _at_field(where, _field_path(path, index, field), i))
                    elif kind == "enum":
                        if item not in field.enum_type.values_by_number:
                            raise InputError(f"{item} is not a {field.enum_type.full_name}", _at_field(where, _field_path(path, index, field), i))
                    elif item > MAX_SEQ:  # uint64: our sequence numbers
                        raise InputError(f"{item} is above the largest sequence number ({MAX_SEQ})", _at_field(where, _field_path(path, index, field), i))


def _field_path(path: str, index: int | None, field: Any) -> str:
    """The path of ``field`` of the message at ``path`` (``index``: its place in a repeated field)."""
    prefix = path if index is None else f"{path}[{index}]"
    return f"{prefix}.{field.name}" if prefix else field.name


def _at_field(where: str, name: str, index: int | None) -> str:
    return _join(where, name if index is None else f"{name}[{index}]")


def _join(where: str, path: str) -> str:
    return f"{where}: {path}" if where else path


_RULES: dict[Any, tuple[str, bool, int]] = {}  # field descriptor -> (kind, repeated, text limit)

# A message type's plan: a step for each of its fields that a rule applies to, (field name, kind,
# repeated, text limit, what the kind needs: a message field's plan, an enum's numbers, a map's
# values' plan if they are messages). Built once per type under the lock and published whole, so
# that no reader follows a plan still being made (a type may hold itself).
_Plan = list[tuple[str, str, bool, int, Any]]
_PLANS: dict[Any, _Plan] = {}
_PLANS_LOCK = threading.Lock()


def _plan_of(descriptor: Any) -> _Plan:
    plan = _PLANS.get(descriptor)
    if plan is None:
        with _PLANS_LOCK:
            building: dict[Any, _Plan] = {}
            plan = _build_plan(descriptor, building, set())
            _PLANS.update(building)
    return plan


def _build_plan(descriptor: Any, building: dict[Any, _Plan], unfinished: set[Any]) -> _Plan:
    if descriptor in _PLANS:
        return _PLANS[descriptor]
    if descriptor in building:  # made already, or (in ``unfinished``) a type that holds itself
        return building[descriptor]
    steps: _Plan = []
    building[descriptor] = steps
    unfinished.add(descriptor)
    for field in descriptor.fields:
        kind, repeated, limit = _RULES.get(field) or _rule(field)
        if kind == "skip":
            continue
        need: Any = None
        if kind == "message":
            need = _build_plan(field.message_type, building, unfinished)
            if not need and field.message_type not in unfinished:
                continue  # nothing inside is checked (a Timestamp): not even looked at
        elif kind == "enum":
            need = frozenset(field.enum_type.values_by_number)
        elif kind == "map":
            value = field.message_type.fields_by_name["value"]
            need = _build_plan(value.message_type, building, unfinished) if value.type == value.TYPE_MESSAGE else None
        steps.append((field.name, kind, repeated, limit, need))
    unfinished.discard(descriptor)
    return steps


def _clean(message: Any, plan: _Plan) -> bool:
    """Whether ``message`` surely breaks no rule; False when it may (``_refuse`` then decides)."""
    for name, kind, repeated, limit, need in plan:
        if kind == "text":
            for text in getattr(message, name) if repeated else (getattr(message, name),):
                if len(text) > limit or "\0" in text:
                    return False
        elif kind == "message":
            if repeated:
                for item in getattr(message, name):
                    if not _clean(item, need):
                        return False
            elif message.HasField(name) and not _clean(getattr(message, name), need):
                return False
        elif kind == "enum":
            for number in getattr(message, name) if repeated else (getattr(message, name),):
                if number not in need:
                    return False
        elif kind == "uint64":
            for number in getattr(message, name) if repeated else (getattr(message, name),):
                if number > MAX_SEQ:
                    return False
        elif kind == "double":
            for number in getattr(message, name) if repeated else (getattr(message, name),):
                if not math.isfinite(number):
                    return False
        elif kind == "text-map":
            for key, text in getattr(message, name).items():
                if len(key) > MAX_FIELD_TEXT or "\0" in key or len(text) > MAX_FIELD_TEXT or "\0" in text:
                    return False
        else:  # "map": text keys, message values
            for key, item in getattr(message, name).items():
                if isinstance(key, str) and (len(key) > MAX_FIELD_TEXT or "\0" in key):
                    return False
                if need is not None and not _clean(item, need):
                    return False
    return True


def _rule(field: Any) -> tuple[str, bool, int]:
    t = field.type
    if t == field.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        kind = "text-map" if key.type == value.type == field.TYPE_STRING else "map"
    elif t == field.TYPE_MESSAGE:
        kind = "message"
    elif t == field.TYPE_STRING:
        kind = "text"
    elif t in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
        kind = "double"
    elif t == field.TYPE_ENUM:
        kind = "enum"
    elif t == field.TYPE_UINT64:
        kind = "uint64"
    else:
        kind = "skip"
    is_repeated = getattr(field, "is_repeated", None)
    repeated = bool(is_repeated) if is_repeated is not None else field.label == field.LABEL_REPEATED
    rule = _RULES[field] = (kind, repeated and not kind.endswith("map"), FIELD_TEXT_LIMITS.get(field.name, MAX_FIELD_TEXT))
    return rule


def _check_field_text(text: str, at: str, limit: int, noun: str = "text") -> None:
    if len(text) > limit:
        raise InputTooLarge(_too_long(text, limit, noun), at)
    if "\0" in text:
        raise InputError(f"{'a key ' if noun == 'a key' else ''}contains a NUL character (\\0)", at)
