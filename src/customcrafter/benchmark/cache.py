"""What a benchmark's output folder already holds, and whether it still fits the spec.

- ``cache/metrics.jsonl``: the scores of every video, keyed by the video's content and each
  group's settings (:class:`MetricsCache`);
- ``videos/<method>/settings.json``: what a method's videos were made with; a run with other
  settings stops instead of mixing the two (:func:`check_method_settings`);
- a trained module's ``train_config.json``, likewise (:func:`check_trained_settings`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..config import config_to_dict
from ..errors import UserError
from ..io.files import atomic_path, write_json
from .spec import VIDEOS_DIR, BenchmarkSpec, MethodSpec, SubjectSpec
from .training import PLACE_TRAIN_FIELDS, train_config

CACHE_FILE = "cache/metrics.jsonl"


def json_roundtrip(value):
    """``value`` as it reads back from JSON (tuples as lists, keys sorted)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:20]


class MetricsCache:
    """``cache/metrics.jsonl``: one JSON object per scored video, the newest line wins. A line
    cut short by a crash is ignored."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = {}
        self.lines = 0
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "path" in record:
                    self.records[record["path"]] = record
                    self.lines += 1

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def put(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record["path"]] = record
        self.lines += 1

    def compact(self) -> None:
        if self.lines <= len(self.records):
            return
        with atomic_path(self.path) as tmp:
            tmp.write_text(
                "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records.values()),
                encoding="utf-8",
            )
        self.lines = len(self.records)

    def current_groups(self, job_path: str, sha: str, wanted: dict[str, dict]) -> dict:
        """The cached groups of a video that are still valid: same content, same settings."""
        record = self.get(job_path)
        if record is None or record.get("sha") != sha:
            return {}
        return {
            name: group
            for name, group in record.get("groups", {}).items()
            if name in wanted and group.get("settings") == json_roundtrip(wanted[name])
        }


def method_settings(spec: BenchmarkSpec, method: MethodSpec) -> dict:
    """What a method's videos depend on (paths left out, so moving data does not matter)."""
    if method.module == "train":
        module: Any = {"train": method.train}
    elif method.module == "reuse":
        module = {"reuse": method.owner, "train": spec.method(method.owner).train}
    elif method.module == "path":
        module = {"path": method.path}
    else:
        module = "none"
    return json_roundtrip(
        {
            "base": method.base_as_written or method.base,
            "module": module,
            "schedule": method.schedule.as_dict(),
            "generation": spec.generation,
        }
    )


def check_method_settings(spec: BenchmarkSpec, method: MethodSpec) -> None:
    """Record what the method's videos are made with, or refuse a run whose settings
    differ from those of the videos already there."""
    folder = spec.output_dir / VIDEOS_DIR / method.slug
    path = folder / "settings.json"
    wanted = method_settings(spec, method)
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError:
            stored = None
        stored = stored if isinstance(stored, dict) else None
        if stored is not None and stored != wanted:
            changed = sorted(k for k in wanted if stored.get(k) != wanted.get(k))
            raise UserError(
                f"method {method.name!r}: its videos in {folder} were made with other settings "
                f"(changed: {', '.join(changed)}). Delete {folder} to regenerate them, or give "
                "another --output-dir"
            )
        if stored == wanted:
            return
    write_json(path, wanted)


def check_trained_settings(
    spec: BenchmarkSpec, owner: MethodSpec, subject: SubjectSpec, folder: Path
) -> None:
    """Refuse a module (finished or checkpointed) trained with other settings."""
    stored_path = folder / "train_config.json"
    if not stored_path.is_file():
        return
    try:
        stored = _comparable(json.loads(stored_path.read_text()))
    except json.JSONDecodeError:
        return
    wanted = _comparable(config_to_dict(train_config(spec, owner, subject)))
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if changed:
        raise UserError(
            f"method {owner.name!r}: the subject module in {folder} was trained with other "
            f"settings ({', '.join(changed)}). Delete {folder} to train it again, or give "
            "another --output-dir"
        )


def _comparable(values: dict) -> dict:
    return {k: v for k, v in json_roundtrip(values).items() if k not in PLACE_TRAIN_FIELDS}
