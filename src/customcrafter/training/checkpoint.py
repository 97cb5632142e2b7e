"""Resumable training checkpoints.

``OUTPUT/checkpoints/checkpoint-<step>/`` holds the subject module (``subject.safetensors``),
the optimizer and learning-rate scheduler states (``optimizer.pt``, ``scheduler.pt``), the
global random states (``rng.pt``; the loop draws its own randomness from (seed, step), these
are for anything else that draws from them), all tensors and numbers read back with
``weights_only=True``, and ``state.json`` (the step, the settings and the number of
processes that wrote it: a run goes on from it on another number of processes as long as
each step still averages the same micro-batches, processes x accumulation). A checkpoint is
written to a temporary folder and renamed into place, so an interruption never leaves a
half-written one behind.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..errors import UserError
from ..io.files import NO_SPACE, disk_full
from ..subject import SUBJECT_FILENAME, SpatialSubjectModule

logger = logging.getLogger(__name__)

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
    """``spec`` is ``latest`` (the newest intact checkpoint: a damaged one is skipped with a
    warning that names it) or a checkpoint folder path."""
    if spec == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise UserError(f"no checkpoint to resume from in {Path(output_dir) / CHECKPOINT_DIR}")
        for path in reversed(found):
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            logger.warning("checkpoint %s is damaged (%s); trying the one before it", path, problem)
        raise UserError(
            f"every checkpoint in {Path(output_dir) / CHECKPOINT_DIR} is damaged (the oldest: "
            f"{checkpoint_problem(found[0])}); start again with --overwrite"
        )
    path = Path(spec)
    if not (path / "state.json").is_file():
        raise UserError(f"{path} is not a training checkpoint (no state.json)")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise UserError(
            f"checkpoint {path} is damaged ({problem}); resume from another one "
            "(--resume-from-checkpoint latest takes the newest intact one)"
        )
    return path


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with the checkpoint folder ``path``, or ``None`` when every file reads."""
    try:
        state = json.loads((path / "state.json").read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            return "state.json holds no step"
        load_file(str(path / SUBJECT_FILENAME))
        for name in ("optimizer.pt", "scheduler.pt"):
            if not isinstance(torch.load(path / name, weights_only=True), dict):
                return f"{name} holds no state"
        if (path / "rng.pt").is_file():
            torch.load(path / "rng.pt", weights_only=True)
    except FileNotFoundError as exc:
        return f"{Path(exc.filename).name} is missing"
    except Exception as exc:  # noqa: BLE001 - whatever fails to read makes it damaged
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
    return None


def save_checkpoint(
    output_dir: Path,
    step: int,
    subject: SpatialSubjectModule,
    optimizer,
    lr_scheduler,
    settings: dict,
    total_limit: int | None = None,
    inputs: dict | None = None,
    processes: int = 1,
) -> Path:
    """Write ``checkpoint-<step>`` atomically; a failed write (a full disk) leaves nothing
    behind and says so. ``inputs``: what the run learns from (a fingerprint of the photos),
    checked when it resumes; ``processes``: how many processes train."""
    root = Path(output_dir) / CHECKPOINT_DIR
    final = root / f"checkpoint-{step}"
    tmp = root / f".checkpoint-{step}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        subject.save(tmp / SUBJECT_FILENAME, training=settings)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(_rng_states(), tmp / "rng.pt")
        state = {"step": step, "settings": settings, "inputs": inputs or {}}
        state["processes"] = processes
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as exc:  # nothing half-written stays, whatever stopped the write
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            raise disk_full(final) from None
        if isinstance(exc, (OSError, RuntimeError)):
            raise UserError(f"could not write the checkpoint {final}: {exc}") from None
        raise
    if total_limit:
        for old in list_checkpoints(output_dir)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: Path, subject: SpatialSubjectModule | None, optimizer, lr_scheduler, shard=None
) -> int:
    """Restore the module, optimizer and scheduler from ``path``; return its step.
    ``subject`` ``None``: its tensors are loaded already (before the weights were
    sharded); ``shard(state)``: the optimizer state as its sharded parameters hold it."""
    try:
        state = json.loads((path / "state.json").read_text())
        if subject is not None:
            subject.load_lora_state_dict(load_file(str(path / SUBJECT_FILENAME)))
        saved = torch.load(path / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(shard(saved) if shard is not None else saved)
        lr_scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        if (path / "rng.pt").is_file():
            _restore_rng_states(torch.load(path / "rng.pt", weights_only=True))
    except UserError as exc:
        raise UserError(f"checkpoint {path} does not fit this run: {exc}") from None
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"checkpoint {path} does not fit this run ({exc}); resume from another one or "
            "start again with --overwrite"
        ) from None
    return int(state["step"])


