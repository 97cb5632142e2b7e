"""Benchmark reports: per-video and summary CSVs, a Markdown summary, one bar chart per metric
(drawn with Pillow) and an HTML page with the videos side by side.

Everything here works from plain rows (one dict per video, see :data:`METRICS` for the metric
keys), so the reports can be re-rendered from the metrics cache or from ``per_video.csv``
without generating anything.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..io.files import atomic_path


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    description: str
    digits: int = 3


#: every metric a benchmark can report, in report order
METRICS: tuple[Metric, ...] = (
    Metric("clip_t", "CLIP-T", "CLIP cosine of frames and prompt (token dropped)"),
    Metric("clip_i", "CLIP-I", "CLIP cosine of frames and reference images"),
    Metric("dino_i", "DINO-I", "DINO cosine of frames and reference images"),
    Metric("t_cons", "T.Cons", "CLIP cosine of consecutive frames"),
    Metric("dynamic_degree", "Dynamic degree", "share of videos VBench's rule calls dynamic"),
    Metric("flow_magnitude", "Flow magnitude", "mean optical-flow magnitude, px per frame", 2),
    Metric(
        "subject_similarity",
        "Subject similarity",
        "shapes world: palette-histogram intersection of the object with the references",
    ),
    Metric(
        "motion_accuracy",
        "Motion accuracy",
        "shapes world: share of videos moving as the prompt says",
    ),
    Metric(
        "background_accuracy",
        "Background accuracy",
        "shapes world: share of videos with the prompt's background",
    ),
    Metric("displacement", "Displacement", "shapes world: object centroid px per frame", 2),
)
METRIC_KEYS = tuple(m.key for m in METRICS)
METRIC_BY_KEY = {m.key: m for m in METRICS}
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
#: what the shapes-world detectors read, for reading rows by eye (not summarised)
READING_COLUMNS = ("shapes_motion_read", "shapes_background_read")
CONFIDENCE = 0.95
INTERVAL_NOTE = (
    "95% confidence intervals are Student-t intervals over videos: "
    "mean ± t(0.975, n−1) · s / √n, with s the sample standard deviation over the n videos "
    "that have the metric. Videos are treated as independent samples (prompts and seeds of "
    "one subject are not), so the intervals are indicative. No interval with n < 2."
)


# --- statistics --------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on the CDF; exact to ~1e-10)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


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


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean and Student-t confidence interval of ``values`` (NaN bounds below two values)."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(data)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(data.mean())
    if n < 2:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    std = float(data.std(ddof=1))
    half = student_t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
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
    published: Sequence[dict],
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


def _published_section(group: dict) -> list[str]:
    rows: dict[str, dict[str, float]] = group["rows"]
    keys = [k for k in METRIC_KEYS if any(k in values for values in rows.values())]
    lines = ["## Published (not measured here)", ""]
    lines.append(
        f"Source: {group['source']}. These numbers are copied from the publication, not "
        "produced by this benchmark run; their protocol (subjects, prompts, seeds, models, "
        "metric implementations) may differ from the one above, so compare with care."
    )
    if group.get("note"):
        lines += ["", str(group["note"])]
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


# --- charts --------------------------------------------------------------------------------
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and _text_size(draw, candidate, font)[0] > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return [*lines, line] if line else lines


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while value <= high + 1e-9 * step:
        ticks.append(0.0 if abs(value) < 1e-12 else value)
        value += step
    return ticks


def bar_chart(
    path: Path,
    title: str,
    ylabel: str,
    labels: Sequence[str],
    estimates: Sequence[Estimate],
    digits: int = 3,
) -> None:
    """Bars (means) with 95% CI whiskers, the value written on each bar; written atomically."""
    slot = 130
    left_margin, right_margin, top_margin, bottom_margin = 90, 30, 60, 110
    width = max(520, left_margin + right_margin + slot * len(labels))
    height = 460
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small, big = _font(14), _font(12), _font(17)

    bounds = [v for e in estimates for v in (e.mean, e.low, e.high) if math.isfinite(v)]
    low = min([0.0, *bounds]) if bounds else 0.0
    high = max([0.0, *bounds]) if bounds else 1.0
    if high == low:
        high = low + 1.0
    pad = 0.08 * (high - low)
    low = low - pad if low < 0 else low
    high = high + pad
    plot_top, plot_bottom = top_margin, height - bottom_margin
    plot_left, plot_right = left_margin, width - right_margin

    def y_of(value: float) -> float:
        return plot_bottom - (value - low) / (high - low) * (plot_bottom - plot_top)

    # title, axes, ticks, grid
    tw, _ = _text_size(draw, title, big)
    draw.text(((width - tw) / 2, 16), title, fill="black", font=big)
    for tick in _nice_ticks(low, high):
        y = y_of(tick)
        draw.line([(plot_left, y), (plot_right, y)], fill=(228, 228, 228))
        text = f"{tick:g}"
        w, h = _text_size(draw, text, small)
        draw.text((plot_left - 8 - w, y - h / 2 - 2), text, fill="black", font=small)
    draw.line([(plot_left, plot_top), (plot_left, plot_bottom)], fill="black", width=1)
    zero = y_of(0.0)
    draw.line([(plot_left, zero), (plot_right, zero)], fill="black", width=1)
    left, top, right, bottom = draw.textbbox((0, 0), ylabel, font=font)
    label_image = Image.new("RGBA", (right - left + 4, bottom - top + 4), (255, 255, 255, 0))
    ImageDraw.Draw(label_image).text((2 - left, 2 - top), ylabel, fill="black", font=font)
    rotated = label_image.rotate(90, expand=True)
    image.paste(rotated, (14, int((plot_top + plot_bottom - rotated.height) / 2)), rotated)
    xw, _ = _text_size(draw, "method", font)
    draw.text(((plot_left + plot_right - xw) / 2, height - 44), "method", fill="black", font=font)

    # bars
    step = (plot_right - plot_left) / max(1, len(labels))
    bar_width = min(70, step * 0.6)
    palette = [(66, 110, 180), (221, 132, 82), (85, 168, 104), (196, 78, 82), (129, 114, 178)]
    for i, (label, est) in enumerate(zip(labels, estimates, strict=True)):
        cx = plot_left + step * (i + 0.5)
        if math.isfinite(est.mean):
            y0, y1 = sorted((y_of(0.0), y_of(est.mean)))
            color = palette[i % len(palette)]
            draw.rectangle([cx - bar_width / 2, y0, cx + bar_width / 2, y1], fill=color)
            if math.isfinite(est.low) and math.isfinite(est.high):
                top, bottom = y_of(est.high), y_of(est.low)
                draw.line([(cx, top), (cx, bottom)], fill="black", width=2)
                for y in (top, bottom):
                    draw.line([(cx - 9, y), (cx + 9, y)], fill="black", width=2)
            text = f"{est.mean:.{digits}f}"
            w, h = _text_size(draw, text, small)
            above = y_of(max(est.mean, est.high if math.isfinite(est.high) else est.mean))
            ty = above - h - 8 if est.mean >= 0 else y_of(est.mean) + 6
            box = [cx - w / 2 - 3, ty - 1, cx + w / 2 + 3, ty + h + 5]
            draw.rectangle(box, fill="white")
            draw.text((cx - w / 2, ty), text, fill="black", font=small)
        for j, line in enumerate(_wrap(draw, label, small, int(step) - 8)[:4]):
            w, _ = _text_size(draw, line, small)
            draw.text((cx - w / 2, plot_bottom + 8 + 15 * j), line, fill="black", font=small)
    note = "bars: mean over videos; whiskers: 95% t-interval"
    draw.text((plot_left, height - 20), note, fill=(110, 110, 110), font=small)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


# --- HTML ----------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { margin-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 24px; }
th, td { border: 1px solid #ddd; padding: 6px; vertical-align: top; text-align: center; }
th { background: #f4f4f4; font-weight: 600; }
td.seed { font-weight: 600; background: #fafafa; }
video, img.gif { width: 256px; height: auto; image-rendering: pixelated; background: #000; }
.scores { font-size: 12px; color: #555; margin-top: 4px; }
.missing { color: #a33; font-size: 13px; }
.charts img { width: 420px; margin: 4px; border: 1px solid #eee; }
.prompt { font-family: ui-monospace, monospace; }
"""


