"""Writing files so that readers never see a half-written one."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UserError


def _file_mode() -> int:
    """The permissions a new file gets from the process's umask (0644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick a format
    from it still work). When the block succeeds the file replaces ``path`` with the usual
    permissions (whatever the writer gave the temporary file); when it fails the temporary
    file is removed and ``path`` is left as it was. The temporary name holds the process id:
    two processes writing the same file (the same settings, from several GPUs) never write
    into one temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise disk_full(path, tmp) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


#: what the system says when a disk (or the user's quota on it) is full
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: str | Path, partial: str | Path | None = None) -> UserError:
    """The error for a write of ``path`` that filled its disk: how much it had written
    (``partial``, the file being written) and how much is free."""
    path = Path(path)
    written = Path(partial).stat().st_size if partial and Path(partial).exists() else 0
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(folder).free
    need = f"it needs more than the {_size(written)} written" if written else "it needs more"
    return UserError(
        f"could not write {path}: No space left on device ({need}; {_size(free)} free "
        "there): free some space and run the command again; nothing earlier was changed"
    )


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            break
        count /= 1024
    return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"


def slug(text: str, limit: int | None = None, empty: str = "") -> str:
    """``text`` as a file-name part: lower case, every run of other characters one ``-``, at
    most ``limit`` characters; ``empty`` when nothing is left."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or empty


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2))


def check_writable(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove a file can be written in it, before any work
    whose result would go there; a ``UserError`` says why not."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"the {what} {folder} is a file, not a folder; give another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UserError(f"cannot write to the {what} {folder}: {exc.strerror or exc}") from None
    return folder


def check_output_file(
    path: str | Path,
    overwrite: bool,
    suffixes: tuple[str, ...],
    reads: tuple[str | Path, ...] = (),
    what: str = "output",
) -> Path:
    """Check, before any work, that ``path`` can be written: its suffix is one of
    ``suffixes``, it is not a folder, it replaces an existing file only with ``overwrite``,
    it is none of the files the command ``reads``, and its folder is writable."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"the {what} {path} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"the {what} {path} is a folder, not a file name")
    if path.exists():
        if any(Path(r).exists() and path.samefile(r) for r in reads):
            raise UserError(
                f"the {what} {path} is a file this command reads; write to another file"
            )
        if not overwrite:
            raise UserError(f"{path} already exists; pass --overwrite to replace it")
    check_writable(path.parent, f"{what}'s folder")
    return path
