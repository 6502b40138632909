"""Watching folders for new files, shared by a site's triggers and the Argo coordinator's.

A trigger rule watches one folder (optionally with its subfolders) for files matching its glob
patterns; each complete file becomes one job (or one Argo task). This module knows nothing of
jobs: ``FolderWatcher`` calls ``deliver(rule, relative_paths)`` with batches of
complete files, and the caller records them and creates the work in one transaction, where a
unique key (rule id, relative path) makes each file count once whoever delivers it, however often.

**When a file is complete.** On Linux, watchdog reports ``closed`` (inotify ``IN_CLOSE_WRITE``)
when a writer closes it: that file is complete at once. A file renamed into the folder (the usual
``write x.part, rename to x``) is complete at once too. Otherwise (a filesystem without close
events, a file found by the start-up scan, a file moved in from outside the watched folder) it is
complete once no event touched it for ``settle_s`` seconds and its size and modification time
have not changed meanwhile. A writer that pauses longer than ``settle_s`` without closing can
therefore be caught mid-write when close events are missing: such writers should write under a
temporary name and rename.

**Never counted:** names starting with a dot (and anything under a dot-folder), which covers
``.balsam-partial-*``; ``*.tmp``, ``*.part``, ``*~``; the rule's own ignore globs; anything that
is not a regular file.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import stat
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from balsam.errors import BalsamError

log = logging.getLogger("balsam.fswatch")

# Temporary and partial names that writers commonly use; never a finished file.
ALWAYS_IGNORED = ("*.tmp", "*.part", "*~", ".balsam-partial-*")
PLACEHOLDERS = ("path", "name", "stem", "parent")
DEFAULT_SETTLE_S = 10.0
MAX_BATCH = 2000  # files recorded (and jobs created) in one transaction
RETRY_S = 5.0  # a batch whose delivery failed (the database restarting) is tried again after this


@dataclass(frozen=True)
class WatchRule:
    """What the watcher needs of a rule; what to create for a file is the caller's business."""

    id: int
    name: str
    folder: Path
    recursive: bool = False
    patterns: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    settle_s: float = DEFAULT_SETTLE_S

    @classmethod
    def of(cls, row: Any) -> WatchRule:
        """From a stored rule (a site's or the coordinator's ``trigger_rules`` row)."""
        return cls(
            id=row.id, name=row.name, folder=Path(row.folder), recursive=row.recursive, patterns=tuple(row.patterns),
            ignore=tuple(row.ignore), settle_s=row.settle_s,
        )  # fmt: skip


def files_in(rule: WatchRule) -> Iterator[tuple[str, PurePosixPath]]:
    """(path, path below the folder) of every name in the rule's folder that the rule wants."""
    for root, dirs, files in os.walk(rule.folder):
        if not rule.recursive:
            dirs.clear()
        else:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = os.path.join(root, name)
            rel = PurePosixPath(Path(path).relative_to(rule.folder).as_posix())
            if wanted(rel, rule):
                yield path, rel


def claim_existing(session: Any, rule: WatchRule) -> None:
    """Count the files already in the rule's folder, with no work made for them (``--skip-existing``)."""
    existing = [str(rel) for path, rel in files_in(rule) if os.path.isfile(path)]
    for start in range(0, len(existing), MAX_BATCH):
        claim_files(session, rule.id, existing[start : start + MAX_BATCH])


def claim_files(session: Any, rule_id: int, paths: list[str]) -> list[str]:
    """Record files as counted in ``trigger_files`` (the same table in a site's database and the
    coordinator's); returns those not counted before: ON CONFLICT, a racer got there first."""
    from sqlalchemy import text

    return list(session.execute(
        text("INSERT INTO trigger_files (rule_id, path) SELECT :rule, p FROM unnest(CAST(:paths AS text[])) AS p"
             " ON CONFLICT DO NOTHING RETURNING path"),
        {"rule": rule_id, "paths": paths},
    ).scalars())  # fmt: skip


# -- checking a rule (no I/O but looking at the folder) -------------------------------------------


