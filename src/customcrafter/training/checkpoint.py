"""Resumable training checkpoints.

``OUTPUT/checkpoints/checkpoint-<step>/`` holds the subject module (``subject.safetensors``),
the optimizer and learning-rate scheduler states (``optimizer.pt``, ``scheduler.pt``), the
global random states (``rng.pt``; the loop draws its own randomness from (seed, step), these
are for anything else that draws from them), all tensors and numbers read back with
``weights_only=True``, and ``state.json`` (the step and the settings). A checkpoint is
written to a temporary folder and renamed into place, so an interruption never leaves a
half-written one behind.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..subject import SUBJECT_FILENAME, SpatialSubjectModule

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"checkpoint-(\d+)")


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.fullmatch(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name).group(1)))


def find_checkpoint(output_dir: Path, spec: str) -> Path:
    """``spec`` is ``latest`` or a checkpoint folder path."""
    if spec == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise UserError(f"no checkpoint to resume from in {Path(output_dir) / CHECKPOINT_DIR}")
        return found[-1]
    path = Path(spec)
    if not (path / "state.json").is_file():
        raise UserError(f"{path} is not a training checkpoint (no state.json)")
    return path


def save_checkpoint(
    output_dir: Path,
    step: int,
    subject: SpatialSubjectModule,
    optimizer,
    lr_scheduler,
    settings: dict,
    total_limit: int | None = None,
) -> Path:
    root = Path(output_dir) / CHECKPOINT_DIR
    final = root / f"checkpoint-{step}"
    tmp = root / f".checkpoint-{step}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    subject.save(tmp / SUBJECT_FILENAME, training=settings)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(_rng_states(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "settings": settings}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if total_limit:
        for old in list_checkpoints(output_dir)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, subject: SpatialSubjectModule, optimizer, lr_scheduler) -> int:
    """Restore the module, optimizer and scheduler from ``path``; return its step."""
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    subject.load_lora_state_dict(load_file(str(path / SUBJECT_FILENAME)))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    lr_scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if (path / "rng.pt").is_file():
        _restore_rng_states(torch.load(path / "rng.pt", weights_only=True))
    return int(state["step"])


def _rng_states() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def _restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