def index_html(
    title: str,
    layout: list[tuple[str, list[tuple[int, str]]]],
    methods: list[tuple[str, str]],
    seeds: list[int],
    rows: dict[tuple[str, str, int, int], dict],
    paths: dict[tuple[str, str, int, int], str],
    gifs: set[str],
    charts: list[str],
) -> str:
    """``layout``: ``[(subject, [(prompt_index, prompt)])]``; ``methods``: ``[(name,
    sampling)]``; ``paths`` maps (method, subject, prompt index, seed) to the video's path
    relative to the page; ``rows`` holds the metrics of those that have them."""
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        '<p>Numbers: <a href="summary.md">summary.md</a> · <a href="summary.csv">summary.csv'
        '</a> · <a href="per_video.csv">per_video.csv</a></p>',
    ]
    if charts:
        out.append('<div class="charts">')
        out += [f'<a href="{esc(c)}"><img src="{esc(c)}" alt="{esc(c)}"></a>' for c in charts]
        out.append("</div>")
    shown = ("clip_t", "clip_i", "dino_i", "subject_similarity", "motion_accuracy")
    anchors = {subject: f"subject-{i}" for i, (subject, _) in enumerate(layout)}
    out.append(
        "<p>Subjects: "
        + " · ".join(f'<a href="#{anchors[s]}">{esc(s)}</a>' for s, _ in layout)
        + "</p>"
    )
    for subject, prompts in layout:
        out.append(f'<h2 id="{anchors[subject]}">{esc(subject)}</h2>')
        for index, prompt in prompts:
            out.append(f'<h3 class="prompt">{index}: {esc(prompt)}</h3>')
            out.append("<table><tr><th>seed</th>")
            out += [f"<th>{esc(name)}<br><small>{esc(how)}</small></th>" for name, how in methods]
            out.append("</tr>")
            for seed in seeds:
                out.append(f'<tr><td class="seed">{seed}</td>')
                for name, _ in methods:
                    key = (name, subject, index, seed)
                    out.append("<td>" + _video_cell(paths.get(key), rows.get(key), gifs, shown))
                    out[-1] += "</td>"
                out.append("</tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _video_cell(path: str | None, row: dict | None, gifs: set[str], shown) -> str:
    esc = html.escape
    if path is None:
        return '<span class="missing">not generated yet</span>'
    parts = [
        f'<video src="{esc(path)}" controls loop muted autoplay playsinline></video>',
        f'<br><a href="{esc(path)}">mp4</a>',
    ]
    gif = str(Path(path).with_suffix(".gif").as_posix())
    if gif in gifs:
        parts.append(f' · <a href="{esc(gif)}">gif</a><br>')
        parts.append(f'<img class="gif" src="{esc(gif)}" alt="gif">')
    if row:
        scores = [
            f"{METRIC_BY_KEY[k].label} {row[k]:.{METRIC_BY_KEY[k].digits}f}"
            for k in shown
            if _number(row.get(k)) is not None
        ]
        if scores:
            parts.append(f'<div class="scores">{esc(" · ".join(scores))}</div>')
    return "".join(parts)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
