"""Writing files so that readers never see a half-written one."""

from __future__ import annotations

import json
import os
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
    file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


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
