"""In which steps does the subject module do its harm (motion lost) and its good (the
subject's look)?

Sample the same prompts and noises with the whole module (LoRA and token) in one band of
steps only, the base model with the class word in the others, for each of ``count`` bands,
next to the base model, the module at every step, and the paper's schedule. Dynamic
Weighted Video Sampling is right for a model where the early bands take the motion and the
late bands bring the look; if a late band alone also stops the motion, no ``k`` can help.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..errors import UserError
from ..io.video import to_uint8_frames
from ..processes import spread
from ..processes import state as processes
from ..sampling import CustomCrafterPipeline, DynamicWeightSchedule
from ..sampling.dwvs import BandSchedule, WeightSchedule
from .commitment import sampler_steps
from .scoring import flow_field, wilson


@dataclass
class BandRow:
    """One way of sampling, over every prompt and noise. Shapes world: ``motion_ok`` the
    share moving as the prompt says (with its Wilson interval), ``displacement`` px/frame,
    ``similarity`` to the references. Any base: ``flow`` the mean optical-flow magnitude
    and ``flow_agreement`` the mean cosine between a clip's mean flow and the base model's
    clip of the same noise (1: the base model's motion kept)."""

    label: str
    schedule: str
    band: tuple[int, int] | None
    videos: int
    similarity: float | None = None
    motion_ok: float | None = None
    motion_low: float | None = None
    motion_high: float | None = None
    displacement: float | None = None
    flow: float | None = None
    flow_agreement: float | None = None


@dataclass
class BandResult:
    base: str
    steps: int
    prompts: list[str]
    samples: int
    seed: int
    weight: float
    rows: list[BandRow] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """A Markdown table of the rows."""
        judged = any(r.motion_ok is not None for r in self.rows)  # by a lab's detectors
        head = ["way of sampling", "videos", "subject similarity"]
        head += ["motion ok (95% CI)", "px/frame"] if judged else []
        head += ["flow px/frame", "flow agreement with base"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

        def num(value, digits=2):
            return "-" if value is None else f"{value:.{digits}f}"

        for r in self.rows:
            cells = [r.label, str(r.videos), num(r.similarity)]
            if judged:
                ok = (
                    "-"
                    if r.motion_ok is None
                    else (f"{r.motion_ok:.2f} ({r.motion_low:.2f}-{r.motion_high:.2f})")
                )
                cells += [ok, num(r.displacement)]
            cells += [num(r.flow), num(r.flow_agreement)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _paper_schedule(steps: int) -> tuple[str, DynamicWeightSchedule, None]:
    """The paper's DWVS row; on a base that samples fewer steps than the paper's ``k``, the
    switch comes before the last step."""
    paper = DynamicWeightSchedule()
    if paper.k < steps:
        return ("DWVS (paper)", paper, None)
    clamped = dataclasses.replace(paper, k=steps - 1)
    return (f"DWVS (paper, k {clamped.k} of {steps} steps)", clamped, None)


def band_edges(steps: int, count: int) -> list[tuple[int, int]]:
    """``count`` bands covering the steps, as equal as whole steps allow."""
    if not 1 <= count <= steps:
        raise UserError(f"the number of bands must be between 1 and the {steps} steps")
    edges = np.linspace(0, steps, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return None if norm < 1e-9 else float(a @ b) / norm


def _mean(values) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def bands(
    pipe: CustomCrafterPipeline,
    prompts: Sequence[str],
    references: Sequence[np.ndarray] | None = None,
    count: int = 5,
    weight: float = 1.0,
    samples: int = 4,
    seed: int = 0,
    num_inference_steps: int | None = None,
    similarity: Callable[[np.ndarray, Sequence[np.ndarray]], float] | None = None,
    extra: Mapping[str, WeightSchedule] | None = None,
    progress: bool = True,
    **settings,
) -> BandResult:
    """Run the band probe for ``pipe``'s subject module on ``prompts`` (each with the
    subject's token), ``samples`` noises each from ``seed``.

    On a lab model the clips are read with its detectors (motion direction against
    the prompt, palette similarity to ``references``); on any base the optical flow is
    compared with the base model's clip of the same noise. ``similarity(clip, references)``
    replaces the subject similarity (e.g. DINO-I). ``extra`` adds rows: ``{label: schedule}``.
    """
    if pipe.subject is None:
        raise UserError("the band probe needs a subject module (--subject)")
    if not prompts:
        raise UserError("the band probe needs prompts with the subject's token")
    lab = pipe.model.lab
    if similarity is None and lab is not None and references:
        similarity = lab.similarity
    steps = len(sampler_steps(pipe, num_inference_steps, settings))
    texts = [p for p in prompts for _ in range(samples)]
    ways: list[tuple[str, WeightSchedule, tuple[int, int] | None]] = [
        ("base (class word)", DynamicWeightSchedule.off(), None),
        (f"module at {weight:g}, every step", DynamicWeightSchedule.constant(weight), None),
        _paper_schedule(steps),
    ]
    for label, schedule in (extra or {}).items():
        ways.append((label, schedule, None))
    for a, b in band_edges(steps, count):
        ways.append((f"module in steps {a}-{b - 1} only", BandSchedule(a, b, weight), (a, b)))

    result = BandResult(pipe.model.name, steps, list(prompts), samples, seed, weight)
    group = processes()  # (the main process's bar counts its own runs)
    several = group.num_processes > 1
    bar = tqdm(total=None if several else len(ways), desc="band probe",
               disable=not (progress and group.is_main_process))  # fmt: skip

    def measure(way) -> tuple[BandRow, list[np.ndarray]]:
        """A way's row (but its flow agreement) and its clips' mean flows."""
        label, schedule, band = way
        asked = [pipe.base_prompt(t) for t in texts] if schedule.is_off else texts
        out = pipe(
            asked,
            schedule=schedule,
            seed=seed,
            num_inference_steps=num_inference_steps,
            progress=False,
            **settings,
        )
        clips = [to_uint8_frames(v) for v in out.videos]
        fields = [flow_field(c) for c in clips]
        row = BandRow(label, schedule.describe(), band, len(clips))
        if similarity is not None and references:
            row.similarity = _mean(similarity(c, references) for c in clips)
        row.flow = _mean(float(np.linalg.norm(f, axis=-1).mean()) for f in fields)
        if lab is not None:
            scores = [lab.score_clip(c, t) for c, t in zip(clips, texts, strict=True)]
            judged = [s.motion_ok for s in scores if s.motion_ok is not None]
            if judged:
                row.motion_ok = sum(judged) / len(judged)
                row.motion_low, row.motion_high = wilson(sum(judged), len(judged))
            row.displacement = _mean(s.displacement for s in scores)
        bar.update()
        return row, [f.reshape(-1, 2).mean(axis=0) for f in fields]

    # the ways split across the processes (each a whole batch, as one process makes it);
    # the flows compared with the base model's, the first way's, once all are back
    measured = spread(ways, measure)
    bar.close()
    base_flows = measured[0][1]
    for row, flows in measured:
        row.flow_agreement = _mean(_cosine(f, b) for f, b in zip(flows, base_flows, strict=True))
        result.rows.append(row)
    return result
