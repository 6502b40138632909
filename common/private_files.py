"""Files that hold secrets (tokens, private keys): written owner-only, refused when others can read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from balsam.errors import BalsamError


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from the first byte (never briefly readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a leftover tmp file
    tmp.replace(path)


def check_private(path: Path) -> None:
    """Refuse a secret file that its group or others can read or write, saying how to fix it."""
    path = Path(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BalsamError(
            f"{path} holds a secret but is accessible to others (mode {stat.S_IMODE(mode):o}); "
            f"refusing to use it: run `chmod 600 {path}`"
        )


def read_private(path: Path) -> str:
    """The text of a secret file, after ``check_private``."""
    check_private(path)
    return Path(path).read_text()
