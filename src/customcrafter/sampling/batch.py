"""Many videos, over as many processes as ``accelerate launch`` starts: ``generate --prompts
FILE --seeds 0,1,2 --output-dir DIR``.

The (prompt, seed) pairs are split across the processes (accelerate's
``split_between_processes``); each process writes its own videos into ``DIR`` and a part of
the manifest, and the main process joins the parts into ``DIR/manifest.json`` once all are
done: one object per video with its ``prompt``, ``seed``, ``file`` (relative to ``DIR``) and
the settings. A video depends only on its prompt, seed and settings, so the same pair gives
the same video whatever the number of processes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..errors import UserError
from ..io.files import check_writable, slug, write_json
from ..io.video import write_video
from ..processes import state as processes

MANIFEST = "manifest.json"


def read_prompts(path: str | Path) -> list[str]:
    """One prompt a line; blank lines and lines starting with ``#`` are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the prompts file {path}: {exc}") from None
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise UserError(f"{path} holds no prompt (one a line)")
    return prompts


def video_name(index: int, prompt: str, seed: int) -> str:
    return f"{index:03d}-{slug(prompt, 48, 'prompt')}-seed{seed}.mp4"


def plan_videos(prompts: list[str], seeds: list[int], out: Path, overwrite: bool) -> list[dict]:
    """Every (prompt, seed) pair with its file, checked before any work: ``out`` writable,
    and no video or manifest there replaced without ``overwrite``."""
    check_writable(out, "--output-dir")
    jobs = [
        {"index": i, "prompt": p, "seed": s, "file": video_name(i, p, s)}
        for i, p in enumerate(prompts)
        for s in seeds
    ]
    if not overwrite:
        taken = [j["file"] for j in jobs if (out / j["file"]).exists()]
        taken += [MANIFEST] if (out / MANIFEST).exists() else []
        if taken:
            raise UserError(
                f"{out} already holds {', '.join(taken[:3])}; pass --overwrite to replace them"
            )
    return jobs


def generate_many(pipe, jobs: list[dict], out: Path, schedule, sample, settings: dict,
                  fold_lora: bool = True, progress: bool = True) -> Path | None:  # fmt: skip
    """This process's share of ``jobs``, then (main process) the manifest; returns its
    path on the main process."""
    state = processes()
    written = []
    with state.split_between_processes(jobs) as mine:
        for job in mine:
            config = dataclasses.replace(sample, seed=job["seed"])
            result = pipe(job["prompt"], schedule=schedule, config=config,
                          fold_lora=fold_lora, progress=progress)  # fmt: skip
            write_video(out / job["file"], result.videos[0], result.fps, **result.sound(0))
            written.append({**job, "settings": settings})
    part = out / f".manifest-{state.process_index}.json"
    write_json(part, written)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    entries = []
    for i in range(state.num_processes):
        path = out / f".manifest-{i}.json"
        entries += json.loads(path.read_text())
        path.unlink()
    entries.sort(key=lambda e: (e["index"], e["seed"]))
    write_json(out / MANIFEST, entries)
    return out / MANIFEST