def check_folder(folder: str | Path) -> Path:
    """The rule's folder, which must be given as an absolute path of an existing folder."""
    text = str(folder)
    if not text.strip():
        raise BalsamError("a trigger rule needs a folder")
    path = Path(text)
    if not path.is_absolute():
        raise BalsamError(f"the folder of a trigger rule must be an absolute path, got {text!r}")
    if not path.exists():
        raise BalsamError(f"the folder {text} does not exist")
    if not path.is_dir():
        raise BalsamError(f"{text} is not a folder")
    return Path(os.path.normpath(path))


def glob_problem(pattern: Any) -> str | None:
    """Why ``pattern`` is not a usable glob, or None."""
    if not isinstance(pattern, str) or not pattern.strip():
        return f"a glob pattern must be non-empty text, got {pattern!r}"
    if "\0" in pattern:
        return f"glob {pattern!r} contains a NUL character"
    if pattern.startswith("/"):
        return f"glob {pattern!r} must be relative to the rule's folder"
    if ".." in PurePosixPath(pattern).parts:
        return f"glob {pattern!r} must not contain '..'"
    # fnmatch would silently treat an unclosed '[' as a literal: say so instead of never matching.
    # (The same scan as fnmatch's: '[!]...]' and '[]...]' hold a literal ']'.)
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                return f"glob {pattern!r} has an unclosed '['"
            i = j
        i += 1
    return None


def check_globs(patterns: Iterable[Any], what: str) -> tuple[str, ...]:
    result = []
    for pattern in patterns:
        problem = glob_problem(pattern)
        if problem:
            raise BalsamError(f"bad {what}: {problem}")
        result.append(pattern)
    return tuple(result)


def template_fields(value: str) -> list[str]:
    """The ``{placeholders}`` of one parameter template; an error for anything but the file's."""
    names = []
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise BalsamError(f"bad parameter template {value!r}: {exc} (write a literal brace as '{{{{' or '}}}}')") from None
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            raise BalsamError(f"unknown placeholder {{{name}}} in parameter template {value!r}; a file fills {known}")
        names.append(name)
    return names


