"""What a benchmark runs: its subjects, its methods (a base model, a subject module and a
weight schedule), its seeds, and every video they make (:class:`VideoJob`). A spec file
becomes a :class:`BenchmarkSpec` through ``load.load_spec``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..prompts import strip_tokens
from ..sampling.dwvs import DynamicWeightSchedule, WeightSchedule
from ..subject import SUBJECT_FILENAME
from .schema import Metrics, Published

PACKAGE_PREFIX = "package:"
SUBJECTS_DIR = "subjects"
VIDEOS_DIR = "videos"


# --- what the runner runs ------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleChoice:
    """A method's ``schedule:`` as the spec writes it: ``kind`` (``dwvs``, ``band``,
    ``constant`` or ``off``) and the weight schedule it builds."""

    kind: str
    schedule: WeightSchedule

    def build(self) -> WeightSchedule:
        return self.schedule

    def describe(self) -> str:
        """The short label the reports show: ``DWVS 0.4/0.8, k=5``, ``constant 1``, ``off``."""
        if self.kind == "off":
            return "off"
        if self.kind == "constant":
            return f"constant {self.schedule.lambda_l:g}"
        return self.schedule.label()

    def as_dict(self) -> dict:
        """What a video is recorded with (its cache entry holds while this stays the same)."""
        return {"kind": self.kind, **self.schedule.record()}


PAPER_DWVS = ScheduleChoice("dwvs", DynamicWeightSchedule())
OFF = ScheduleChoice("off", DynamicWeightSchedule.off())


@dataclass
class SubjectSpec:
    name: str
    slug: str
    images: Path
    class_word: str
    token: str
    prompts: list[str]


@dataclass
class MethodSpec:
    """``module``: ``"train"`` (trains its own modules), ``"reuse"`` (``owner``'s),
    ``"none"`` (the base model alone) or ``"path"`` (``path`` with ``{subject}``)."""

    name: str
    slug: str
    base: str
    schedule: ScheduleChoice
    module: str
    owner: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    description: str = ""
    #: the base as the spec writes it (``${...}`` kept): what its videos are recorded with
    base_as_written: str = ""

    @property
    def uses_module(self) -> bool:
        return self.module != "none"


@dataclass(frozen=True)
class VideoJob:
    method: str
    subject: str
    prompt_index: int
    prompt: str
    sampled_prompt: str
    seed: int
    path: str  # relative to the output folder, posix

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.method, self.subject, self.prompt_index, self.seed)

    def fields(self) -> dict[str, Any]:
        """What identifies the video, as recorded in the score cache and the reports."""
        return asdict(self)


@dataclass
class BenchmarkSpec:
    name: str
    spec_path: Path | None
    output_dir: Path
    data_root: Path | None
    seeds: list[int]
    #: the spec's ``generation:`` settings that are set (SampleConfig fields and save_fps)
    generation: dict[str, Any]
    gif: bool
    metrics: Metrics
    subjects: list[SubjectSpec]
    methods: list[MethodSpec]
    published: list[Published] = field(default_factory=list)
    base_config: str | None = None
    vae_chunk_size: int | None = None
    description: str = ""
    #: variable name -> value (None where unset); unset ones may remain in ``base`` strings
    variables: dict[str, str | None] = field(default_factory=dict)

    def method(self, name: str) -> MethodSpec:
        return next(m for m in self.methods if m.name == name)

    def subject(self, name: str) -> SubjectSpec:
        return next(s for s in self.subjects if s.name == name)

    def jobs(self) -> list[VideoJob]:
        """Every video of the benchmark, method by method."""
        out = []
        for method in self.methods:
            for subject in self.subjects:
                for index, prompt in enumerate(subject.prompts):
                    sampled = prompt if method.uses_module else strip_tokens(prompt)
                    for seed in self.seeds:
                        path = f"{VIDEOS_DIR}/{method.slug}/{subject.slug}/{index}-seed{seed}.mp4"
                        out.append(
                            VideoJob(method.name, subject.name, index, prompt, sampled, seed, path)
                        )
        return out

    def owner(self, method: MethodSpec) -> MethodSpec | None:
        """The method whose modules ``method`` uses, when the benchmark trains them."""
        if method.module == "train":
            return method
        if method.module == "reuse":
            return self.method(method.owner)
        return None

    def module_dir(self, owner: MethodSpec, subject: SubjectSpec) -> Path:
        return self.output_dir / SUBJECTS_DIR / owner.slug / subject.slug

    def module_path(self, method: MethodSpec, subject: SubjectSpec) -> Path | None:
        """Where ``method``'s subject module for ``subject`` is (or will be)."""
        if method.module == "none":
            return None
        if method.module == "path":
            path = Path(method.path.replace("{subject}", subject.name)).expanduser()
            if not path.is_absolute() and self.spec_path is not None:
                path = self.spec_path.parent / path
            return path / SUBJECT_FILENAME if path.is_dir() or not path.suffix else path
        return self.module_dir(self.owner(method), subject) / SUBJECT_FILENAME
