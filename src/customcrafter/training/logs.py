"""Training logs (``--report-to``) through accelerate's trackers: TensorBoard or Weights &
Biases, written under ``OUTPUT/logs``.

Each step logs the loss (and the prior loss), the learning rate, the gradient norm before
clipping and the step's seconds; each validation round its contact sheet (TensorBoard) or
its videos (W&B). TensorBoard is the default when it is installed (``pip install
customcrafter[logs]``), nothing otherwise; nothing leaves the machine unless ``wandb`` is
asked for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import UserError

REPORT_TO = ("tensorboard", "wandb", "none")
PROJECT = "customcrafter"


def tracker_of(report_to: str | None) -> str | None:
    """accelerate's ``log_with`` for ``--report-to`` (``None``: TensorBoard when installed)."""
    if report_to is None:
        return "tensorboard" if _installed("tensorboard") else None
    if report_to == "none":
        return None
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}[report_to]
    if not _installed(package):
        raise UserError(
            f"--report-to {report_to} needs the {package} package: pip install {package} "
            "(or --report-to none)"
        )
    return report_to


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def logging_dir(out: Path) -> Path:
    return Path(out) / "logs"


def start(accelerator, settings: dict) -> None:
    """Open the run's trackers (main process), its settings recorded as hyperparameters."""
    if accelerator.log_with:
        flat = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings.items()
        }
        accelerator.init_trackers(PROJECT, config=flat)


def log_step(accelerator, step: int, logs: dict, lr: float, seconds: float) -> None:
    if accelerator.log_with:
        accelerator.log({**logs, "lr": lr, "step_seconds": seconds}, step=step)


def log_samples(accelerator, step: int, folder: Path) -> None:
    """A validation round: its contact sheet (TensorBoard) or its videos (W&B)."""
    if not accelerator.log_with or not accelerator.is_main_process:
        return
    from PIL import Image

    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            with Image.open(folder / "contact_sheet.png") as sheet:
                image = np.asarray(sheet.convert("RGB"))
            tracker.writer.add_image("samples", image, step, dataformats="HWC")
            tracker.writer.flush()
        elif tracker.name == "wandb":
            import wandb

            videos = [wandb.Video(str(p)) for p in sorted(folder.glob("*.mp4"))]
            tracker.log({"samples": videos}, step=step)


def end(accelerator) -> None:
    if accelerator.log_with:
        accelerator.end_training()
