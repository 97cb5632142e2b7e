"""The benchmark runner: train the subject modules a spec needs, generate every video, score
it and write the reports, keeping everything on disk so that a run can be interrupted and
started again.

Under ``accelerate launch`` (or ``torchrun``) the work is spread over the processes: the
missing subject modules one process each (every one trained as on a single process), the
missing videos in equal shares (a video depends only on its method, prompt and seed); the
main process scores them and writes the reports once all are done. The files are the same
whatever the number of processes, so a run cut short on four processes goes on on one.

Layout of the output folder (every file written atomically)::

    subjects/<method>/<subject>/subject.safetensors   trained modules (checkpoints resume)
    videos/<method>/settings.json                     what the videos were made with
    videos/<method>/<subject>/<prompt-index>-seed<seed>.mp4
    cache/metrics.jsonl                               one JSON line per scored video
    per_video.csv, summary.csv, summary.md, charts/<metric>.png|svg, index.html
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import training
from ..config import default_device
from ..errors import UserError
from ..io.files import check_writable, write_json
from ..io.video import read_video, write_video
from ..processes import alone
from ..processes import device as process_device
from ..processes import state as processes
from ..sampling import CustomCrafterPipeline
from ..subject import SUBJECT_FILENAME
from ..training.checkpoint import list_checkpoints
from .cache import (
    CACHE_FILE,
    MetricsCache,
    check_method_settings,
    check_trained_settings,
    file_hash,
    json_roundtrip,
)
from .overrides import unset_message, unset_variables
from .report import check_report_libraries, write_reports
from .scoring import Scorers, group_settings, references_fingerprint, score_group
from .spec import BenchmarkSpec, MethodSpec, SubjectSpec, VideoJob
from .training import train_config


@dataclass
class RunStats:
    """What one run did (``last_run.json``)."""

    trained: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)
    scored: list[str] = field(default_factory=list)
    gifs: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_benchmark(
    spec: BenchmarkSpec,
    device: str | None = None,
    progress: bool = True,
    dtype: torch.dtype | None = None,
) -> Path:
    """Train what is missing, generate what is missing, score what is unscored, and write the
    reports. Returns the output folder. Safe to interrupt and run again. Under several
    processes each trains and generates its share; the main process scores and reports."""
    from accelerate.utils import gather_object

    began = time.perf_counter()
    check_report_libraries()
    group = processes()
    several = group.num_processes > 1
    device = default_device(process_device(device))
    out = Path(spec.output_dir)
    stats = RunStats()
    jobs = spec.jobs()
    missing = [job for job in jobs if not (out / job.path).is_file()]
    _check_variables(spec, missing)
    check_writable(out, "benchmark output folder")
    cache = MetricsCache(out / CACHE_FILE)
    _check_stale_prompts(spec, jobs, cache)
    for method in spec.methods:
        check_method_settings(spec, method)

    group.wait_for_everyone()  # every process listed the same files before any is written
    main = group.is_main_process
    _train_missing(spec, missing, stats, progress and main)
    _generate_missing(spec, missing, stats, device, dtype, progress and main)
    group.wait_for_everyone()
    if several:  # what every process did
        stats.trained = [name for share in gather_object([stats.trained]) for name in share]
        stats.generated = [path for share in gather_object([stats.generated]) for path in share]
    if not main:
        return out
    if spec.gif:
        _write_missing_gifs(spec, jobs, stats)
    _score(spec, jobs, cache, stats, device, progress)
    cache.compact()
    write_reports(spec, cache=cache)
    stats.seconds = round(time.perf_counter() - began, 2)
    write_json(out / "last_run.json", asdict(stats))
    return out


def _check_stale_prompts(spec: BenchmarkSpec, jobs: list[VideoJob], cache: MetricsCache) -> None:
    for job in jobs:
        record = cache.get(job.path)
        video = spec.output_dir / job.path
        if record is None or not video.is_file() or record.get("prompt") == job.prompt:
            continue
        if record.get("sha") == file_hash(video):
            raise UserError(
                f"{video} was generated for the prompt {record.get('prompt')!r}, but prompt "
                f"{job.prompt_index} of {job.subject!r} is now {job.prompt!r}. Delete "
                f"{video.parent} to regenerate, or give another --output-dir"
            )


def _check_variables(spec: BenchmarkSpec, missing: list[VideoJob]) -> None:
    """Fail before any work when a model that must be loaded names an unset variable."""
    needed = {job.method for job in missing}
    needed |= {spec.method(name).owner for name in needed if spec.method(name).owner}
    for method in spec.methods:
        if method.name in needed:
            for text in (method.base, spec.base_config):
                for name in unset_variables(text):
                    raise UserError(f"method {method.name!r}: {unset_message(name)}")


def _train_missing(spec: BenchmarkSpec, missing: list[VideoJob], stats: RunStats, progress: bool):
    needed: list[tuple[MethodSpec, SubjectSpec]] = []
    for job in missing:
        owner = spec.owner(spec.method(job.method))
        pair = (owner, spec.subject(job.subject))
        if owner is not None and pair not in needed:
            needed.append(pair)
    # a finished module is checked against its settings, whether or not videos are missing
    for owner in [m for m in spec.methods if m.module == "train"]:
        for subject in spec.subjects:
            folder = spec.module_dir(owner, subject)
            if (folder / SUBJECT_FILENAME).is_file():
                check_trained_settings(spec, owner, subject, folder)
    needed = [p for p in needed if not (spec.module_dir(*p) / SUBJECT_FILENAME).is_file()]
    group = processes()
    with group.split_between_processes(needed) as mine, alone():  # a module a process
        for owner, subject in mine:
            folder = spec.module_dir(owner, subject)
            config = train_config(spec, owner, subject)
            if folder.is_dir() and list_checkpoints(folder):
                check_trained_settings(spec, owner, subject, folder)
                config.resume_from_checkpoint = "latest"
            if progress:
                print(f"training the subject module of {owner.name!r} for {subject.name!r}")
            training.train(config, progress=progress)
            stats.trained.append(f"{owner.slug}/{subject.slug}")
            _free_memory()
    group.wait_for_everyone()  # every module is there before any video is made with it


def _generate_missing(spec, missing, stats, device, dtype, progress) -> None:
    """This process's share of the ``missing`` videos."""
    with processes().split_between_processes(missing) as mine:
        _generate(spec, mine, stats, device, dtype, progress)


