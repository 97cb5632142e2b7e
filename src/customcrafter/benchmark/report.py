"""Benchmark reports from the scores of the videos that exist: per-video and summary CSVs, a
Markdown summary (means with 95% Student-t intervals, ``scipy.stats``), one bar chart per
metric (``charts.py``) and an HTML page with the videos side by side (a Jinja2 template).

The rows come from the metrics cache or, without one, from ``per_video.csv``, so the reports
can be rewritten without generating or scoring anything.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io.files import atomic_path, write_text
from .cache import CACHE_FILE, MetricsCache, file_hash
from .scoring import (
    METRIC_BY_KEY,
    METRIC_KEYS,
    READING_COLUMNS,
    group_settings,
    references_fingerprint,
)
from .spec import BenchmarkSpec, MethodSpec

#: columns of per_video.csv that describe the video rather than score it
ID_COLUMNS = (
    "method",
    "subject",
    "prompt_index",
    "prompt",
    "sampled_prompt",
    "seed",
    "schedule",
    "path",
)
CONFIDENCE = 0.95
INTERVAL_NOTE = (
    "95% confidence intervals are Student-t intervals over videos: "
    "mean ± t(0.975, n−1) · s / √n, with s the sample standard deviation over the n videos "
    "that have the metric. Videos are treated as independent samples (prompts and seeds of "
    "one subject are not), so the intervals are indicative. No interval with n < 2."
)


def check_report_libraries() -> None:
    """The reports need the ``bench`` extra; say so before any work is done."""
    try:
        import jinja2  # noqa: F401
        import matplotlib  # noqa: F401
        import scipy  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"the benchmark reports need {exc.name}, which is not installed: "
            "pip install 'customcrafter[bench]'"
        ) from None


# --- statistics --------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    n: int
    mean: float
    std: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


NO_ESTIMATE = Estimate(0, math.nan, math.nan, math.nan, math.nan)


def t_interval(values: Sequence[float | None], confidence: float = CONFIDENCE) -> Estimate:
    """Mean and Student-t confidence interval of ``values`` (NaN bounds below two values)."""
    from scipy import stats

    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(data)
    if n == 0:
        return NO_ESTIMATE
    mean = float(data.mean())
    if n < 2:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return Estimate(n, mean, std, mean - half, mean + half)


def summarise(rows: list[dict], methods: Sequence[str]) -> dict[str, dict[str, Estimate]]:
    """``{method: {metric: Estimate}}`` for every metric that some video has."""
    present = [k for k in METRIC_KEYS if any(_number(r.get(k)) is not None for r in rows)]
    out = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        out[method] = {k: t_interval([_number(r.get(k)) for r in mine]) for k in present}
    return out


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: float, digits: int) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


# --- CSV -----------------------------------------------------------------------------------
def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)


def per_video_columns(rows: list[dict]) -> list[str]:
    present = [k for k in METRIC_KEYS if any(k in r for r in rows)]
    readings = [k for k in READING_COLUMNS if any(r.get(k) for r in rows)]
    return [*ID_COLUMNS, *present, *readings]


def write_per_video_csv(path: Path, rows: list[dict]) -> None:
    columns = per_video_columns(rows)

    def cell(row, key):
        value = row.get(key)
        if value is None:
            return ""
        if isinstance(value, float):
            return "" if not math.isfinite(value) else repr(value)
        return value

    write_csv(path, columns, [[cell(r, k) for k in columns] for r in rows])


def read_per_video_csv(path: Path) -> list[dict]:
    """Rows of a ``per_video.csv`` with numbers parsed back (empty cells become None)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        parsed: dict = {}
        for key, value in row.items():
            if key in METRIC_KEYS:
                parsed[key] = _number(value)
            elif key in ("prompt_index", "seed"):
                parsed[key] = int(value)
            else:
                parsed[key] = value
        out.append(parsed)
    return out


def write_summary_csv(path: Path, summary: dict, schedules: dict[str, str]) -> None:
    header = [
        "method",
        "schedule",
        "metric",
        "n",
        "mean",
        "std",
        "ci95_low",
        "ci95_high",
        "interval",
    ]
    rows = []
    for method, estimates in summary.items():
        for key, est in estimates.items():
            rows.append(
                [
                    method,
                    schedules.get(method, ""),
                    key,
                    est.n,
                    _fmt(est.mean, 6),
                    _fmt(est.std, 6),
                    _fmt(est.low, 6),
                    _fmt(est.high, 6),
                    "student-t 95%",
                ]
            )
    write_csv(path, header, rows)


# --- Markdown ------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_markdown(
    title: str,
    summary: dict[str, dict[str, Estimate]],
    schedules: dict[str, str],
    counts: dict[str, tuple[int, int]],
    published: Sequence,
    notes: Sequence[str] = (),
) -> str:
    """The summary page: measured numbers first, published ones in their own section."""
    keys = [k for k in METRIC_KEYS if any(k in est for est in summary.values())]
    lines = [f"# {title}", ""]
    lines += [f"{note}" for note in notes]
    if notes:
        lines.append("")
    lines += ["## Measured here", ""]
    lines.append(f"Means over videos ± half-width of the 95% confidence interval. {INTERVAL_NOTE}")
    lines.append("")
    if keys:
        header = ["method", "sampling", "videos", *[METRIC_BY_KEY[k].label for k in keys]]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("| " + " | ".join(["---"] * 3 + ["---:"] * len(keys)) + " |")
        for method, estimates in summary.items():
            done, expected = counts.get(method, (0, 0))
            cells = [_md_cell(method), _md_cell(schedules.get(method, "")), f"{done}/{expected}"]
            for key in keys:
                est, digits = estimates.get(key), METRIC_BY_KEY[key].digits
                if est is None or est.n == 0:
                    cells.append("–")
                elif est.n < 2:
                    cells.append(f"{est.mean:.{digits}f}")
                else:
                    cells.append(f"{est.mean:.{digits}f} ± {est.half_width:.{digits}f}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Metrics:")
        lines.append("")
        for key in keys:
            metric = METRIC_BY_KEY[key]
            lines.append(f"- **{metric.label}** (`{key}`): {metric.description}")
    else:
        lines.append("No metrics were computed yet.")
    lines.append("")
    for group in published:
        lines += _published_section(group)
    return "\n".join(lines).rstrip() + "\n"