#: settings a resumed run may change: how long it runs, how it keeps checkpoints, where its
#: files are and how it fits in memory
CHANGE_ON_RESUME = (
    "max_train_steps",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "resume_from_checkpoint",
    "overwrite",
    "instance_data_dir",
    "class_data_dir",
    "output_dir",
    "base_config",
    "vae_chunk_size",
    "offload_blocks",
    "fsdp",
    "validation_prompts",
    "validation_steps",
    "validation_inference_steps",
    "validation_num_frames",
    "report_to",
    "gradient_accumulation_steps",  # as long as processes x accumulation stays (checked)
)


def check_resume(
    path: Path, settings: dict, inputs: dict, max_train_steps: int, processes: int = 1
) -> None:
    """Refuse to resume from the checkpoint ``path`` a run that would not continue it: one
    whose settings (but those in ``CHANGE_ON_RESUME``) or photos differ from the
    checkpoint's, whose ``max_train_steps`` lies before the checkpoint's step, or whose
    ``processes`` x ``gradient_accumulation_steps`` (the micro-batches a step averages)
    differs from the checkpoint's."""
    state = json.loads((path / "state.json").read_text())
    _check_micro_batches(path, state, settings, processes)
    step, stored = int(state["step"]), json.loads(json.dumps(state.get("settings", {})))
    if step > max_train_steps:
        raise UserError(
            f"{path} is at step {step}, beyond --max-train-steps {max_train_steps}: give "
            f"--max-train-steps {step} or more to go on from it, or start over with --overwrite"
        )
    now = json.loads(json.dumps(settings))
    changed = [k for k in now if k not in CHANGE_ON_RESUME and k in stored and stored[k] != now[k]]
    if changed:
        what = ", ".join(f"{k} {stored[k]!r} -> {now[k]!r}" for k in changed)
        raise UserError(
            f"resuming from {path} with other settings than it was trained with ({what}): "
            "resume with the same settings, or start over with --overwrite"
        )
    if state.get("inputs") and state["inputs"] != inputs:
        raise UserError(
            f"the photos in --instance-data-dir changed since {path} was written: resume with "
            "the photos it started with, or start over with --overwrite"
        )


def _check_micro_batches(path: Path, state: dict, settings: dict, processes: int) -> None:
    """The micro-batch ``g`` of step ``s`` is drawn from (seed, s, g) whichever process
    takes it: N processes with accumulation A run the run one process with N x A runs, and
    a checkpoint goes on under any split of the same product."""
    stored = state.get("settings", {}).get("gradient_accumulation_steps")
    if stored is None or "gradient_accumulation_steps" not in settings:
        return
    then = int(state.get("processes", 1))
    before, now = then * int(stored), processes * int(settings["gradient_accumulation_steps"])
    if before == now:
        return
    fits = f"--gradient-accumulation-steps {before // processes}" if before % processes == 0 else ""
    how = (
        f"on {processes} process{'es' if processes > 1 else ''} give {fits}"
        if fits
        else f"run it on a number of processes that divides {before}"
    )
    raise UserError(
        f"{path} was written by {then} process{'es' if then > 1 else ''} with "
        f"--gradient-accumulation-steps {stored} ({before} micro-batches a step); this run "
        f"would average {now}: to go on from it, {how}, or start over with --overwrite"
    )


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