def _generate(spec, missing, stats, device, dtype, progress) -> None:
    if not missing:
        return
    if dtype is None and device.startswith("cuda"):
        dtype = torch.float16  # as `customcrafter generate`; the CPU keeps the model's own
    groups: dict[tuple, list[VideoJob]] = {}
    for job in missing:
        module = spec.module_path(spec.method(job.method), spec.subject(job.subject))
        key = (spec.method(job.method).base, str(module or ""), job.subject if module else "")
        groups.setdefault(key, []).append(job)
    sampler = {k: v for k, v in spec.generation.items() if k != "save_fps"}
    bar = tqdm(total=len(missing), desc="generating", disable=not progress)
    try:
        for (base, module, _), group in groups.items():
            pipe = CustomCrafterPipeline.from_pretrained(
                base,
                module or None,
                device=device,
                dtype=dtype,
                base_config=spec.base_config,
                vae_chunk_size=spec.vae_chunk_size,
            )
            for job in group:  # one base model and one subject module (or none) per group
                method = spec.method(job.method)
                bar.set_postfix_str(f"{method.slug}/{spec.subject(job.subject).slug}")
                result = pipe(
                    job.sampled_prompt,
                    schedule=method.schedule.build(),
                    seed=job.seed,
                    progress=False,
                    **sampler,
                )
                path = spec.output_dir / job.path
                fps = spec.generation.get("save_fps") or result.fps
                write_video(path, result.videos[0], fps, **result.sound(0))
                if spec.gif:
                    write_video(path.with_suffix(".gif"), result.videos[0], fps)
                stats.generated.append(job.path)
                bar.update(1)
            del pipe
            _free_memory()
    finally:
        bar.close()


def _write_missing_gifs(spec: BenchmarkSpec, jobs: list[VideoJob], stats: RunStats) -> None:
    for job in jobs:
        path = spec.output_dir / job.path
        gif = path.with_suffix(".gif")
        if path.is_file() and not gif.is_file():
            with av.open(str(path)) as container:
                rate = container.streams.video[0].average_rate
            write_video(gif, read_video(path), max(1, round(float(rate))) if rate else 8)
            stats.gifs.append(gif.relative_to(spec.output_dir).as_posix())


def _score(spec, jobs, cache: MetricsCache, stats: RunStats, device: str, progress: bool) -> None:
    refs = {s.name: references_fingerprint(s.images) for s in spec.subjects}
    present = [job for job in jobs if (spec.output_dir / job.path).is_file()]
    scorers = Scorers(spec, device)
    bar = tqdm(total=len(present), desc="scoring", disable=not progress)
    try:
        for job in present:
            video = spec.output_dir / job.path
            sha = file_hash(video)
            wanted = group_settings(spec, refs[job.subject])
            groups = cache.current_groups(job.path, sha, wanted)
            todo = [name for name in wanted if name not in groups]
            record = cache.get(job.path)
            if todo or record is None or record.get("sha") != sha:
                frames = read_video(video)
                for name in todo:
                    values = score_group(name, frames, job, spec.subject(job.subject), scorers)
                    groups[name] = {
                        "settings": json_roundtrip(wanted[name]),
                        "values": json_roundtrip({k: _clean(v) for k, v in values.items()}),
                    }
                cache.put({**job.fields(), "sha": sha, "groups": groups})
                if todo:
                    stats.scored.append(job.path)
            bar.update(1)
    finally:
        bar.close()


def _clean(value):
    """Numbers as plain floats, NaN as None (JSON has no NaN)."""
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
