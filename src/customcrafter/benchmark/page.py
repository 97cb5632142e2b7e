"""The benchmark's HTML page: every video side by side, a table per prompt with a row per seed
and a column per method, rendered from ``templates/index.html.j2`` (autoescaped)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from .scoring import METRIC_BY_KEY
from .spec import BenchmarkSpec

#: metrics shown under each video
SHOWN = ("clip_t", "clip_i", "dino_i", "subject_similarity", "motion_accuracy")


def index_html(
    spec: BenchmarkSpec, rows: list[dict], sampling: dict[str, str], charts: list[str]
) -> str:
    """The page for ``spec``'s videos; ``rows`` hold the metrics of those that exist (paths
    relative to the output folder, so the page works wherever the folder goes)."""
    by_key = {(r["method"], r["subject"], r["prompt_index"], r["seed"]): r for r in rows}
    subjects = []
    for subject in spec.subjects:
        prompts = []
        for index, text in enumerate(subject.prompts):
            table = []
            for seed in spec.seeds:
                cells = [
                    _cell(spec.output_dir, by_key.get((m.name, subject.name, index, seed)))
                    for m in spec.methods
                ]
                table.append({"seed": seed, "cells": cells})
            prompts.append({"index": index, "text": text, "rows": table})
        subjects.append({"name": subject.name, "prompts": prompts})
    methods = [{"name": m.name, "sampling": sampling[m.name]} for m in spec.methods]
    environment = Environment(
        loader=PackageLoader("customcrafter.benchmark", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
    )
    return environment.get_template("index.html.j2").render(
        title=f"{spec.name}: videos", charts=charts, subjects=subjects, methods=methods
    )


def _cell(out: Path, row: dict | None) -> dict:
    if row is None:
        return {"path": None}
    gif = Path(row["path"]).with_suffix(".gif").as_posix()
    scores = [
        f"{METRIC_BY_KEY[k].label} {float(row[k]):.{METRIC_BY_KEY[k].digits}f}"
        for k in SHOWN
        if isinstance(row.get(k), int | float) and not isinstance(row.get(k), bool)
    ]
    return {
        "path": row["path"],
        "gif": gif if (out / gif).is_file() else None,
        "scores": " · ".join(scores),
    }
