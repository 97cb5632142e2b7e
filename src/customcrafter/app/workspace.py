"""The app's folder (``customcrafter app --output-dir DIR``): what the user uploaded, the
subjects learnt from it and the videos made, laid out so that the CLI can use them too.

    DIR/subjects/NAME/photos/*.png     the uploaded photos (re-encoded, written atomically)
    DIR/subjects/NAME/subject.safetensors, checkpoints/, train_config.json   (``train``)
    DIR/videos/STAMP-LABEL.mp4, .gif, .json   each generated video, a GIF of it, its settings
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io.files import check_writable, slug, write_json
from ..io.images import load_image
from ..subject import SUBJECT_FILENAME, read_metadata
from ..training.checkpoint import list_checkpoints
from ..training.output import staged

#: how many photos a subject is learnt from (the paper's range)
MIN_PHOTOS, MAX_PHOTOS = 3, 10
SUBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")


@dataclass
class SubjectEntry:
    """A subject folder and how far its training got."""

    name: str
    folder: Path
    #: "learnt", "stopped" (checkpoints, no module yet), "photos", or "damaged" (its subject
    #: file cannot be read; ``words`` says why)
    state: str
    step: int = 0
    base: str = ""
    words: str = ""

    @property
    def path(self) -> Path:
        return self.folder / SUBJECT_FILENAME


class Workspace:
    def __init__(self, root: str | Path):
        self.root = check_writable(root, "--output-dir")
        self.subjects_dir = self.root / "subjects"
        self.videos_dir = self.root / "videos"

    # --- subjects --------------------------------------------------------------------------
    def subject_dir(self, name: str) -> Path:
        name = (name or "").strip()
        if not SUBJECT_NAME.fullmatch(name):
            raise UserError(
                f"subject name {name!r}: use letters, digits, '-' or '_' (at most 48), e.g. my-dog"
            )
        return self.subjects_dir / name

    def latest_samples(self, name: str) -> Path | None:
        """The contact sheet of the newest validation samples of subject ``name`` (a run
        that replaces earlier results keeps its own aside until its first checkpoint)."""
        try:
            folder = self.subject_dir(name)
        except UserError:
            return None
        sheets = [
            *(folder / "samples").glob("step-*/contact_sheet.png"),
            *staged(folder, True, "samples").glob("step-*/contact_sheet.png"),
        ]
        times = {}
        for sheet in sheets:
            try:
                times[sheet] = sheet.stat().st_mtime
            except OSError:  # moved meanwhile (the run's first checkpoint)
                continue
        return max(times, key=times.get, default=None)

    def save_photos(self, name: str, files: list[str | Path]) -> Path:
        """Check the uploaded ``files`` (3-10 readable photos) and store them as PNGs in the
        subject's ``photos`` folder, replacing what was there only once all are written."""
        files = [Path(f) for f in files or []]
        if not MIN_PHOTOS <= len(files) <= MAX_PHOTOS:
            raise UserError(
                f"give {MIN_PHOTOS} to {MAX_PHOTOS} photos of the subject; got {len(files)}"
            )
        images = []
        for path in files:
            try:
                images.append(load_image(path))
            except UserError as exc:  # name the file as the user uploaded it
                raise UserError(str(exc).replace(str(path), repr(path.name))) from None
        folder = self.subject_dir(name) / "photos"
        staging = folder.with_name(".photos.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for i, img in enumerate(images):
            img.save(staging / f"{i:02d}.png")
        old = folder.with_name(".photos.old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        return folder

    def subjects(self) -> list[SubjectEntry]:
        """Every subject folder, learnt ones first, each with its state."""
        entries = []
        if not self.subjects_dir.is_dir():
            return entries
        for folder in sorted(p for p in self.subjects_dir.iterdir() if p.is_dir()):
            if folder.name.startswith("."):
                continue
            entry = SubjectEntry(folder.name, folder, "photos")
            if (folder / SUBJECT_FILENAME).is_file():
                try:
                    meta = read_metadata(folder)
                except UserError as exc:  # listed, so that it can be learnt again
                    entry.state, entry.words = "damaged", str(exc)
                    entries.append(entry)
                    continue
                entry.state, entry.base = "learnt", meta.base_model
                entry.step = int(meta.training.get("max_train_steps", 0))
                entry.words = ", ".join(meta.words)
            elif checkpoints := list_checkpoints(folder):
                entry.state = "stopped"
                entry.step = int(checkpoints[-1].name.rsplit("-", 1)[-1])
            entries.append(entry)
        order = {"learnt": 0, "stopped": 1, "photos": 2, "damaged": 3}
        return sorted(entries, key=lambda e: (order[e.state], e.name))

    def learnt(self) -> list[str]:
        return [e.name for e in self.subjects() if e.state == "learnt"]

    def entry(self, name: str) -> SubjectEntry:
        for e in self.subjects():
            if e.name == name:
                return e
        raise UserError(f"no subject {name!r} in {self.subjects_dir}; learn it first")

    # --- videos ----------------------------------------------------------------------------
    def new_video_stem(self, label: str) -> Path:
        """A fresh path stem in ``videos/`` (``20261202-140501-3-dwvs``)."""
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        name = slug(label, empty="video")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = 0
        while (self.videos_dir / f"{stamp}-{n}-{name}.mp4").exists():
            n += 1
        return self.videos_dir / f"{stamp}-{n}-{name}"

    def record(self, stem: Path, settings: dict) -> None:
        write_json(stem.with_suffix(".json"), settings)

    def videos(self) -> list[Path]:
        """Every generated mp4, newest first."""
        if not self.videos_dir.is_dir():
            return []
        return sorted(self.videos_dir.glob("*.mp4"), key=lambda p: p.name, reverse=True)

    def settings_of(self, video: Path) -> dict:
        path = Path(video).with_suffix(".json")
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
