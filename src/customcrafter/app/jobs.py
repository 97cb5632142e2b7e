"""What the app does, on the same Python API as the CLI: learn a subject, generate with it
(alone or side by side with the base model and constant weight), score a video. Nothing
here knows about the web page; ``ui.py`` calls it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..config import TrainConfig, field_kind, field_named, flag_of, split_items, split_pair
from ..errors import UserError
from ..models.plugins import lab_of
from ..prompts import find_tokens
from ..sampling.dwvs import DynamicWeightSchedule
from .workspace import Workspace

#: TrainConfig fields the Learn panel sets itself (the advanced panel holds the rest)
MAIN_FIELDS = (
    "base",
    "instance_data_dir",
    "instance_prompt",
    "class_prompt",
    "output_dir",
    "resume_from_checkpoint",
    "overwrite",
    "class_data_dir",
    "base_config",
)
#: prompts one generation takes (one a line, sampled as one batch)
MAX_PROMPTS = 8
#: the three ways the side-by-side mode samples one prompt and seed
SIDE_BY_SIDE = ("base model", "constant 1.0", "DWVS")


def advanced_fields() -> list[dataclasses.Field]:
    return [f for f in fields(TrainConfig) if f.name not in MAIN_FIELDS]


def training_defaults(base: str) -> dict[str, Any]:
    """The advanced panel's values: the paper's settings, or on a lab model its own recipe
    (on the shapes model: the paper's, scaled to a 2 M-parameter model and a CPU)."""
    values = {f.name: getattr(TrainConfig(), f.name) for f in advanced_fields()}
    lab = lab_of(base)
    if lab is not None:
        recipe = lab.recipe(next(iter(lab.subjects)), "unused")
        values.update({f.name: getattr(recipe, f.name) for f in advanced_fields()})
    return values


def parse_advanced(values: dict[str, Any]) -> dict[str, Any]:
    """The advanced panel's entries (text from the page) as TrainConfig values: an empty
    entry is ``None`` where the setting takes it and left out (its default) where not, a
    list is comma-separated, a dict ``KEY=VALUE, ...``."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for name, value in values.items():
        kind = field_kind(hints[name])
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                if type(None) not in typing.get_args(hints[name]):
                    continue
                value = None
            elif kind is list and field_named(TrainConfig, name).metadata.get("repeat"):
                value = [line.strip() for line in value.splitlines() if line.strip()]
            elif kind is list:
                value = split_items(value)
            elif kind is dict:
                value = dict(split_pair(item) for item in split_items(value))
        out[name] = value
    return out


@dataclass(frozen=True)
class Control:
    """One weight-schedule setting as the Generate panel shows it: a ``slider`` (from
    ``minimum`` to ``maximum`` in ``step``), a ``number`` (empty: not set) or a
    ``checkbox``; ``paper`` says whether it is one of the paper's three."""

    name: str
    kind: str
    default: Any
    label: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    paper: bool = True


def schedule_controls(schedule: type = DynamicWeightSchedule) -> list[Control]:
    """The Generate panel's controls, one per setting of the weight schedule ``schedule``,
    made from its declaration (help text, default, bounds)."""
    controls, hints = [], typing.get_type_hints(schedule)
    for f in dataclasses.fields(schedule):
        meta, hint = f.metadata, hints[f.name]
        help_text = page_terms(meta["help"])
        if field_kind(hint) is bool:
            controls.append(Control(f.name, "checkbox", f.default, help_text, paper=False))
            continue
        step, top = meta.get("slider_step"), meta.get("slider_max") or meta.get("maximum")
        if top is None:  # no range to slide over: a number, empty while unset
            label = f"{f.name}: {help_text} (empty: not used)"
            controls.append(Control(f.name, "number", f.default, label, paper=False))
            continue
        step = step or (1 if field_kind(hint) is int else None)
        label = f"{f.name}: {help_text} (paper {f.default})"
        controls.append(Control(f.name, "slider", f.default, label, meta["minimum"], top, step))
    return controls


def schedule_settings(values: dict[str, Any], schedule: type = DynamicWeightSchedule) -> dict:
    """The page's values of the weight schedule's settings as it takes them: whole numbers
    for its integer settings (a slider gives 5.0), an empty number left out."""
    hints = typing.get_type_hints(schedule)
    out = {}
    for name, value in values.items():
        if value is None or value == "":
            continue
        out[name] = int(value) if field_kind(hints[name]) is int else value
    return out


def page_terms(message: str) -> str:
    """A text's command-line flags as the page names its settings: a weight-schedule flag
    by its setting's name (``--lambda-s`` -> ``lambda_s``), any other in words
    (``--learning-rate`` -> ``learning rate``)."""
    for f in dataclasses.fields(DynamicWeightSchedule):
        message = re.sub(re.escape(flag_of(f)) + r"\b", f.name, message)
    return re.sub(r"--([a-z0-9-]+)", lambda m: m.group(1).replace("-", " "), message)


def _one_at_a_time(job):
    """``job`` runs once the session's device is free (``AppSession.busy``)."""

    @functools.wraps(job)
    def run(self, *args, **kwargs):
        with self.busy:
            return job(self, *args, **kwargs)

    return run


class TrainingStoppedByUser(UserError):
    pass


@dataclass
class Generated:
    """One generation: ``videos`` ``[(way, prompt index, mp4, gif)]``, the module's weight at
    each step of each way and their curve as a PNG."""

    videos: list[tuple[str, int, Path, Path]]
    curve: Path
    weights: dict[str, list[float]]
    prompts: list[str]


class AppSession:
    """The app's state: its folder, its base model, one cached pipeline."""

    def __init__(
        self,
        workspace: Workspace,
        base: str = "shapes",
        device: str | None = None,
        clip: str | None = None,
        dino: str | None = None,
    ):
        self.workspace = workspace
        self.base = base
        self.device = device
        self.clip, self.dino = clip, dino
        self._pipe = None
        self._pipe_key = None
        self.stop_requested = threading.Event()
        #: held by the job that uses the device: a job waits for the one before it to end
        #: (a stopped training ends at its next step, after writing a checkpoint)
        self.busy = threading.Lock()

    # --- learn -------------------------------------------------------------------------------
    @_one_at_a_time
    def learn(
        self,
        name: str,
        photos: list[str | Path] | None,
        instance_prompt: str,
        class_prompt: str,
        advanced: dict[str, Any],
        on_step: Callable[[int, int, dict], None] | None = None,
        retrain: bool = False,
    ) -> str:
        """Learn subject ``name`` from ``photos`` (or the photos already in its folder);
        resumes a stopped run. Returns what happened, for the page."""
        folder = self.workspace.subject_dir(name)
        entry = next((e for e in self.workspace.subjects() if e.name == folder.name), None)
        if entry is not None and entry.state == "learnt" and not retrain:
            raise UserError(
                f"subject {name!r} is already learnt ({entry.step} steps, {entry.words}): "
                "generate with it, or tick 'train again' to replace it"
            )
        if entry is not None and entry.state == "damaged" and not retrain:
            raise UserError(
                f"subject {name!r} has a damaged subject file ({entry.words}); tick 'train "
                "again' to learn it anew"
            )
        # a stopped run resumes with the photos it started with, unless told to start over
        resume = entry is not None and entry.state == "stopped" and not retrain
        settings = parse_advanced(advanced)
        # every setting checked before a photo is written
        config = self._config(folder, instance_prompt, class_prompt, settings, resume)
        if photos and not resume:
            self.workspace.save_photos(name, photos)
        elif not (folder / "photos").is_dir():
            raise UserError(f"upload 3 to 10 photos of {name!r} (or pick a bundled subject)")
        self.stop_requested.clear()
        self._release()  # training loads its own copy of the base model
        total = config.max_train_steps

        def callback(step: int, total_steps: int, logs: dict) -> bool:
            if on_step is not None:
                on_step(step, total_steps, logs)
            return self.stop_requested.is_set()

        from ..training import TrainingInterrupted, train

        try:
            path = train(config, progress=False, callback=callback)
        except TrainingInterrupted as exc:
            how = "press Learn again to resume (tick 'train again' to start over)"
            message = str(exc).replace("resume with --resume-from-checkpoint latest", how)
            raise TrainingStoppedByUser(message) from None
        how = "resumed (with the photos it started with) and finished" if resume else "learnt"
        return f"{name}: {how} in {total} steps; the module is {path}"

    def _config(self, folder, instance_prompt, class_prompt, settings, resume) -> TrainConfig:
        config = TrainConfig(
            base=self.base,
            instance_data_dir=str(folder / "photos"),
            instance_prompt=instance_prompt,
            class_prompt=class_prompt,
            output_dir=str(folder),
            resume_from_checkpoint="latest" if resume else None,
            overwrite=not resume,
            **settings,
        )
        config.validate()
        return config

    def _release(self) -> None:
        import gc

        import torch

        self._pipe, self._pipe_key = None, None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def stop(self) -> None:
        self.stop_requested.set()

    # --- generate ------------------------------------------------------------------------------
    def pipeline(self, subject: str):
        from ..sampling import CustomCrafterPipeline

        entry = self.workspace.entry(subject)
        if entry.state != "learnt":
            raise UserError(f"subject {subject!r} is not learnt yet; finish its training first")
        key = (str(entry.path), entry.path.stat().st_mtime_ns)
        if key != self._pipe_key:
            self._release()  # one model in memory at a time
            self._pipe = CustomCrafterPipeline.from_pretrained(
                subject=entry.path, device=self.device
            )
            self._pipe_key = key
        return self._pipe

    @_one_at_a_time
    def generate(
        self,
        subject: str,
        prompt: str,
        *weights: float,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        side_by_side: bool = False,
        on_step: Callable[[int, int], None] | None = None,
        **schedule: Any,
    ) -> Generated:
        """Videos of ``prompt`` (one a line) with ``subject``, under Dynamic Weighted Video
        Sampling with ``weights`` (lambda_s, lambda_l, k in that order) and ``schedule``
        (any of its settings by name); left out, a setting is the paper's. ``side_by_side``
        adds the base model and the module at constant weight 1.0, same seed."""
        from ..io.video import write_video

        pipe = self.pipeline(subject)
        meta = pipe.subject.metadata
        prompts = [line.strip() for line in (prompt or "").splitlines() if line.strip()]
        if not prompts:
            raise UserError("write a prompt, e.g. 'a <new1> dog running on the beach'")
        if len(prompts) > MAX_PROMPTS:
            raise UserError(
                f"at most {MAX_PROMPTS} prompts at a time (one a line); got {len(prompts)}"
            )
        unknown = [t for p in prompts for t in find_tokens(p) if t not in meta.tokens]
        if unknown:
            known = ", ".join(meta.words)
            raise UserError(
                f"the prompt uses {', '.join(unknown)}, which subject {subject!r} does not "
                f"know; it is named {known} (e.g. 'a {meta.words[0]} ...')"
            )
        dwvs = DynamicWeightSchedule(*weights, **schedule)
        ways = [("DWVS", dwvs, prompts)]
        if side_by_side:
            base = [pipe.base_prompt(p) for p in prompts]
            ways = [
                ("base model", DynamicWeightSchedule.off(), base),
                ("constant 1.0", DynamicWeightSchedule.constant(1.0), prompts),
                ("DWVS", dwvs, prompts),
            ]
        settings: dict[str, Any] = {"seed": int(seed)}
        if steps is not None:
            settings["num_inference_steps"] = int(steps)
        if guidance is not None:
            settings["guidance_scale"] = float(guidance)
        sampler = pipe.model.make_sampler()  # some take a step more than asked for
        sampler.set_timesteps(int(steps or pipe.model.defaults.num_inference_steps))
        total = len(ways) * len(sampler.timesteps)
        done = 0

        def callback(i, t, weight):
            if on_step is not None:
                on_step(done + i + 1, total)

        videos, weights = [], {}
        for label, schedule, texts in ways:  # all prompts of a way in one batch
            out = pipe(texts, schedule=schedule, progress=False, callback=callback, **settings)
            done += len(out.weights)
            for index, (text, video) in enumerate(zip(texts, out.videos, strict=True)):
                stem = self.workspace.new_video_stem(f"{subject}-{index}-{label}")
                mp4 = write_video(stem.with_suffix(".mp4"), video, fps=out.fps, **out.sound(index))
                gif = write_video(stem.with_suffix(".gif"), video, fps=out.fps)
                self.workspace.record(
                    stem,
                    {
                        "subject": subject,
                        "way": label,
                        "prompt": text,
                        **dwvs.record(),
                        **settings,
                        "weights": out.weights,
                    },
                )
                videos.append((label, index, mp4, gif))
            weights[label] = out.weights
        curve = plot_weights(weights, stem.with_name(stem.name + "-weights.png"))
        return Generated(videos, curve, weights, prompts)

    # --- score ---------------------------------------------------------------------------------
    @_one_at_a_time
    def score(self, video: str | Path, subject: str | None = None) -> dict[str, Any]:
        """The paper's metrics the app has models for (CLIP with ``--clip``, DINO with
        ``--dino``; motion always) and, on a lab model, its detectors' reading."""
        import numpy as np

        from ..evaluation.metrics import ClipScorer, DinoScorer, evaluate_video
        from ..io.images import list_images, load_image
        from ..io.video import read_video

        video = Path(video)
        if not video.is_file():
            raise UserError(f"no video {video}; generate one first")
        frames = read_video(video)
        settings = self.workspace.settings_of(video)
        subject = subject or settings.get("subject")
        prompt = settings.get("prompt", "")
        references, identifier = None, None
        if subject:
            entry = self.workspace.entry(subject)
            size = (frames.shape[2], frames.shape[1])
            references = [
                np.asarray(load_image(p).resize(size))
                for p in list_images(entry.folder / "photos", "photo")
            ]
            if entry.state == "learnt":
                from ..subject import read_metadata

                identifier = read_metadata(entry.path).identifier
        clip = ClipScorer.from_pretrained(self.clip) if self.clip else None
        dino = DinoScorer.from_pretrained(self.dino) if self.dino else None
        scores = evaluate_video(
            frames, prompt, references, clip=clip, dino=dino, identifier=identifier
        )
        out = {k: v for k, v in dataclasses.asdict(scores).items() if v is not None}
        lab = lab_of(self.base) or lab_of(settings.get("base"))
        if lab is not None:
            reading = lab.score_clip(frames, prompt, references).as_row()
            out.update({f"{lab.name} {k}": v for k, v in reading.items()})
        return {"video": video.name, "prompt": prompt, **out}


def plot_weights(weights: dict[str, list[float]], path: Path) -> Path:
    """The subject module's weight at each step of each way, as a PNG."""
    from ..io.files import atomic_path
    from ..probe.plot import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.2))
    styles = {"base model": ":", "constant 1.0": "--", "DWVS": "-"}
    for label, values in weights.items():
        ax.step(range(len(values)), values, where="post", label=label, ls=styles.get(label, "-"))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("sampling step")
    ax.set_ylabel("module weight")
    ax.set_ylim(-0.05, max(1.0, max(max(v) for v in weights.values())) + 0.15)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
