"""Training logs (``--report-to``) through accelerate's trackers: TensorBoard or Weights &
Biases, each run in its own ``OUTPUT/logs/<date-time>/`` (a resumed or replacing run adds a
run beside the earlier ones; a replacing run that fails before its first checkpoint takes
its folder away, leaving the output folder as it was).

Each step logs the loss (and the prior loss), the learning rate, the gradient norm before
clipping and the step's seconds; each validation round its samples (TensorBoard: animated
GIFs in the image panel, and the contact sheet; W&B: the mp4s). TensorBoard is the default when it is installed (``pip install
customcrafter[logs]``), nothing otherwise; nothing leaves the machine unless ``wandb`` is
asked for.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError
from ..io.video import read_video

REPORT_TO = ("tensorboard", "wandb", "none")


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


def start(accelerator, settings: dict) -> Path | None:
    """Open the run's trackers (main process), its settings recorded as hyperparameters;
    returns the run's log folder."""
    if not accelerator.log_with:
        return None
    name, n = time.strftime("%Y%m%d-%H%M%S"), 1
    while (Path(accelerator.logging_dir) / name).exists():  # two runs in one second
        n += 1
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings.items()}
    accelerator.init_trackers(name, config=flat)
    return Path(accelerator.logging_dir) / name


def discard(accelerator, folder: Path | None) -> None:
    """Close the trackers and take the run's log folder away (a run that left nothing)."""
    end(accelerator)
    if folder is not None and accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)


def log_step(accelerator, step: int, logs: dict, lr: float, seconds: float) -> None:
    if accelerator.log_with:
        accelerator.log({**logs, "lr": lr, "step_seconds": seconds}, step=step)


def log_samples(accelerator, step: int, folder: Path) -> None:
    """A validation round: each sample as an animated GIF and the contact sheet
    (TensorBoard: its image panel plays GIFs), or the mp4s (W&B)."""
    if not accelerator.log_with or not accelerator.is_main_process:
        return
    videos = sorted(folder.glob("*.mp4"))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            writer = tracker.writer
            for i, path in enumerate(videos):
                writer.file_writer.add_summary(_gif_summary(f"samples/{i}", path), step)
            with Image.open(folder / "contact_sheet.png") as sheet:
                image = np.asarray(sheet.convert("RGB"))
            writer.add_image("samples/contact_sheet", image, step, dataformats="HWC")
            writer.flush()
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"samples": [wandb.Video(str(p)) for p in videos]}, step=step)


def _gif_summary(tag: str, video: Path):
    """An image summary holding ``video`` as an animated GIF (what TensorBoard plays)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    frames = read_video(video)
    buffer = io.BytesIO()
    images = [Image.fromarray(f) for f in frames]
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=125,
                   loop=0)  # fmt: skip
    h, w = frames.shape[1:3]
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=buffer.getvalue())
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def end(accelerator) -> None:
    """Close the trackers (not ``end_training``: it also ends the process group, which the
    job still needs after training)."""
    for tracker in accelerator.trackers:
        tracker.finish()