def check_templates(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter templates as stored: text is checked for placeholders, numbers and booleans stay."""
    result: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str):
            template_fields(value)
        elif not isinstance(value, int | float | bool):
            raise BalsamError(f"parameter {key!r} must be text, a number or a boolean, got {value!r}")
        result[key] = value
    return result


def file_values(path: Path) -> dict[str, str]:
    return {"path": str(path), "name": path.name, "stem": path.stem, "parent": str(path.parent)}


def fill(params: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The parameters of the job for ``path``: every text template filled from the file."""
    values = file_values(path)
    return {k: v.format_map(values) if isinstance(v, str) else v for k, v in params.items()}


# -- which names count ----------------------------------------------------------------------------


def ignored(rel: PurePosixPath, rule: WatchRule) -> bool:
    if any(part.startswith(".") for part in rel.parts):
        return True
    name = rel.name
    if any(fnmatch.fnmatchcase(name, glob) for glob in ALWAYS_IGNORED):
        return True
    return any(_glob_matches(glob, rel) for glob in rule.ignore)


def wanted(rel: PurePosixPath, rule: WatchRule) -> bool:
    """Whether a file at ``rel`` (relative to the rule's folder) is one the rule turns into work."""
    if not rel.parts or (not rule.recursive and len(rel.parts) != 1) or ignored(rel, rule):
        return False
    return not rule.patterns or any(_glob_matches(glob, rel) for glob in rule.patterns)


def _glob_matches(glob: str, rel: PurePosixPath) -> bool:
    # A pattern with a '/' is about the path below the folder; without one, about the name alone.
    return fnmatch.fnmatchcase(str(rel) if "/" in glob else rel.name, glob)


def _signature(path: str) -> tuple[int, int] | None:
    """(size, mtime) of a regular file, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


# -- the watcher ----------------------------------------------------------------------------------


class _Pending:
    __slots__ = ("last", "sig")

    def __init__(self, last: float, sig: tuple[int, int] | None) -> None:
        self.last = last  # monotonic time of the last event that touched the file
        self.sig = sig  # its (size, mtime) then


class FolderWatcher:
    """Watches the folders of the active rules and delivers their complete files in batches.

    ``load_rules()`` returns the rules to watch now (paused ones left out); it is called every
    ``reload_s``, so rules added, removed, paused or resumed elsewhere take effect within that
    time. When a rule starts being watched (at start-up, when added, when resumed) its folder is
    scanned after the watch is in place, so files that came while nobody watched are found and
    none slips between the scan and the watch. ``deliver(rule, paths)`` records the files and
    creates their work (returns how many were new); it may be called again with files already
    recorded, and must then do nothing for them.
    """

    def __init__(
        self,
        load_rules: Callable[[], list[WatchRule]],
        deliver: Callable[[WatchRule, list[str]], int],
        *,
        tick_s: float = 0.05,
        reload_s: float = 1.0,
        batch: int = MAX_BATCH,
        name: str = "triggers",
    ) -> None:
        self.load_rules = load_rules
        self.deliver = deliver
        self.tick_s = tick_s
        self.reload_s = reload_s
        self.batch = batch
        self.name = name
        self.status: dict[str, Any] = {"rules": 0, "files": 0, "pending": 0, "errors": {}}
        self._events: queue.SimpleQueue[tuple[int, str, str, str]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._rules: dict[int, WatchRule] = {}
        self._watches: dict[int, Any] = {}
        self._pending: dict[tuple[int, str], _Pending] = {}
        self._ready: dict[int, dict[str, float]] = {}  # rule -> rel path -> not before (monotonic)
        self._observer = None
        self.delivered = 0

    # Called from watchdog's thread: only queue the event; all the work is done by ``run``'s loop.
    def _on_event(self, rule_id: int, event: Any) -> None:
        if event.is_directory:
            return
        kind = event.event_type
        if kind in ("created", "modified", "closed", "deleted"):
            self._events.put((rule_id, kind, os.fsdecode(event.src_path), ""))
        elif kind == "moved":
            self._events.put((rule_id, kind, os.fsdecode(event.src_path), os.fsdecode(event.dest_path)))
        else:
            return
        if kind in ("closed", "moved"):
            self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Watch until ``stop`` is set."""
        from watchdog.observers import Observer

        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()
        next_reload = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_reload:
                    self._reload()
                    next_reload = now + self.reload_s
                self._drain()
                self._settle()
                self._flush()
                self.status.update(rules=len(self._rules), pending=len(self._pending) + sum(map(len, self._ready.values())),
                                   files=self.delivered)  # fmt: skip
                self._wake.wait(self.tick_s)
                self._wake.clear()
        finally:
            self._observer.stop()
            self._observer.join(timeout=5)

    def start(self) -> tuple[threading.Thread, threading.Event]:
        """Run in a daemon thread; returns it and the event that stops it."""
        stop = threading.Event()
        thread = threading.Thread(target=self.run, args=(stop,), name=self.name, daemon=True)
        thread.start()
        return thread, stop

    # -- rules ------------------------------------------------------------------------------

    def _reload(self) -> None:
        try:
            rules = {rule.id: rule for rule in self.load_rules()}
            self.status["errors"].pop("rules", None)
        except Exception as exc:  # the database restarting: keep watching what we have
            self.status["errors"]["rules"] = f"{type(exc).__name__}: {exc}"
            log.warning("%s: cannot read the rules (will retry): %s", self.name, exc)
            return
        for rule_id in [r for r in self._rules if r not in rules or rules[r] != self._rules[r]]:
            self._unwatch(rule_id)
        for rule_id, rule in rules.items():
            if rule_id not in self._rules:
                self._watch(rule)

    def _watch(self, rule: WatchRule) -> None:
        from watchdog.events import FileSystemEventHandler

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                watcher._on_event(rule.id, event)

        try:
            handler = Handler()
            handle = self._observer.schedule(handler, str(rule.folder), recursive=rule.recursive)
        except OSError as exc:  # the folder went away: the next reload tries again
            self.status["errors"][rule.name] = f"cannot watch {rule.folder}: {exc}"
            log.warning("%s: rule %s: cannot watch %s (will retry): %s", self.name, rule.name, rule.folder, exc)
            return
        self.status["errors"].pop(rule.name, None)
        self._rules[rule.id] = rule
        self._watches[rule.id] = (handle, handler)
        self._scan(rule)

    def _unwatch(self, rule_id: int) -> None:
        watch = self._watches.pop(rule_id, None)
        self._rules.pop(rule_id, None)
        if watch is not None:
            handle, handler = watch
            # Rules on the same folder share one watchdog watch: drop only this rule's handler then.
            try:
                if any(other == handle for other, _ in self._watches.values()):
                    self._observer.remove_handler_for_watch(handler, handle)
                else:
                    self._observer.unschedule(handle)
            except (KeyError, OSError):
                pass
        self._pending = {k: v for k, v in self._pending.items() if k[0] != rule_id}
        self._ready.pop(rule_id, None)

    def _scan(self, rule: WatchRule) -> None:
        """Every file already there counts as touched at its modification time."""
        now_mono, now_wall = time.monotonic(), time.time()
        found = 0
        for path, _ in files_in(rule):
            sig = _signature(path)
            if sig is None:
                continue
            age = max(0.0, now_wall - sig[1] / 1e9)
            self._pending[(rule.id, path)] = _Pending(now_mono - age, sig)
            found += 1
        if found:
            log.info("%s: rule %s: %d file(s) found in %s", self.name, rule.name, found, rule.folder)

    # -- files ------------------------------------------------------------------------------

    def _relative(self, rule: WatchRule, path: str) -> PurePosixPath | None:
        try:
            rel = PurePosixPath(Path(path).relative_to(rule.folder).as_posix())
        except ValueError:
            return None
        return rel if wanted(rel, rule) else None

    def _drain(self) -> None:
        now = time.monotonic()
        while True:
            try:
                rule_id, kind, src, dest = self._events.get_nowait()
            except queue.Empty:
                return
            rule = self._rules.get(rule_id)
            if rule is None:
                continue
            if kind == "moved":
                self._pending.pop((rule_id, src), None)
                src, kind = dest, "closed"  # renamed into place: complete (if it is one of ours)
            if kind == "deleted":
                self._pending.pop((rule_id, src), None)
                continue
            rel = self._relative(rule, src)
            if rel is None:
                continue
            if kind == "closed":
                if _signature(src) is not None:
                    self._pending.pop((rule_id, src), None)
                    self._ready.setdefault(rule_id, {}).setdefault(str(rel), 0.0)
            else:
                self._pending[(rule_id, src)] = _Pending(now, _signature(src))

    def _settle(self) -> None:
        """Files no event touched for their rule's ``settle_s``, unchanged meanwhile, are complete."""
        now = time.monotonic()
        for key, entry in list(self._pending.items()):
            rule = self._rules.get(key[0])
            if rule is None:
                del self._pending[key]
                continue
            if now - entry.last < rule.settle_s:
                continue
            sig = _signature(key[1])
            if sig is None:
                del self._pending[key]  # gone, or not a regular file
            elif sig == entry.sig:
                del self._pending[key]
                rel = self._relative(rule, key[1])
                if rel is not None:
                    self._ready.setdefault(key[0], {}).setdefault(str(rel), 0.0)
            else:  # it changed without telling us: wait a full settle time from now
                entry.last, entry.sig = now, sig

    def _flush(self) -> None:
        now = time.monotonic()
        for rule_id, files in list(self._ready.items()):
            rule = self._rules.get(rule_id)
            due = [rel for rel, not_before in files.items() if not_before <= now]
            if rule is None or not due:
                continue
            for start in range(0, len(due), self.batch):
                chunk = due[start : start + self.batch]
                try:
                    self.delivered += self.deliver(rule, chunk)
                    self.status["errors"].pop(rule.name, None)
                except Exception as exc:  # kept and tried again: nothing was recorded
                    self.status["errors"][rule.name] = f"{type(exc).__name__}: {exc}"
                    log.warning("%s: rule %s: %d file(s) not recorded (will retry in %g s): %s", self.name, rule.name,
                                len(chunk), RETRY_S, exc)  # fmt: skip
                    for rel in due[start:]:
                        files[rel] = now + RETRY_S
                    break
                for rel in chunk:
                    del files[rel]
            if not files:
                del self._ready[rule_id]
