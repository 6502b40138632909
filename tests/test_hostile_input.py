"""Hostile input, case by case: each refusal has its exact shape, nothing is stored, the server keeps
serving and no traceback is logged.

Three tables, each sharing one real site or one real coordinator across its cases (module
fixtures), so a case costs one command or one call:

- the ``balsam`` CLI, in this process: options and ``--from`` files. A refusal is exactly one
  ``error:`` line on stderr, exit status 1, no job and no app added;
- ``argo submit``, in this process: spec files, refused before anything is sent, the same way;
- raw gRPC requests to a real coordinator process, as any client could send them: the status
  (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for size) with a short message naming the field,
  nothing stored, the server healthy afterwards and its log free of tracebacks.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from argo_helpers import Federation
from balsam.protos import argo_pb2 as pb
from balsam.protos import auth_pb2 as apb
from conftest import active_site, fresh_database

pytestmark = pytest.mark.timeout(30)

HUGE = 5000 * "9"  # Python refuses to parse more than 4300 digits: a ValueError, unless checked first
DEEP = 100_000
LONG = 70_000 * "x"  # above the 65,536 characters any one text value may have
SURROGATE = "n=\udcff"  # what Python makes of the byte 0xff (invalid UTF-8) in a command-line argument

# 1 KB of YAML whose aliases expand to 9^9 (387 million) values.
LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi")
)
# Each alias nests one level deeper than the one it names: 100 levels in 2 KB.
ALIAS_CHAIN = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 100))


def fifo(path: Path) -> None:
    os.mkfifo(path)


def folder(path: Path) -> None:
    path.mkdir()


def big(size: int, unit: bytes = b"- {app: sim, params: {n: 1, infile: x}}\n") -> bytes:
    return unit * (size // len(unit) + 1)


@dataclass(frozen=True)
class FileCase:
    name: str  # the file's name (its suffix picks the reader)
    content: Any  # str, bytes, or a function making the file at a path
    message: str  # what the one error line says


def _make(root: Path, case: FileCase, index: int) -> Path:
    place = root / f"case{index}"
    place.mkdir()
    path = place / case.name
    if callable(case.content):
        case.content(path)
    elif isinstance(case.content, bytes):
        path.write_bytes(case.content)
    else:
        path.write_text(case.content)
    return path


def _one_error_line(result, message: str) -> None:
    assert result.code == 1, result
    assert "Traceback" not in result.err
    assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert message in result.err, result.err
    assert len(result.err) < 1500, "a refusal echoes at most a short prefix of the value"
    assert result.out == ""


# ------------------------------------------------------------------------------------------------
# The `balsam` CLI

JOB = "- app: sim\n  params: {n: 1, infile: x}\n"  # a good job, to put hostile values beside


def yaml_job(extra: str) -> str:
    return JOB + "".join(f"  {line}\n" for line in extra.splitlines())


def json_job(**fields: Any) -> str:
    return json.dumps([{"app": "sim", "params": {"n": 1, "infile": "x"}, **fields}])


def jsonl_job(text: str) -> str:
    return '{"app": "sim", "params": {"n": 1, "infile": "x"}}\n' + text + "\n"


def nested_json(depth: int, key: str = "a") -> str:
    return f'{{"{key}": ' * depth + "1" + "}" * depth


FILE_CASES = {
    # What a file is, before any of it is read.
    "fifo": FileCase("jobs.yaml", fifo, "is a FIFO (named pipe), not a regular file"),
    "fifo-json": FileCase("jobs.json", fifo, "is a FIFO (named pipe), not a regular file"),
    "folder": FileCase("jobs.yaml", folder, "is a folder, not a file"),
    "missing": FileCase("jobs.yaml", lambda path: None, "no such file"),
    "dev-zero-link": FileCase("jobs.yaml", lambda path: path.symlink_to("/dev/zero"), "is a character device, not a regular file"),
    "dev-null-link": FileCase("jobs.jsonl", lambda path: path.symlink_to("/dev/null"), "is a character device, not a regular file"),
    "dangling-link": FileCase("jobs.yaml", lambda path: path.symlink_to(path.parent / "nowhere"), "no such file"),
    # Size.
    "50MB-yaml": FileCase("jobs.yaml", lambda path: path.write_bytes(big(50 << 20)), "is 50.0 MiB of YAML, more than 8 MiB"),
    "9MB-yaml": FileCase("jobs.yml", lambda path: path.write_bytes(big(9 << 20)), "is 9.0 MiB of YAML, more than 8 MiB"),
    "70MB-json": FileCase("jobs.json", lambda path: path.write_bytes(b"[" + b" " * (70 << 20) + b"]"), "is 70.0 MiB, more than the 64 MiB one file may hold"),
    "70MB-jsonl": FileCase("jobs.jsonl", lambda path: path.write_bytes(b"\n" * (70 << 20)), "is 70.0 MiB, more than the 64 MiB one file may hold"),
    "50MB-binary": FileCase("jobs.dat", lambda path: path.write_bytes(b"\xff\xfe\x00" * (17 << 20)), "is UTF-16 text: save it as UTF-8"),
    # Encodings.
    "binary-yaml": FileCase("jobs.yaml", bytes(range(256)), "holds a NUL byte (byte 0): a binary file, not text"),
    "binary-json": FileCase("jobs.json", b"[\x89PNG\r\n\x1a\n]", "not UTF-8 text (byte 1)"),
    "binary-jsonl": FileCase("jobs.jsonl", b'{"app": "sim"}\n\x80\x81\x82\n', "not UTF-8 text (byte 15, line 2)"),
    "nul-in-text": FileCase("jobs.yaml", JOB.encode() + b"\x00\n", f"holds a NUL byte (byte {len(JOB)}): a binary file, not text"),
    "utf16-le-bom": FileCase("jobs.yaml", "\ufeff".encode("utf-16-le") + JOB.encode("utf-16-le"), "is UTF-16 text: save it as UTF-8"),
    "utf16-be-bom": FileCase("jobs.json", json_job().encode("utf-16"), "is UTF-16 text: save it as UTF-8"),
    "utf32-bom": FileCase("jobs.jsonl", jsonl_job("").encode("utf-32"), "is UTF-32 text: save it as UTF-8"),
    "utf16-no-bom": FileCase("jobs.yaml", JOB.encode("utf-16-le"), "holds a NUL byte (byte 1): a binary file, not text"),
    "latin1": FileCase("jobs.yaml", yaml_job("name: caf\xe9").encode("latin-1"), f"not UTF-8 text (byte {len(JOB) + 11}, line 3)"),
    "lone-surrogate-bytes": FileCase("jobs.yaml", JOB.encode() + b"  name: \xed\xa0\x80\n", f"not UTF-8 text (byte {len(JOB) + 8}, line 3)"),
    # Nesting.
    "deep-yaml-flow": FileCase("jobs.yaml", yaml_job("data: " + "[" * DEEP + "]" * DEEP), "nested deeper than 64 levels"),
    "deep-yaml-block": FileCase("jobs.yaml", yaml_job("data:\n" + "".join(" " * (2 * i + 2) + "a:\n" for i in range(2000))),
                                "nested deeper than 64 levels"),  # fmt: skip
    "deep-yaml-65": FileCase("jobs.yaml", yaml_job("data: " + "[" * 65 + "]" * 65), "line 3: [0].data: nested deeper than 64 levels"),
    "deep-json": FileCase("jobs.json", "[" * DEEP + "]" * DEEP, "nested deeper than 64 levels"),
    "deep-json-data": FileCase("jobs.json", '[{"app": "sim", "data": ' + nested_json(DEEP) + "}]", "nested deeper than 64 levels"),
    "deep-json-70": FileCase("jobs.json", '[{"app": "sim", "data": ' + nested_json(70) + "}]", "job 1): data.a.a.a.a"),
    "deep-jsonl": FileCase("jobs.jsonl", jsonl_job(nested_json(DEEP)), "line 2: nested deeper than 64 levels"),
    "deep-jsonl-params": FileCase("jobs.jsonl", jsonl_job('{"app": "sim", "params": {"n": ' + "[" * 80 + "]" * 80 + "}}"),
                                  "line 2): params.n[0][0][0]"),  # fmt: skip
    "deep-guess-json": FileCase("jobs.txt", "[" * DEEP + "]" * DEEP, "nested deeper than 64 levels"),
    "alias-chain": FileCase("jobs.yaml", ALIAS_CHAIN + "jobs:\n" + yaml_job("data: *a99"), "nested deeper than 64 levels"),
    "alias-self": FileCase("jobs.yaml", JOB + "  data: &me {again: *me}\n", "line 3: [0].data.again: an alias that contains itself"),
    # Alias expansion.
    "billion-laughs": FileCase("jobs.yaml", LAUGHS + "jobs:\n" + yaml_job("data: {boom: *i}"), "aliases expand it to more than 5000000 values"),
    "laughs-in-params": FileCase("jobs.yaml", LAUGHS + "jobs:\n- app: sim\n  params: {n: *i, infile: x}\n",
                                 "aliases expand it to more than 5000000 values"),  # fmt: skip
    "laughs-in-tags": FileCase("jobs.yml", LAUGHS + "jobs:\n- app: sim\n  tags: *i\n", "aliases expand it to more than 5000000 values"),
    "laughs-unused-key": FileCase("jobs.yaml", LAUGHS + "jobs:\n" + JOB, "aliases expand it to more than 5000000 values"),
    # Types JSON cannot hold, named by key and line.
    "yaml-date": FileCase("jobs.yaml", yaml_job("data: {when: 2024-01-01}"), "line 3: [0].data.when: a date or time (2024-01-01) is not a JSON value; quote it"),
    "yaml-datetime": FileCase("jobs.yaml", yaml_job("data:\n  at: 2024-01-01 10:00:00"), "line 4: [0].data.at: a date or time"),
    "yaml-date-param": FileCase("jobs.yaml", "- app: sim\n  params: {n: 2001-12-14, infile: x}\n", "line 2: [0].params.n: a date or time"),
    "yaml-date-tag": FileCase("jobs.yaml", yaml_job("tags: {day: 2024-01-01}"), "line 3: [0].tags.day: a date or time"),
    "yaml-date-name": FileCase("jobs.yaml", yaml_job("name: 2024-01-01"), "line 3: [0].name: a date or time"),
    "yaml-binary": FileCase("jobs.yaml", yaml_job("data: {blob: !!binary aGVsbG8=}"), "line 3: [0].data.blob: !!binary data is not a JSON value"),
    "yaml-set": FileCase("jobs.yaml", yaml_job("data: !!set {a, b}"), "line 3: [0].data: !!set is not a JSON value; use a list"),
    "yaml-omap": FileCase("jobs.yaml", yaml_job("data: !!omap [a: 1, b: 2]"), "line 3: [0].data: !!omap is not a JSON value"),
    "yaml-pairs": FileCase("jobs.yaml", yaml_job("data: !!pairs [a: 1]"), "line 3: [0].data: !!pairs is not a JSON value"),
    "yaml-python": FileCase("jobs.yaml", yaml_job("data: !!python/object:os.system {}"), "line 3: [0].data: the YAML tag !!python/object:os.system"),
    "yaml-custom-tag": FileCase("jobs.yaml", yaml_job("data: !shell rm -rf ~"), "line 3: [0].data: the YAML tag !shell is not a JSON value"),
    "yaml-inf": FileCase("jobs.yaml", yaml_job("data: {x: .inf}"), "line 3: [0].data.x: .inf is not a finite number"),
    "yaml-nan-param": FileCase("jobs.yaml", "- app: sim\n  params: {n: .nan, infile: x}\n", "line 2: [0].params.n: .nan is not a finite number"),
    "yaml-neg-inf-wall": FileCase("jobs.yaml", yaml_job("wall_time_min: -.inf"), "line 3: [0].wall_time_min: -.inf is not a finite number"),
    "yaml-int-key": FileCase("jobs.yaml", yaml_job("data: {1: one}"), "line 3: [0].data: the key 1 is read as a whole number; keys must be text: quote it"),
    "yaml-bool-key": FileCase("jobs.yaml", yaml_job("data:\n  on: push"), "line 4: [0].data: the key on is read as true or false; keys must be text"),
    "yaml-null-key": FileCase("jobs.yaml", yaml_job("data: {~: x}"), "line 3: [0].data: the key ~ is read as null; keys must be text"),
    "yaml-complex-key": FileCase("jobs.yaml", yaml_job("data: {[a, b]: c}"), "line 3: [0].data: a key must be text, not a list or mapping"),
    "yaml-float-key": FileCase("jobs.yaml", yaml_job("tags: {1.5: x}"), "line 3: [0].tags: the key 1.5 is read as a number; keys must be text"),
    # Numbers.
    "yaml-huge-int": FileCase("jobs.yaml", yaml_job(f"data: {{n: {HUGE}}}"), "line 3: [0].data.n: a whole number of 5000 digits"),
    "yaml-huge-nodes": FileCase("jobs.yaml", yaml_job(f"nodes: {HUGE}"), "line 3: [0].nodes: a whole number of 5000 digits"),
    "yaml-huge-param": FileCase("jobs.yaml", f"- app: sim\n  params: {{n: {HUGE}, infile: x}}\n", "line 2: [0].params.n: a whole number of 5000 digits"),
    "yaml-2**64": FileCase("jobs.yaml", yaml_job(f"data: {{n: {2**64}}}"), "line 1): data.n: the whole number 18446744073709551616 is outside"),
    "yaml-neg-huge": FileCase("jobs.yaml", yaml_job(f"data: {{n: -{HUGE}}}"), "a whole number of 5000 digits"),
    "yaml-hex-huge": FileCase("jobs.yaml", yaml_job("data: {n: 0x" + "f" * 60 + "}"), "a whole number of 62 digits"),
    "json-huge-int": FileCase("jobs.json", json_job().replace('"n": 1', f'"n": {HUGE}'), "job 1): params.n: a whole number of 5000 digits"),
    "json-huge-data": FileCase("jobs.json", '[{"app": "sim", "data": {"x": [' + HUGE + "]}}]", "job 1): data.x[0]: a whole number of 5000 digits"),
    "json-2**63": FileCase("jobs.json", '[{"app": "sim", "data": {"x": 9223372036854775808}}]', "the whole number 9223372036854775808 is outside"),
    "jsonl-huge-int": FileCase("jobs.jsonl", jsonl_job(f'{{"app": "sim", "nodes": {HUGE}}}'), "line 2): nodes: a whole number of 5000 digits"),
    "json-nan": FileCase("jobs.json", '[{"app": "sim", "data": {"x": NaN}}]', "job 1): data.x: nan is not a finite number"),
    "json-infinity": FileCase("jobs.json", '[{"app": "sim", "wall_time_min": Infinity}]', "job 1): wall_time_min: inf is not a finite number"),
    "jsonl-neg-infinity": FileCase("jobs.jsonl", jsonl_job('{"app": "sim", "data": {"x": -Infinity}}'), "line 2): data.x: -inf is not a finite number"),
    "json-1e999": FileCase("jobs.json", '[{"app": "sim", "data": {"x": 1e999}}]', "job 1): data.x: inf is not a finite number"),
    # Text.
    "json-lone-surrogate": FileCase("jobs.json", '[{"app": "sim", "name": "\\ud800"}]', "job 1): name: not valid text: a lone surrogate"),
    "jsonl-surrogate-param": FileCase("jobs.jsonl", jsonl_job('{"app": "sim", "params": {"n": "a\\udfffb", "infile": "x"}}'),
                                      "line 2): params.n: not valid text: a lone surrogate ('\\udfff' at character 2)"),  # fmt: skip
    "json-surrogate-key": FileCase("jobs.json", '[{"app": "sim", "data": {"\\udc80": 1}}]', "job 1): data: a key that is not valid text: a lone surrogate"),
    "yaml-surrogate": FileCase("jobs.yaml", yaml_job('name: "\\ud800"'), "line 3: not valid YAML: while parsing a quoted scalar, found invalid Unicode"),
    "json-long-param": FileCase("jobs.json", json_job().replace('"infile": "x"', f'"infile": "{LONG}"'),
                                "job 1): params.infile: text of 70000 characters; at most 65536 (it starts 'xxxxxxxxxx"),  # fmt: skip
    "json-long-data": FileCase("jobs.json", json_job(data={"note": LONG}), "job 1): data.note: text of 70000 characters"),
    "json-long-key": FileCase("jobs.json", json_job(data={LONG: 1}), "job 1): data: a key of 70000 characters; at most 65536"),
    "yaml-long-tag": FileCase("jobs.yaml", yaml_job(f"tags: {{k: {LONG}}}"), "line 1): tags.k: text of 70000 characters"),
    "jsonl-long-input": FileCase("jobs.jsonl", jsonl_job(json.dumps({"app": "sim", "inputs": {"a": "file:///" + LONG}})),
                                 "line 2): inputs.a: text of 70008 characters"),  # fmt: skip
    "json-nul-name": FileCase("jobs.json", '[{"app": "sim", "name": "a\\u0000b", "params": {"n": 1, "infile": "x"}}]', "contains a NUL character"),
    # Shapes.
    "yaml-two-documents": FileCase("jobs.yaml", JOB + "---\n" + JOB, "not valid YAML"),
    "json-string": FileCase("jobs.json", '"jobs"', "expected a list of jobs"),
    "jsonl-list": FileCase("jobs.jsonl", "[1, 2]\n", "a job must be a mapping of fields"),
    "yaml-control-char": FileCase("jobs.yaml", yaml_job("name: a\x1bb"), "not valid YAML"),
}


@pytest.fixture(scope="module")
def hostile_site(pg_server, tmp_path_factory):
    """One site for every CLI case: the app 'sim' and one job."""
    with fresh_database(pg_server) as url, active_site(tmp_path_factory.mktemp("hostile") / "site", url) as site:
        site.add_app("sim", "simulate --size {n} {infile}")
        site.add_job("sim", {"n": 1, "infile": "a.dat"}, name="first")
        yield site


def _stored(site) -> tuple:
    return sorted(site.count_jobs().items()), [(a.name, a.command_template) for a in site.apps()], [
        (j.name, j.parameters, j.tags) for j in site.jobs()
    ]


@pytest.mark.parametrize("case", FILE_CASES.values(), ids=FILE_CASES.keys())
def test_a_hostile_job_file_gets_one_error_line_and_adds_nothing(hostile_site, balsam, tmp_path, case):
    path = _make(tmp_path, case, 0)
    before = _stored(hostile_site)
    result = balsam(["job", "add", "--from", str(path)])
    _one_error_line(result, case.message)
    assert _stored(hostile_site) == before


OPTION_CASES = {
    # Text values given as options.
    "param-long": (["job", "add", "-a", "sim", "-p", f"n={LONG}", "-p", "infile=x"], "job: params.n: text of 70000 characters; at most 65536"),
    "param-surrogate": (["job", "add", "-a", "sim", "-p", SURROGATE, "-p", "infile=x"],
                        "argument 6 of the command line ('n=\\udcff') is not UTF-8 text (byte 0xff)"),  # fmt: skip
    "name-surrogate": (["job", "add", "-a", "sim", "--name", "\udce9t\udce9"], "argument 6 of the command line"),
    "workflow-surrogate": (["job", "add", "-a", "sim", "-w", "w\udc80"], "is not UTF-8 text (byte 0x80)"),
    "tag-surrogate": (["job", "add", "-a", "sim", "--tag", "k=\udcfe"], "is not UTF-8 text (byte 0xfe)"),
    "tag-long": (["job", "add", "-a", "sim", "-p", "n=1", "-p", "infile=x", "--tag", f"k={LONG}"], "job: tags.k: text of 70000 characters"),
    "tag-key-long": (["job", "add", "-a", "sim", "-p", "n=1", "-p", "infile=x", "--tag", f"{LONG}=v"], "job: tags: a key of 70000 characters"),
    "from-surrogate-path": (["job", "add", "--from", "/tmp/\udcffjobs.yaml"], "is not UTF-8 text (byte 0xff)"),
    "site-surrogate": (["job", "ls", "--site", "/tmp/\udcff"], "is not UTF-8 text (byte 0xff)"),
    "ls-tag-surrogate": (["job", "ls", "--tag", "k=\udcff"], "is not UTF-8 text (byte 0xff)"),
    "ls-workflow-surrogate": (["job", "ls", "-w", "\udcff"], "is not UTF-8 text"),
    "app-rm-surrogate": (["app", "rm", "\udcff"], "is not UTF-8 text"),
    "modify-surrogate": (["job", "modify", "1", "-p", "n=\udcff"], "is not UTF-8 text"),
    "modify-long": (["job", "modify", "1", "-p", f"n={LONG}"], "params.n: text of 70000 characters"),
    "modify-nan": (["job", "modify", "1", "--wall-time", "nan"], "wall_time_min: nan is not a finite number"),
    "modify-inf": (["job", "modify", "1", "--wall-time", "inf"], "wall_time_min: inf is not a finite number"),
    # Numbers given as options.
    "nodes-huge": (["job", "add", "-a", "sim", "-p", "n=1", "-p", "infile=x", "--nodes", HUGE], "--nodes must be a whole number or 'auto', got '9999999999"),
    "nodes-4000-digits": (["job", "add", "-a", "sim", "-p", "n=1", "-p", "infile=x", "--nodes", "9" * 4000], "nodes: a whole number of 4000 digits"),
    "nodes-2**63": (["job", "add", "-a", "sim", "-p", "n=1", "-p", "infile=x", "--nodes", str(2**63)], "nodes: the whole number 9223372036854775808 is outside"),
    "wall-time-huge": (["job", "add", "-a", "sim", "-p", "n=1", "-p", "infile=x", "--wall-time", HUGE], "wall_time_min: inf is not a finite number"),
    "wall-time-nan": (["job", "add", "-a", "sim", "-p", "n=1", "-p", "infile=x", "--wall-time", "nan"], "wall_time_min: nan is not a finite number"),
    "wall-time-neg-inf": (["job", "add", "-a", "sim", "-p", "n=1", "-p", "infile=x", "--wall-time", "-inf"], "wall_time_min: -inf is not a finite number"),
    "wall-time-text": (["job", "add", "-a", "sim", "-p", "n=1", "-p", "infile=x", "--wall-time", LONG],
                       "--wall-time must be a number of minutes or 'auto', got 'xxxxxxxxxx"),  # fmt: skip
    # Apps.
    "app-command-long": (["app", "add", "big", "--command", "prog " + LONG], "app 'big': command: text of 70005 characters"),
    "app-env-long": (["app", "add", "big", "--command", "prog", "--env", f"K={LONG}"], "app 'big': env.K: text of 70000 characters"),
    "app-description-long": (["app", "add", "big", "--command", "prog", "--description", LONG], "app 'big': description: text of 70000 characters"),
    "app-preprocess-long": (["app", "add", "big", "--command", "prog", "--preprocess", "pre " + LONG], "app 'big': preprocess: text of 70004"),
    "app-image-long": (["app", "add", "big", "--command", "prog", "--image", LONG], "app 'big': image: text of 70000 characters"),
    "app-name-escape": (["app", "add", "\x1b[31mred", "--command", "prog"], "an app name must not hold control characters ('\\x1b[31mred')"),
    "app-name-newline": (["app", "add", "two\nlines", "--command", "prog"], "an app name must not hold control characters"),
    "app-name-markup": (["app", "add", "[bold]x[/bold]", "--command", "prog", "--on-error", "[red]maybe"],
                        "on_error must be one of retry, rescue, fail, got '[red]maybe'"),  # fmt: skip
    "app-command-surrogate": (["app", "add", "x", "--command", "prog \udcff"], "is not UTF-8 text (byte 0xff)"),
    "app-env-nul-name": (["app", "add", "x", "--command", "prog", "--env", "A B=1"], "bad --env 'A B=1': expected NAME=VALUE"),
    "shell-quoted-placeholder": (["app", "add", "x", "--command", "sh -c 'echo \"{k}\"'"],
                                 "placeholder {k} is inside quotes in the script of sh -c"),  # fmt: skip
    "shell-single-quoted-placeholder": (["app", "add", "x", "--command", "bash -c \"echo '{k}'\""], "placeholder {k} is inside quotes"),
    "shell-env-quoted-placeholder": (["app", "add", "x", "--command", "/usr/bin/env dash -ec 'ls \"$HOME/{k}\"'"], "placeholder {k} is inside quotes"),
    "shell-escaped-placeholder": (["app", "add", "x", "--command", "sh -c 'echo \\{k}'"], "placeholder {k} follows a backslash"),
    "markup-error": (["app", "rm", "[bold red]no[/]"], "unknown app '[bold red]no[/]'"),
}


@pytest.mark.parametrize("args, message", OPTION_CASES.values(), ids=OPTION_CASES.keys())
def test_a_hostile_option_gets_one_error_line_and_stores_nothing(hostile_site, balsam, args, message):
    before = _stored(hostile_site)
    result = balsam(args)
    _one_error_line(result, message)
    assert _stored(hostile_site) == before


CREDENTIALS_CASES = {  # a collaborator's credentials file (`balsam --db-credentials FILE`), read through the same boundary
    "fifo": FileCase("alice.toml", fifo, "alice.toml: is a FIFO (named pipe), not a regular file"),
    "dev-zero": FileCase("alice.toml", lambda path: path.symlink_to("/dev/zero"), "/dev/zero: is a character device, not a regular file"),
    "binary": FileCase("alice.toml", b"[database]\x00\xff", "alice.toml: holds a NUL byte (byte 10): a binary file, not text"),
    "utf16": FileCase("alice.toml", '[database]\nuser = "alice"\n'.encode("utf-16"), "alice.toml: is UTF-16 text: save it as UTF-8"),
    "70MB": FileCase("alice.toml", lambda path: path.write_bytes(b"#" * (70 << 20)), "alice.toml: is 70.0 MiB, more than the 64 MiB"),
}


@pytest.mark.parametrize("case", CREDENTIALS_CASES.values(), ids=CREDENTIALS_CASES.keys())
def test_a_hostile_credentials_file_gets_one_error_line(hostile_site, balsam, tmp_path, monkeypatch, case):
    from balsam.site.settings import CREDENTIALS_ENV

    monkeypatch.setenv(CREDENTIALS_ENV, "")  # the option sets it for the process: put it back afterwards
    path = _make(tmp_path, case, 0)
    before = _stored(hostile_site)
    _one_error_line(balsam(["--db-credentials", str(path), "job", "add", "-a", "sim", "-p", "n=1", "-p", "infile=x"]), case.message)
    assert _stored(hostile_site) == before


def test_listings_show_control_characters_escaped_and_never_interpret_markup(hostile_site, balsam):
    """Data is shown, never obeyed: no escape sequence from a job reaches the terminal, and markup is text."""
    hostile = {"n": "\x1b[2J\x1b[31mred", "infile": "[bold]loud[/bold] \x07bell"}
    job = hostile_site.add_job("sim", hostile, name="[red]name[/red]\x1b]0;title\x07", tags={"k": "v\x1b[5m", "m": "[link=http://x]y[/link]"},
                               workflow="w\x9bz")  # fmt: skip
    outputs = [balsam(args).out for args in (["job", "ls"], ["job", "ls", "-w", "w\x9bz"], ["job", "show", str(job.id)],
                                             ["job", "history", str(job.id)], ["app", "ls"])]  # fmt: skip
    hostile_site.remove_job(job.id)
    for out in outputs:
        assert not any(ch in out for ch in "\x1b\x07\x9b"), out
    table, _, show, _, _ = outputs
    assert "\\x1b[2J\\x1b[31mred" in table and "[bold]loud[/bold] \\x07bell" in table
    assert "[red]name[/red]\\x1b]0;title\\x07" in show and "[link=http://x]y[/link]" in show and "w\\x9bz" in show


# ------------------------------------------------------------------------------------------------
# `argo submit`: refused before anything is sent


def spec_yaml(task_extra: str = "", top: str = "") -> str:
    lines = "".join(f"    {line}\n" for line in task_extra.splitlines())
    return f"{top}name: wf\ntasks:\n  - name: a\n    app: sim\n{lines}"


SPEC_CASES = {
    "fifo": FileCase("wf.yaml", fifo, "wf.yaml: is a FIFO (named pipe), not a regular file"),
    "dev-zero": FileCase("wf.yaml", lambda path: path.symlink_to("/dev/zero"), "wf.yaml: is a character device, not a regular file"),
    "folder": FileCase("wf.json", folder, "wf.json: is a folder, not a file"),
    "binary": FileCase("wf.yaml", b"\x00\x01\x02\x03", "wf.yaml: holds a NUL byte (byte 0): a binary file, not text"),
    "utf16": FileCase("wf.yaml", spec_yaml().encode("utf-16"), "wf.yaml: is UTF-16 text: save it as UTF-8"),
    "50MB": FileCase("wf.yaml", lambda path: path.write_bytes(b"#" * (50 << 20)), "wf.yaml: is 50.0 MiB of YAML, more than 8 MiB"),
    "70MB-json": FileCase("wf.json", lambda path: path.write_bytes(b" " * (70 << 20)), "wf.json: is 70.0 MiB, more than the 64 MiB one file may hold"),
    "huge-int-yaml": FileCase("wf.yaml", spec_yaml(f"params: {{n: {HUGE}}}"), "line 5: tasks[0].params.n: a whole number of 5000 digits"),
    "huge-int-json": FileCase("wf.json", '{"name": "wf", "tasks": [{"name": "a", "app": "sim", "params": {"n": ' + HUGE + "}}]}",
                              "tasks[0].params.n: a whole number of 5000 digits"),  # fmt: skip
    "huge-nodes": FileCase("wf.yaml", spec_yaml(f"resources: {{nodes: {HUGE}}}"), "tasks[0].resources.nodes: a whole number of 5000 digits"),
    "deep-json": FileCase("wf.json", '{"name": "wf", "tasks": ' + "[" * DEEP + "]" * DEEP + "}", "wf.json: nested deeper than 64 levels"),
    "deep-json-params": FileCase("wf.json", '{"name": "wf", "tasks": [{"name": "a", "app": "sim", "params": ' + nested_json(DEEP) + "}]}",
                                 "wf.json: nested deeper than 64 levels"),  # fmt: skip
    "deep-yaml": FileCase("wf.yaml", spec_yaml("params: {n: " + "[" * DEEP + "]" * DEEP + "}"), "nested deeper than 64 levels"),
    "billion-laughs": FileCase("wf.yaml", spec_yaml("params: {n: *i}", top=LAUGHS), "aliases expand it to more than 5000000 values"),
    "laughs-in-tags": FileCase("wf.yaml", spec_yaml("tags: *i", top=LAUGHS), "aliases expand it to more than 5000000 values"),
    "lone-surrogate": FileCase("wf.json", '{"name": "wf", "tasks": [{"name": "a", "app": "sim", "params": {"p": "\\ud800"}}]}',
                               "tasks[0].params.p: not valid text: a lone surrogate ('\\ud800' at character 1)"),  # fmt: skip
    "surrogate-app": FileCase("wf.json", '{"name": "wf", "tasks": [{"name": "a", "app": "\\udfff"}]}', "tasks[0].app: not valid text"),
    "date-param": FileCase("wf.yaml", spec_yaml("params: {day: 2024-01-01}"), "line 5: tasks[0].params.day: a date or time (2024-01-01)"),
    "binary-param": FileCase("wf.yaml", spec_yaml("params: {b: !!binary aGk=}"), "line 5: tasks[0].params.b: !!binary data is not a JSON value"),
    "set-tags": FileCase("wf.yaml", spec_yaml("tags: !!set {a}"), "line 5: tasks[0].tags: !!set is not a JSON value"),
    "nan-param": FileCase("wf.json", '{"name": "wf", "tasks": [{"name": "a", "app": "sim", "params": {"x": NaN}}]}',
                          "tasks[0].params.x: nan is not a finite number"),  # fmt: skip
    "long-param": FileCase("wf.json", json.dumps({"name": "wf", "tasks": [{"name": "a", "app": "sim", "params": {"x": LONG}}]}),
                           "tasks[0].params.x: text of 70000 characters"),  # fmt: skip
    "long-app": FileCase("wf.json", json.dumps({"name": "wf", "tasks": [{"name": "a", "app": LONG}]}), "tasks[0].app: text of 70000 characters"),
    "long-app-name": FileCase("wf.json", json.dumps({"name": "wf", "tasks": [{"name": "a", "app": "x" * 300}]}),
                              "task 'a': app name is 300 characters long; at most 200"),  # fmt: skip
    "control-app": FileCase("wf.json", json.dumps({"name": "wf", "tasks": [{"name": "a", "app": "\x1b[31mx"}]}),
                            "task 'a': app name must not hold control characters ('\\x1b[31mx')"),  # fmt: skip
    "control-site": FileCase("wf.json", json.dumps({"name": "wf", "tasks": [{"name": "a", "app": "sim", "site": "s\x07"}]}),
                             "task 'a': site must be the name of a site, got 's\\x07'"),  # fmt: skip
    "int-key": FileCase("wf.yaml", spec_yaml("params: {1: x}"), "line 5: tasks[0].params: the key 1 is read as a whole number"),
}


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    """One coordinator process for every `argo submit` and raw gRPC case, with a site 'fake' offering 'sim'
    and a running workflow to add tasks to."""
    fed = Federation(tmp_path_factory.mktemp("hostile-argo"), site_timeout_s=3600)
    fed.start_server()
    with fed.client() as client:
        client.sites_stub.Register(pb.RegisterRequest(name="fake", apps=["sim"], nodes=2))
        fed.workflow_id = client.submit({"name": "base", "tasks": [{"name": "a", "app": "sim"}]})
    fed.md = [("authorization", f"Bearer {fed.owner_token()}")]
    try:
        yield fed
    finally:
        fed.stop()


def _coordinator_state(fed) -> tuple:
    with fed.client() as client:
        workflows = client.list(limit=10_000)
        tasks = {w["id"]: [(t["id"], t["state"], t["app"]) for t in client.tasks(w["id"])] for w in workflows}
        sites = [(s["name"], s["apps"], s["nodes"], s["max_tasks"]) for s in client.sites()]
        rules = client.triggers()
    return [(w["id"], w["name"], w["status"], w["tasks"]) for w in workflows], tasks, sites, rules


def _server_log(fed) -> str:
    return (fed.data / "logs" / "server.log").read_text()


@pytest.mark.parametrize("case", SPEC_CASES.values(), ids=SPEC_CASES.keys())
def test_a_hostile_spec_is_refused_by_argo_submit_before_anything_is_sent(coordinator, argo_cli, tmp_path, case):
    path = _make(tmp_path, case, 0)
    before = _coordinator_state(coordinator)
    result = argo_cli(["submit", str(path), "--address", coordinator.address])
    _one_error_line(result, case.message)
    assert _coordinator_state(coordinator) == before


# ------------------------------------------------------------------------------------------------
# Raw gRPC: what any client could send

OK = pb.TaskSpec(name="t", app="sim", params_json="{}")


def task(**fields: Any) -> pb.TaskSpec:
    spec = pb.TaskSpec()
    spec.CopyFrom(OK)
    for key, value in fields.items():
        if key == "resources":
            spec.resources.CopyFrom(pb.Resources(**value))
        elif isinstance(value, dict):
            getattr(spec, key).update(value)
        elif isinstance(value, list):
            getattr(spec, key).extend(value)
        else:
            setattr(spec, key, value)
    return spec


def submit(*tasks: pb.TaskSpec, **chunk: Any) -> list[bytes]:
    return [pb.SubmitChunk(name=chunk.pop("name", "wf"), tasks=list(tasks or [OK]), **chunk).SerializeToString()]


def hello(site: str = "fake", last_applied: int = 0) -> bytes:
    return pb.SiteEnvelope(hello=pb.Hello(site=site, last_applied=last_applied)).SerializeToString()


def sync(*envelopes: pb.SiteEnvelope, first: bytes | None = None) -> list[bytes]:
    return [first or hello(), *(e.SerializeToString() for e in envelopes)]


def event(**fields: Any) -> pb.SiteEnvelope:
    values = {"task_id": "1/a", "attempt": 1, "job_id": 1, "from_state": 1, "to_state": 2, **fields}
    return pb.SiteEnvelope(messages=[pb.SiteMessage(seq=1, event=pb.TaskEvent(**values))])


MB = "x" * (1 << 20)
INVALID, TOO_BIG = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
WORKFLOWS, MONITOR, SITES, TRIGGERS, AUTH = "balsam.v1.Workflows", "balsam.v1.Monitor", "balsam.v1.Sites", "balsam.v1.Triggers", "balsam.v1.Auth"

# (service/method, kind, request bytes, status, what the message says)
RPC_CASES = {
    # Bytes that are no message at all, in every kind of call.
    "submit-garbage": (f"{WORKFLOWS}/Submit", "stream", [b"\xff\xff\xff\xff"], INVALID, "not a valid balsam.v1.SubmitChunk"),
    "submit-second-chunk-garbage": (f"{WORKFLOWS}/Submit", "stream", [*submit(), b"\x0a\xff"], INVALID, "message 2 of the stream"),
    "sync-garbage": (f"{SITES}/Sync", "bidi", [b"\xff\xff\xff\xff"], INVALID, "not a valid balsam.v1.SiteEnvelope"),
    "sync-second-garbage": (f"{SITES}/Sync", "bidi", [hello(), b"\x1a\x03\xff\xff\xff"], INVALID, "not a valid balsam.v1.SiteEnvelope"),
    "get-garbage": (f"{WORKFLOWS}/Get", "unary", b"\xff\xff\xff\xff\xff", INVALID, "not a valid balsam.v1.WorkflowRef"),
    "watch-garbage": (f"{MONITOR}/Watch", "server-stream", b"\x1a\x05\x01", INVALID, "not a valid balsam.v1.WatchRequest"),
    "register-garbage": (f"{SITES}/Register", "unary", b"\x0a\x10abc", INVALID, "not a valid balsam.v1.RegisterRequest"),
    "trigger-garbage": (f"{TRIGGERS}/Add", "unary", b"\x12\xff", INVALID, "not a valid balsam.v1.TriggerRule"),
    "adduser-garbage": (f"{AUTH}/AddUser", "unary", b"\x0a", INVALID, "not a valid balsam.v1.AddUserRequest"),
    # Invalid UTF-8 in a text field.
    "submit-bad-utf8": (f"{WORKFLOWS}/Submit", "stream", [b"\x0a\x02\xc3\x28"], INVALID, "not a valid balsam.v1.SubmitChunk"),
    "gettask-bad-utf8": (f"{WORKFLOWS}/GetTask", "unary", b"\x0a\x02\xc3\x28", INVALID, "not a valid balsam.v1.TaskRef"),
    "register-bad-utf8": (f"{SITES}/Register", "unary", b"\x0a\x03\xed\xa0\x80", INVALID, "not a valid balsam.v1.RegisterRequest"),
    # NUL characters.
    "submit-nul-name": (f"{WORKFLOWS}/Submit", "stream", submit(name="w\0f"), INVALID, "message 1 of the stream: name: contains a NUL character"),
    "submit-nul-project": (f"{WORKFLOWS}/Submit", "stream", submit(project="p\0"), INVALID, "project: contains a NUL character"),
    "submit-nul-task-name": (f"{WORKFLOWS}/Submit", "stream", submit(task(name="a\0")), INVALID, "tasks[0].name: contains a NUL character"),
    "submit-nul-app": (f"{WORKFLOWS}/Submit", "stream", submit(task(app="s\0im")), INVALID, "tasks[0].app: contains a NUL character"),
    "submit-nul-parent": (f"{WORKFLOWS}/Submit", "stream", submit(task(parents=["p\0"])), INVALID, "tasks[0].parents[0]: contains a NUL"),
    "submit-nul-input-key": (f"{WORKFLOWS}/Submit", "stream", submit(task(inputs={"a\0": "file:///x"})), INVALID, "tasks[0].inputs: a key contains a NUL"),
    "submit-nul-tag": (f"{WORKFLOWS}/Submit", "stream", submit(task(tags={"k": "v\0"})), INVALID, "tasks[0].tags['k']: contains a NUL"),
    "gettask-nul": (f"{WORKFLOWS}/GetTask", "unary", pb.TaskRef(task_id="1/\0").SerializeToString(), INVALID, "task_id: contains a NUL"),
    "killtask-nul": (f"{WORKFLOWS}/KillTask", "unary", pb.TaskRef(task_id="\0").SerializeToString(), INVALID, "task_id: contains a NUL"),
    "summary-nul-site": (f"{MONITOR}/Summary", "unary", pb.SummaryRequest(site="\0").SerializeToString(), INVALID, "site: contains a NUL"),
    "watch-nul-site": (f"{MONITOR}/Watch", "server-stream", pb.WatchRequest(site="a\0").SerializeToString(), INVALID, "site: contains a NUL"),
    "register-nul-name": (f"{SITES}/Register", "unary", pb.RegisterRequest(name="s\0", apps=["sim"]).SerializeToString(), INVALID, "name: contains a NUL"),
    "register-nul-app": (f"{SITES}/Register", "unary", pb.RegisterRequest(name="s", apps=["\0"]).SerializeToString(), INVALID, "apps[0]: contains a NUL"),
    "sync-nul-hello": (f"{SITES}/Sync", "bidi", [hello(site="fa\0ke")], INVALID, "hello.site: contains a NUL"),
    "sync-nul-message": (f"{SITES}/Sync", "bidi", sync(event(message="m\0")), INVALID, "messages[0].event.message: contains a NUL"),
    "trigger-nul-folder": (f"{TRIGGERS}/Add", "unary", pb.TriggerRule(name="r", folder="/tmp/\0", app="sim").SerializeToString(), INVALID, "folder: contains a NUL"),
    "adduser-nul": (f"{AUTH}/AddUser", "unary", apb.AddUserRequest(name="u\0", role="viewer").SerializeToString(), INVALID, "name: contains a NUL"),
    "revoke-nul": (f"{AUTH}/RevokeUser", "unary", apb.RevokeRequest(name="\0").SerializeToString(), INVALID, "name: contains a NUL"),
    # Sizes: a short message naming the field, never the value itself.
    "gettask-1MB-id": (f"{WORKFLOWS}/GetTask", "unary", pb.TaskRef(task_id=MB).SerializeToString(), TOO_BIG,
                       "task_id: text of 1048576 characters; at most 4096 (it starts 'xxxxxxxxxx"),  # fmt: skip
    "killtask-1MB-id": (f"{WORKFLOWS}/KillTask", "unary", pb.TaskRef(task_id=MB).SerializeToString(), TOO_BIG, "task_id: text of 1048576"),
    "submit-1MB-name": (f"{WORKFLOWS}/Submit", "stream", submit(name=MB), TOO_BIG, "name: text of 1048576 characters"),
    "submit-1MB-app": (f"{WORKFLOWS}/Submit", "stream", submit(task(app=MB)), TOO_BIG, "tasks[0].app: text of 1048576"),
    "submit-1MB-parent": (f"{WORKFLOWS}/Submit", "stream", submit(task(parents=[MB])), TOO_BIG, "tasks[0].parents[0]: text of 1048576"),
    "submit-2MB-params": (f"{WORKFLOWS}/Submit", "stream", submit(task(params_json=json.dumps({"x": MB * 2}))), TOO_BIG,
                          "tasks[0].params_json: text of 2097161 characters; at most 1048576"),  # fmt: skip
    "register-1MB-name": (f"{SITES}/Register", "unary", pb.RegisterRequest(name=MB).SerializeToString(), TOO_BIG, "name: text of 1048576"),
    "watch-1MB-site": (f"{MONITOR}/Watch", "server-stream", pb.WatchRequest(site=MB).SerializeToString(), TOO_BIG, "site: text of 1048576"),
    "sync-1MB-task-id": (f"{SITES}/Sync", "bidi", sync(event(task_id=MB)), TOO_BIG, "messages[0].event.task_id: text of 1048576"),
    "adduser-1MB-project": (f"{AUTH}/AddUser", "unary", apb.AddUserRequest(name="u", role="viewer", projects=[MB]).SerializeToString(),
                            TOO_BIG, "projects[0]: text of 1048576"),  # fmt: skip
    "17MB-request": (f"{WORKFLOWS}/Get", "unary", b"\x08\x01" + b"\x00" * (17 << 20), TOO_BIG, "larger than max"),
    # params_json: checked as any JSON from a user.
    "params-deep": (f"{WORKFLOWS}/Submit", "stream", submit(task(params_json=nested_json(DEEP))), INVALID,
                    "tasks[0] (task 't'): params_json: nested deeper than 64 levels"),  # fmt: skip
    "params-70-deep": (f"{WORKFLOWS}/Submit", "stream", submit(task(params_json='{"x": ' + "[" * 70 + "]" * 70 + "}")), INVALID,
                       "params_json: x[0][0][0]"),  # fmt: skip
    "params-huge-int": (f"{WORKFLOWS}/Submit", "stream", submit(task(params_json='{"n": ' + HUGE + "}")), INVALID,
                        "params_json: n: a whole number of 5000 digits"),  # fmt: skip
    "params-nan": (f"{WORKFLOWS}/Submit", "stream", submit(task(params_json='{"n": NaN}')), INVALID, "params_json: n: nan is not a finite number"),
    "params-surrogate": (f"{WORKFLOWS}/Submit", "stream", submit(task(params_json='{"p": "\\ud800"}')), INVALID,
                         "params_json: p: not valid text: a lone surrogate"),  # fmt: skip
    "params-long-value": (f"{WORKFLOWS}/Submit", "stream", submit(task(params_json=json.dumps({"p": LONG}))), TOO_BIG, "params_json: p: text of 70000"),
    "params-not-json": (f"{WORKFLOWS}/Submit", "stream", submit(task(params_json="{'a': 1")), INVALID, "params_json is not JSON"),
    "addtasks-deep": (f"{WORKFLOWS}/AddTasks", "unary", None, INVALID, "tasks[0] (task 't'): params_json: nested deeper than 64 levels"),
    "trigger-params-deep": (f"{TRIGGERS}/Add", "unary", pb.TriggerRule(name="r", folder="/tmp", app="sim", params_json=nested_json(DEEP)).SerializeToString(),
                            INVALID, "params_json: nested deeper than 64 levels"),  # fmt: skip
    "trigger-params-huge-int": (f"{TRIGGERS}/Add", "unary", pb.TriggerRule(name="r", folder="/tmp", app="sim", params_json='{"n": ' + HUGE + "}").SerializeToString(),
                                INVALID, "params_json: n: a whole number of 5000 digits"),  # fmt: skip
    # Numbers that are no numbers, and enum values that name nothing.
    "submit-nan-wall-time": (f"{WORKFLOWS}/Submit", "stream", submit(task(resources={"wall_time_min": float("nan")})), INVALID,
                             "tasks[0].resources.wall_time_min: nan is not a finite number"),  # fmt: skip
    "submit-inf-wall-time": (f"{WORKFLOWS}/Submit", "stream", submit(task(resources={"wall_time_min": float("inf")})), INVALID,
                             "tasks[0].resources.wall_time_min: inf is not a finite number"),  # fmt: skip
    "trigger-nan-settle": (f"{TRIGGERS}/Add", "unary", pb.TriggerRule(name="r", folder="/tmp", app="sim", settle_s=float("nan")).SerializeToString(),
                           INVALID, "settle_s: nan is not a finite number"),  # fmt: skip
    "adduser-nan-ttl": (f"{AUTH}/AddUser", "unary", apb.AddUserRequest(name="u", role="viewer", ttl_s=float("nan")).SerializeToString(),
                        INVALID, "ttl_s: nan is not a finite number"),  # fmt: skip
    "watch-state-999": (f"{MONITOR}/Watch", "server-stream", pb.WatchRequest(states=[999]).SerializeToString(), INVALID,
                        "states[0]: 999 is not a balsam.v1.JobState"),  # fmt: skip
    "watch-state-negative": (f"{MONITOR}/Watch", "server-stream", pb.WatchRequest(states=[5, -3]).SerializeToString(), INVALID,
                             "states[1]: -3 is not a balsam.v1.JobState"),  # fmt: skip
    "sync-heartbeat-nan": (f"{SITES}/Sync", "bidi", sync(pb.SiteEnvelope(heartbeat=pb.Heartbeat(queue_wait_s=float("nan")))), INVALID,
                           "heartbeat.queue_wait_s: nan is not a finite number"),  # fmt: skip
    "sync-heartbeat-inf": (f"{SITES}/Sync", "bidi", sync(pb.SiteEnvelope(heartbeat=pb.Heartbeat(queue_wait_s=float("-inf")))), INVALID,
                           "heartbeat.queue_wait_s: -inf is not a finite number"),  # fmt: skip
    "sync-model-nan": (f"{SITES}/Sync", "bidi", sync(pb.SiteEnvelope(heartbeat=pb.Heartbeat(models={"sim": pb.RuntimeModel(serial_s=float("nan"))}))),
                       INVALID, "heartbeat.models['sim'].serial_s: nan is not a finite number"),  # fmt: skip
    "sync-heartbeat-negative": (f"{SITES}/Sync", "bidi", sync(pb.SiteEnvelope(heartbeat=pb.Heartbeat(backlog=-5))), INVALID,
                                "heartbeat.backlog must be >= 0, got -5"),  # fmt: skip
    "sync-event-state-999": (f"{SITES}/Sync", "bidi", sync(event(to_state=999)), INVALID, "messages[0].event.to_state: 999 is not a balsam.v1.JobState"),
    # Sequence numbers.
    "hello-2**64-1": (f"{SITES}/Sync", "bidi", [hello(last_applied=2**64 - 1)], INVALID,
                      "hello.last_applied: 18446744073709551615 is above the largest sequence number (9223372036854775807)"),  # fmt: skip
    "hello-ahead": (f"{SITES}/Sync", "bidi", [hello(last_applied=1_000_000)], INVALID,
                    "Hello.last_applied 1000000 is above the highest message sent to site 'fake'"),  # fmt: skip
    "ack-2**64-1": (f"{SITES}/Sync", "bidi", sync(pb.SiteEnvelope(ack=2**64 - 1)), INVALID, "ack: 18446744073709551615 is above the largest"),
    "ack-ahead": (f"{SITES}/Sync", "bidi", sync(pb.SiteEnvelope(ack=1_000_000)), INVALID, "ack 1000000 is above the highest message sent to site 'fake'"),
    "seq-2**64-1": (f"{SITES}/Sync", "bidi", sync(pb.SiteEnvelope(messages=[pb.SiteMessage(seq=2**64 - 1, event=pb.TaskEvent(task_id="1/a"))])),
                    INVALID, "messages[0].seq: 18446744073709551615 is above the largest"),  # fmt: skip
    # Names a site registers with.
    "register-control-name": (f"{SITES}/Register", "unary", pb.RegisterRequest(name="s\x1b[2J").SerializeToString(), INVALID,
                              "a site name must not hold control characters"),  # fmt: skip
    "register-negative-nodes": (f"{SITES}/Register", "unary", pb.RegisterRequest(name="neg", apps=["sim"], nodes=-4).SerializeToString(), INVALID,
                                "nodes must be >= 0, got -4"),  # fmt: skip
    "register-empty-name": (f"{SITES}/Register", "unary", pb.RegisterRequest(apps=["sim"]).SerializeToString(), INVALID, "a site needs a name"),
}


def _call(fed, method: str, kind: str, request, timeout: float = 30):
    channel = grpc.insecure_channel(fed.address, options=[("grpc.max_send_message_length", 64 << 20)])
    path = "/" + method
    done = threading.Event()

    def requests():
        yield from request
        done.wait(timeout)  # keep the stream open: the refusal, not our end, must close it

    try:
        if kind == "unary":
            return channel.unary_unary(path)(request, metadata=fed.md, timeout=timeout)
        if kind == "server-stream":
            return list(channel.unary_stream(path)(request, metadata=fed.md, timeout=timeout))
        if kind == "stream":  # the reply comes once the request stream ends
            return channel.stream_unary(path)(iter(request), metadata=fed.md, timeout=timeout)
        return list(channel.stream_stream(path)(requests(), metadata=fed.md, timeout=timeout))
    finally:
        done.set()
        channel.close()


@pytest.mark.parametrize("method, kind, request_bytes, status, message", RPC_CASES.values(), ids=RPC_CASES.keys())
def test_a_hostile_request_gets_its_status_naming_the_field_and_the_server_keeps_serving(coordinator, method, kind, request_bytes,
                                                                                          status, message):  # fmt: skip
    if request_bytes is None:  # AddTasks needs the id of the module's workflow
        request_bytes = pb.AddTasksRequest(workflow_id=coordinator.workflow_id, tasks=[task(params_json=nested_json(DEEP))]).SerializeToString()
    before = _coordinator_state(coordinator)
    with pytest.raises(grpc.RpcError) as refused:
        _call(coordinator, method, kind, request_bytes)
    details = refused.value.details() or ""
    assert refused.value.code() == status, details[:300]
    assert message in details, details[:300]
    assert len(details) < 1000, "the message echoes at most a short prefix of the value"
    assert _coordinator_state(coordinator) == before
    with coordinator.client() as client:
        assert client.healthy()
    assert "Traceback" not in _server_log(coordinator)


def test_the_tables_hold_at_least_150_hostile_inputs():
    assert len(FILE_CASES) + len(OPTION_CASES) + len(CREDENTIALS_CASES) + len(SPEC_CASES) + len(RPC_CASES) >= 150


def test_argo_listings_show_control_characters_escaped_and_never_interpret_markup(coordinator, argo_cli):
    """A site's event message (a program's error output, say) is shown by `argo tasks`, `watch` and
    `status` as text: its escape sequences escaped, its markup literal."""
    from balsam.states import JobState as S

    hostile = "\x1b[2J\x1b]0;pwned\x07[bold red]boom[/bold red] \x9b31m\u202eevil"
    chain = [S.CREATED, S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.STAGED_OUT, S.JOB_FINISHED]
    outgoing: queue.Queue = queue.Queue()

    def envelopes():
        yield pb.SiteEnvelope(hello=pb.Hello(site="fake"))
        while (envelope := outgoing.get()) is not None:
            yield envelope

    with coordinator.client() as client:
        workflow_id = client.submit({"name": "shown", "tasks": [{"name": "a", "app": "sim", "site": "fake"}]})
        responses = client.sites_stub.Sync(envelopes(), timeout=60)
        welcome = next(responses).welcome
        attempt = next(m.assign.attempt for reply in responses for m in reply.messages if m.assign.task_id == f"{workflow_id}/a")
        outgoing.put(pb.SiteEnvelope(messages=[
            pb.SiteMessage(seq=welcome.last_applied + n + 1, event=pb.TaskEvent(
                task_id=f"{workflow_id}/a", attempt=attempt, job_id=7, from_state=chain[n].number, to_state=chain[n + 1].number,
                message=hostile if n >= 4 else "ok"))
            for n in range(len(chain) - 1)
        ]))  # fmt: skip
        assert next(responses).ack == welcome.last_applied + len(chain) - 1
        outgoing.put(None)
        responses.cancel()
    where = ["--address", coordinator.address]
    outputs = {args[0]: argo_cli([*args, *where]) for args in (["tasks", str(workflow_id)], ["watch", str(workflow_id)],
                                                              ["status", str(workflow_id)], ["ls"], ["sites"])}  # fmt: skip
    for command, result in outputs.items():
        assert result.code == 0, (command, result)
        assert not any(ch in result.out for ch in "\x1b\x07\x9b\u202e"), (command, result.out)
    for command in ("tasks", "watch"):
        assert "\\x1b[2J\\x1b]0;pwned\\x07[bold red]boom[/bold red] \\x9b31m\\u202eevil" in outputs[command].out, outputs[command].out