def _published_section(group) -> list[str]:
    rows: dict[str, dict[str, float]] = group.rows
    keys = [k for k in METRIC_KEYS if any(k in values for values in rows.values())]
    lines = ["## Published (not measured here)", ""]
    lines.append(
        f"Source: {group.source}. These numbers are copied from the publication, not "
        "produced by this benchmark run; their protocol (subjects, prompts, seeds, models, "
        "metric implementations) may differ from the one above, so compare with care."
    )
    if group.note:
        lines += ["", group.note]
    lines += ["", "| method (published) | " + " | ".join(METRIC_BY_KEY[k].label for k in keys)]
    lines[-1] += " |"
    lines.append("| --- | " + " | ".join(["---:"] * len(keys)) + " |")
    for method, values in rows.items():
        cells = [_md_cell(method)]
        for key in keys:
            value = values.get(key)
            cells.append("–" if value is None else f"{value:.{METRIC_BY_KEY[key].digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


# --- from the cache to the files -----------------------------------------------------------
def collect_rows(spec: BenchmarkSpec, cache: MetricsCache | None = None) -> list[dict]:
    """One row per existing video of the spec, with the metrics of the cache (or, without a
    cache file, of ``per_video.csv``); videos whose file changed since scoring get none."""
    out = spec.output_dir
    cache = cache or MetricsCache(out / CACHE_FILE)
    csv_rows: dict[str, dict] = {}
    if not cache.records and (out / "per_video.csv").is_file():
        csv_rows = {r["path"]: r for r in read_per_video_csv(out / "per_video.csv")}
    refs = {s.name: references_fingerprint(s.images) for s in spec.subjects}
    rows = []
    for job in spec.jobs():
        video = out / job.path
        if not video.is_file():
            continue
        row = {**job.fields(), "schedule": spec.method(job.method).schedule.describe()}
        wanted = group_settings(spec, refs[job.subject])
        groups = cache.current_groups(job.path, file_hash(video), wanted)
        if groups:
            for group in groups.values():
                row.update(group.get("values", {}))
        elif job.path in csv_rows:
            old = csv_rows[job.path]
            row.update({k: old.get(k) for k in (*METRIC_KEYS, *READING_COLUMNS) if k in old})
        rows.append(row)
    return rows


def write_reports(
    spec: BenchmarkSpec, rows: list[dict] | None = None, cache: MetricsCache | None = None
) -> Path:
    """Write per_video.csv, summary.csv, summary.md, charts/ and index.html from ``rows``
    (by default: the cached metrics of the videos that exist). Generates nothing."""
    from .charts import bar_chart
    from .page import index_html

    check_report_libraries()
    out = spec.output_dir
    if rows is None:
        rows = collect_rows(spec, cache)
    names = [m.name for m in spec.methods]
    schedules = {m.name: sampling_label(m) for m in spec.methods}
    jobs = spec.jobs()
    counts = {
        name: (sum(r["method"] == name for r in rows), sum(j.method == name for j in jobs))
        for name in names
    }
    summary = summarise(rows, names)
    write_per_video_csv(out / "per_video.csv", rows)
    write_summary_csv(out / "summary.csv", summary, schedules)
    write_text(out / "summary.md", _summary_page(spec, summary, schedules, counts, rows))

    charts = []
    for key in METRIC_KEYS:
        estimates = [summary[name].get(key) for name in names]
        if not any(e is not None and e.n for e in estimates):
            continue
        metric = METRIC_BY_KEY[key]
        bar_chart(
            out / "charts" / key,
            f"{metric.label}: {spec.name}",
            metric.label,
            names,
            [e or NO_ESTIMATE for e in estimates],
            metric.digits,
        )
        charts.append(f"charts/{key}.png")
    write_text(out / "index.html", index_html(spec, rows, schedules, charts))
    return out


def _summary_page(spec, summary, schedules, counts, rows) -> str:
    videos = len(spec.jobs())
    notes = [
        f"Benchmark **{spec.name}**: {len(spec.methods)} methods × {len(spec.subjects)} "
        f"subjects × {sum(len(s.prompts) for s in spec.subjects)} prompts in all × "
        f"{len(spec.seeds)} seeds = {videos} videos; {len(rows)} exist."
    ]
    if spec.description:
        notes.append(spec.description.strip())
    unscored = sum(1 for r in rows if not any(k in r for k in METRIC_KEYS))
    if unscored:
        notes.append(f"{unscored} videos have no metrics yet (run the benchmark to score them).")
    title = f"{spec.name}: results"
    return summary_markdown(title, summary, schedules, counts, spec.published, notes)


def sampling_label(method: MethodSpec) -> str:
    if method.module == "none":
        return "base model alone (token dropped)"
    return method.schedule.describe()
