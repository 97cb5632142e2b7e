"""One bar chart per metric: the mean of each method with its 95% interval, as PNG and SVG."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ..io.files import atomic_path

COLORS = ("#426eb4", "#dd8452", "#55a868", "#c44e52", "#8172b2")


def bar_chart(
    stem: Path,
    title: str,
    ylabel: str,
    labels: Sequence[str],
    estimates: Sequence,
    digits: int = 3,
) -> list[Path]:
    """Bars (means) with 95% interval whiskers and the value on each bar, written atomically
    to ``stem.png`` and ``stem.svg``; ``estimates`` are ``report.Estimate``."""
    fig = Figure(figsize=(max(5.2, 1.3 * len(labels) + 1.2), 4.6), dpi=100)
    ax = fig.add_subplot()
    positions = range(len(labels))
    means = [e.mean if math.isfinite(e.mean) else 0.0 for e in estimates]
    errors = [
        [e.mean - e.low if math.isfinite(e.low) else 0.0 for e in estimates],
        [e.high - e.mean if math.isfinite(e.high) else 0.0 for e in estimates],
    ]
    colors = [COLORS[i % len(COLORS)] for i in positions]
    bars = ax.bar(positions, means, width=0.6, color=colors, yerr=errors, capsize=6)
    for bar, estimate in zip(bars, estimates, strict=True):
        if math.isfinite(estimate.mean):
            top = estimate.high if math.isfinite(estimate.high) else estimate.mean
            ax.annotate(
                f"{estimate.mean:.{digits}f}",
                (bar.get_x() + bar.get_width() / 2, max(top, 0.0)),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=9,
            )
    ax.set_xticks(list(positions), [textwrap.fill(label, 16) for label in labels], fontsize=9)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("method")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.grid(axis="y", color="#e4e4e4")
    ax.set_axisbelow(True)
    ax.margins(y=0.15)
    fig.text(0.01, 0.01, "bars: mean over videos; whiskers: 95% t-interval", fontsize=8,
             color="#6e6e6e")  # fmt: skip
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    written = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        with atomic_path(path) as tmp:
            # no date in the SVG, so that the same numbers give the same file
            fig.savefig(tmp, format=suffix[1:], metadata={"Date": None} if suffix == ".svg" else {})
        written.append(path)
    return written
