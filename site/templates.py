"""An app's command template: ``prog --x {x} {infile}``.

The template is split into arguments first (shell-like quoting), then each placeholder is filled
inside its own argument. The result is an argument vector that is executed without a shell, so a
parameter value like ``; rm -rf ~`` reaches the program as one literal argument.

One program does interpret an argument as commands: a shell run with ``-c`` (``sh -c 'SCRIPT'``,
also through ``/usr/bin/env``, ``nice`` or any other wrapper, and by absolute path). Where a
template does that, the placeholders inside SCRIPT are filled with the values shell-quoted
(``shlex.quote``), so ``x; touch F`` is the one word ``'x; touch F'`` there, never a second
command. Quoting is only sound where the placeholder stands outside the script's own quotes and
escapes: a template with ``'{k}'``, ``"{k}"`` or ``\\{k}`` in such a script is refused when the app is
added, asking for the bare ``{k}``.

An argument that is exactly ``{*name}`` is a list of arguments: its value is split like a command
line (``shlex.split``, quotes kept together, no shell) and each word becomes one argument, so
``echo hello, {*args}`` with ``args="world 1"`` runs ``echo`` with ``hello,``, ``world`` and ``1``.
That is how the original Balsam's ``--args`` reach a program (``balsam.site.compat``).
"""

from __future__ import annotations

import os
import re
import shlex
import string
from dataclasses import dataclass

from balsam.errors import BalsamError
from balsam.inputs import preview

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A whole argument `{*name}`: the value's words, each one argument.
_SPLAT = re.compile(r"\{\*([A-Za-z_][A-Za-z0-9_]*)\}\Z")


# Shells that take a script with -c. Their basename is matched, so /bin/sh and /usr/bin/env bash count.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash"})
# Shell options that take the next argument as their value (so it is not the script).
_OPTION_ARGUMENTS = frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file"})


@dataclass(frozen=True)
class CommandTemplate:
    text: str
    args: tuple[str, ...]
    placeholders: tuple[str, ...]  # in order of first appearance
    script: int | None = None  # the index of the argument that a shell runs as commands (`sh -c SCRIPT`)
    splats: tuple[int, ...] = ()  # indices of `{*name}` arguments, each filled with its value's words

    @classmethod
    def parse(cls, text: str) -> CommandTemplate:
        if not text or not text.strip():
            raise BalsamError("the command template is empty")
        try:
            args = tuple(shlex.split(text))
        except ValueError as exc:
            raise BalsamError(f"cannot split command template {text!r}: {exc}") from None
        names: list[str] = []
        splats: list[int] = []
        for i, arg in enumerate(args):
            splat = _SPLAT.match(arg)
            if splat:
                splats.append(i)
            for name in [splat.group(1)] if splat else _placeholders_of(arg, text):
                if name not in names:
                    names.append(name)
        found = shell_script(args)
        if found is not None:
            shell, script = found
            if script in splats:
                raise BalsamError(f"the script of {os.path.basename(args[shell])} -c cannot be a list {args[script]} ({text!r})")
            _check_script(args[script], os.path.basename(args[shell]), text)
        return cls(text=text, args=args, placeholders=tuple(names), script=found[1] if found else None, splats=tuple(splats))

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
        for i in self.splats:
            name = self.args[i][2:-1]
            _words(params[name], name)  # a value that cannot be split fails when the job is added

    def render(self, params: dict[str, object]) -> list[str]:
        """The argument vector with every placeholder filled by the string form of its value
        (shell-quoted inside a shell's script; split into words for a ``{*name}`` argument)."""
        values = {k: _as_text(v) for k, v in params.items()}
        argv = self._render_args(values)
        if not self.splats:
            return argv
        out: list[str] = []
        for i, arg in enumerate(argv):
            out.extend(_words(values[self.args[i][2:-1]], self.args[i][2:-1]) if i in self.splats else [arg])
        return out

    def _render_args(self, values: dict[str, str]) -> list[str]:
        argv = [arg if i in self.splats else arg.format_map(values) for i, arg in enumerate(self.args)]
        if self.script is not None:
            argv[self.script] = self.args[self.script].format_map({k: shlex.quote(v) for k, v in values.items()})
        return argv



def literal_template(argv: list[str]) -> str:
    """A command template that renders back to exactly ``argv``: braces are not placeholders here."""
    return shlex.join(argv).replace("{", "{{").replace("}", "}}")


def shell_script(args: tuple[str, ...] | list[str]) -> tuple[int, int] | None:
    """(the shell, its script): indices in ``args``, if the template runs a shell with -c.

    The first argument named like a shell decides (whatever wraps it: env, nice, timeout...);
    its options are skipped, and with -c among them the first other argument is the script.
    """
    for i, arg in enumerate(args):
        if os.path.basename(arg) not in SHELLS:
            continue
        commands, j = False, i + 1
        while j < len(args) and args[j].startswith(("-", "+")) and args[j] not in ("-", "+"):
            option = args[j]
            if option == "--":
                j += 1
                break
            if option.startswith("-") and not option.startswith("--") and "c" in option[1:]:
                commands = True
            j += 2 if option in _OPTION_ARGUMENTS else 1
        return (i, j) if commands and j < len(args) else None
    return None


def _check_script(script: str, shell: str, template: str) -> None:
    """Refuse placeholders that quoting cannot keep a single word: inside the script's own quotes
    (the quote we add would close theirs) or right after a backslash (which would escape our quote)."""
    quote = ""  # the quoting we are in: "", "'", '"' or "$'" (bash's ANSI-C quotes, where \' escapes)
    i = 0
    while i < len(script):
        c = script[i]
        if script.startswith(("{{", "}}"), i):  # a literal brace of the template
            i += 2
            continue
        if c == "{":
            name = script[i + 1 : script.index("}", i)]
            if quote:
                raise BalsamError(
                    f"placeholder {{{name}}} is inside quotes in the script of {shell} -c ({template!r}): write it bare, "
                    f"as {{{name}}}: Balsam quotes its value for the shell"
                )
            i += len(name) + 2
            continue
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            if script.startswith("{", i + 1) and not script.startswith("{{", i + 1):
                name = script[i + 2 : script.index("}", i)]
                raise BalsamError(f"placeholder {{{name}}} follows a backslash in the script of {shell} -c ({template!r}): write it bare")
            i += 2
            continue
        elif quote == "$'":
            quote = "" if c == "'" else quote
        elif quote == '"':
            quote = "" if c == '"' else quote
        elif c == "$" and script.startswith("'", i + 1):
            quote, i = "$'", i + 2
            continue
        elif c in "'\"":
            quote = c
        i += 1


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


def _words(value: object, name: str) -> list[str]:
    try:
        return shlex.split(_as_text(value))
    except ValueError as exc:
        raise BalsamError(f"parameter {name!r} is a list of arguments, and {preview(_as_text(value))} cannot be split into them: {exc}") from None


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
