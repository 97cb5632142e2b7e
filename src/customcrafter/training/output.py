"""The output folder of a training run: earlier results are refused unless ``--overwrite``
says to replace them, and even then they stay in place until the new run's first
checkpoint is written (and come back if that write fails), so a run that fails early has
lost nothing."""

from __future__ import annotations

import logging
import os
import shutil
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

    EARLIER = (SUBJECT_FILENAME, CHECKPOINT_DIR, "train_config.json")

    def __init__(self, out: Path, replacing: bool, settings: dict):
        self.out, self.replacing, self.settings = out, replacing, settings
        self.started = False

    def save_checkpoint(self, step, subject, optimizer, lr_scheduler, limit) -> None:
        if self.started:
            save_checkpoint(self.out, step, subject, optimizer, lr_scheduler, self.settings, limit)
            return
        aside = self.out / PREVIOUS
        if self.replacing:
            _move(self.out, aside, self.EARLIER)
        try:
            write_json(self.out / "train_config.json", self.settings)
            save_checkpoint(self.out, step, subject, optimizer, lr_scheduler, self.settings, limit)
        except BaseException:
            if self.replacing:
                _move(aside, self.out, self.EARLIER)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        self.started = True

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
