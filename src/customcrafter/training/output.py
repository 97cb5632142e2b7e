"""The output folder of a training run: earlier results are refused unless ``--overwrite``
says to replace them, and even then they stay in place until the new run's first
checkpoint is written (and come back if that write fails), so a run that fails early has
lost nothing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import TrainConfig
from ..errors import UserError
from ..io.files import check_writable, write_json
from ..subject import SUBJECT_FILENAME
from .checkpoint import CHECKPOINT_DIR, list_checkpoints, save_checkpoint

logger = logging.getLogger(__name__)


def check_output_dir(out: Path, config: TrainConfig) -> bool:
    """Refuse to touch earlier results in ``out`` unless told to; ``True`` when
    ``--overwrite`` is to replace them. They stay in place until the new run's first
    checkpoint is written (:class:`OutputFolder`), so a run that fails before has lost nothing."""
    check_writable(out, "--output-dir")
    shutil.rmtree(out / STAGING, ignore_errors=True)  # what a run killed early had staged
    has_results = (out / SUBJECT_FILENAME).exists() or bool(list_checkpoints(out))
    if (out / PREVIOUS).is_dir() and not has_results:  # a run killed while replacing them
        logger.warning("restoring the earlier results kept in %s", out / PREVIOUS)
        _move(out / PREVIOUS, out, OutputFolder.EARLIER)
        shutil.rmtree(out / PREVIOUS, ignore_errors=True)
        has_results = True
    if has_results and not config.resume_from_checkpoint:
        if not config.overwrite:
            raise UserError(
                f"{out} already holds a trained subject or checkpoints; pass "
                "--resume-from-checkpoint latest to continue, or --overwrite to start over"
            )
        return True
    return False


#: where earlier results wait, for the moment the first checkpoint of a new run is written
PREVIOUS = ".previous"
#: where a run that replaces earlier results writes its logs and samples until then
STAGING = ".run"
#: what a run writes besides its checkpoints and subject file, staged while replacing
STAGED = ("samples",)


def staged(out: Path, replacing: bool, name: str) -> Path:
    """Where a run writes ``name`` (``samples``) before its first checkpoint: in the output
    folder, or, while earlier results are still in place, beside them."""
    return out / STAGING / name if replacing else out / name


def _move(source: Path, target: Path, names: tuple[str, ...]) -> None:
    """Move the ``names`` that exist in ``source`` into ``target``, replacing what is there."""
    target.mkdir(exist_ok=True)
    for name in names:
        if (source / name).exists():
            if (target / name).is_dir():
                shutil.rmtree(target / name)
            else:
                (target / name).unlink(missing_ok=True)
            os.replace(source / name, target / name)


class OutputFolder:
    """What a run writes into its output folder besides checkpoints, and when: the earlier
    results (``--overwrite``) give way just before the first checkpoint, and come back if
    that write fails."""

    EARLIER = (SUBJECT_FILENAME, CHECKPOINT_DIR, "train_config.json", *STAGED)

    def __init__(
        self,
        out: Path,
        replacing: bool,
        settings: dict,
        inputs: dict | None = None,
        processes: int = 1,
    ):
        self.out, self.replacing, self.settings = out, replacing, settings
        self.inputs, self.processes = inputs or {}, processes
        self.started = False

    def save_checkpoint(self, step, subject, optimizer, lr_scheduler, limit) -> None:
        if self.started:
            self._save(step, subject, optimizer, lr_scheduler, limit)
            return
        aside = self.out / PREVIOUS
        if self.replacing:
            _move(self.out, aside, self.EARLIER)
        try:
            write_json(self.out / "train_config.json", self.settings)
            self._save(step, subject, optimizer, lr_scheduler, limit)
        except BaseException:
            if self.replacing:
                _move(aside, self.out, self.EARLIER)
                shutil.rmtree(self.out / STAGING, ignore_errors=True)
            raise
        if self.replacing:  # this run's logs and samples take the earlier ones' place
            _move(self.out / STAGING, self.out, STAGED)
            shutil.rmtree(self.out / STAGING, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)
        self.started = True

    def _save(self, step, subject, optimizer, lr_scheduler, limit) -> None:
        save_checkpoint(self.out, step, subject, optimizer, lr_scheduler, self.settings, limit,
                        self.inputs, self.processes)  # fmt: skip

    def path(self, name: str) -> Path:
        """Where this run writes ``name`` (``samples``) now."""
        return staged(self.out, self.replacing and not self.started, name)

    def interrupted(self, step: int) -> str:
        """What a Ctrl-C at ``step`` leaves, and how to go on."""
        done = list_checkpoints(self.out)
        if done and (self.started or not self.replacing):
            return (
                f"training interrupted at step {step}; the last checkpoint ({done[-1].name}) "
                "is intact. Run the same command with --resume-from-checkpoint latest to "
                "continue."
            )
        kept = "; the earlier results in the folder are unchanged" if self.replacing else ""
        return f"training interrupted at step {step}; no checkpoint was written yet{kept}."


#: the file that says a run is writing into the folder
LOCK = ".customcrafter.lock"


@contextmanager
def hold_output_dir(out: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``out`` for one training run: a second run into the same folder is refused at
    start, naming the first; the lock goes on every exit, and one left by a run that died
    (its process no longer runs) is named and taken over. ``enabled``: only the main
    process of a multi-process run holds it."""
    if not enabled:
        yield
        return
    check_writable(out, "--output-dir")
    lock = out / LOCK
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%c")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _refuse_or_clear(lock)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(mine, handle)
        break
    else:  # pragma: no cover - the stale lock came back between two tries
        raise UserError(f"{out} is being written by another run; give another --output-dir")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _refuse_or_clear(lock: Path) -> None:
    """Refuse when the run that holds ``lock`` still runs; remove the lock when it does not."""
    try:
        holder = json.loads(lock.read_text())
        pid, host = int(holder["pid"]), str(holder["host"])
    except (OSError, ValueError, KeyError, TypeError):
        holder, pid, host = {}, None, ""
    if pid is not None and (host != socket.gethostname() or _running(pid)):
        where = f" on {host}" if host != socket.gethostname() else ""
        raise UserError(
            f"{lock.parent} is being written by another training run (process {pid}{where}, "
            f"since {holder.get('since', '?')}); wait for it to end, or give another "
            f"--output-dir (if that run is gone, delete {lock})"
        )
    logger.warning(
        "%s was left by a run that ended without releasing it (process %s); taking it over",
        lock,
        pid if pid is not None else "unknown",
    )
    lock.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    try:  # a killed process nobody has reaped yet (a container without an init) is gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): it exists
        return True
