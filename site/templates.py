"""An app's command template: ``prog --x {x} {infile}``.

The template is split into arguments first (shell-like quoting), then each placeholder is filled
inside its own argument. The result is an argument vector that is executed without a shell, so a
parameter value like ``; rm -rf ~`` reaches the program as one literal argument.
"""

from __future__ import annotations

import re
import shlex
import string
from dataclasses import dataclass

from balsam.errors import BalsamError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class CommandTemplate:
    text: str
    args: tuple[str, ...]
    placeholders: tuple[str, ...]  # in order of first appearance

    @classmethod
    def parse(cls, text: str) -> CommandTemplate:
        if not text or not text.strip():
            raise BalsamError("the command template is empty")
        try:
            args = tuple(shlex.split(text))
        except ValueError as exc:
            raise BalsamError(f"cannot split command template {text!r}: {exc}") from None
        names: list[str] = []
        for arg in args:
            for name in _placeholders_of(arg, text):
                if name not in names:
                    names.append(name)
        return cls(text=text, args=args, placeholders=tuple(names))

    def check_parameters(self, params: dict[str, object], app_name: str) -> None:
        """Every placeholder has a value and every parameter names a placeholder."""
        unknown = sorted(set(params) - set(self.placeholders))
        if unknown:
            named = ", ".join(self.placeholders) or "no placeholders"
            raise BalsamError(
                f"parameter {unknown[0]!r} is not in the command template of app {app_name!r} (it names: {named})"
            )
        missing = [name for name in self.placeholders if name not in params]
        if missing:
            raise BalsamError(f"placeholder {{{missing[0]}}} of app {app_name!r} has no value")

    def render(self, params: dict[str, object]) -> list[str]:
        """The argument vector with every placeholder filled by the string form of its value."""
        values = {k: _as_text(v) for k, v in params.items()}
        return [arg.format_map(values) for arg in self.args]


def _placeholders_of(arg: str, template: str) -> list[str]:
    try:
        pieces = list(string.Formatter().parse(arg))
    except ValueError as exc:
        raise BalsamError(f"bad placeholder in command template {template!r}: {exc}") from None
    names = []
    for _literal, field, spec, conversion in pieces:
        if field is None:
            continue
        # Only plain names: `{x.attr}` or `{x[0]}` would let a template reach into Python objects.
        if not _NAME.match(field) or spec or conversion:
            raise BalsamError(
                f"bad placeholder {{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} "
                f"in command template {template!r}: use plain names like {{infile}}"
            )
        names.append(field)
    return names


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
