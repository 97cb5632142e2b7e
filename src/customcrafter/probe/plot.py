"""Charts of the probes (matplotlib, from the ``bench`` extra), as PNG and SVG."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..io.files import atomic_path

COLORS = {"motion": "#c0392b", "color": "#2471a3", "background": "#7d8c8d", "object": "#6c3483"}


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError('the probe charts need matplotlib: pip install -e ".[bench]"') from None
    return plt


def _save(fig, stem: Path) -> list[Path]:
    written = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight")
        written.append(path)
    return written


def plot_commitment(result: dict, stem: str | Path, paper_k: int = 5) -> list[Path]:
    """The share of clips following prompt A against the number of steps run with A, one
    curve per attribute with its 95% interval; ``result`` is ``Commitment.as_dict()``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for attribute, points in result["curves"].items():
        known = [p for p in points if p["share"] is not None]
        x = [p["switch_step"] for p in known]
        color = COLORS.get(attribute)
        ax.plot(x, [p["share"] for p in known], marker="o", ms=3, label=attribute, color=color)
        ax.fill_between(
            x, [p["low"] for p in known], [p["high"] for p in known], alpha=0.18, color=color
        )
    ax.axhline(0.5, color="black", lw=0.6, ls=":")
    ax.axvline(paper_k, color="gray", lw=0.8, ls="--", label=f"paper's k = {paper_k}")
    if result.get("suggested_k") is not None:
        k = result["suggested_k"]
        ax.axvline(k, color=COLORS["motion"], lw=0.8, ls="--", label=f"suggested k = {k}")
    ax.set_xlim(0, result["steps"])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"steps denoised with prompt A (of {result['steps']}), then prompt B")
    ax.set_ylabel("share of videos following A")
    ax.set_title(
        f"When is each attribute decided? {result['base']}, "
        f"{result['samples']} noises x {len(result['pairs'])} pairs",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    written = _save(fig, Path(stem))
    plt.close(fig)
    return written


def plot_bands(result: dict, stem: str | Path) -> list[Path]:
    """Per band of steps: motion (share moving as asked, or flow agreement with the base
    model) and subject similarity; ``result`` is ``BandResult.as_dict()``."""
    plt = pyplot()
    rows = result["rows"]
    labels = [r["label"].replace("module in steps ", "").replace(" only", "") for r in rows]
    judged = any(r["motion_ok"] is not None for r in rows)  # by a lab's detectors
    motion = [r["motion_ok"] if judged else r["flow_agreement"] for r in rows]
    fig, ax = plt.subplots(figsize=(7.2, 3.8))
    x = range(len(rows))
    width = 0.38
    ax.bar([i - width / 2 for i in x], [m or 0 for m in motion], width, color=COLORS["motion"],
           label="motion as asked" if judged else "flow agreement with base")  # fmt: skip
    if judged:
        ax.errorbar(
            [i - width / 2 for i in x],
            [m or 0 for m in motion],
            yerr=[
                [(r["motion_ok"] or 0) - (r["motion_low"] or 0) for r in rows],
                [(r["motion_high"] or 0) - (r["motion_ok"] or 0) for r in rows],
            ],
            fmt="none",
            ecolor="black",
            lw=0.8,
            capsize=2,
        )
    ax.bar([i + width / 2 for i in x], [r["similarity"] or 0 for r in rows], width,
           color=COLORS["color"], label="subject similarity")  # fmt: skip
    ax.set_xticks(list(x), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(
        f"Where the module acts: {result['base']}, weight {result['weight']:g}", fontsize=10
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    written = _save(fig, Path(stem))
    plt.close(fig)
    return written


def plot_frontier(
    points: list[dict],
    stem: str | Path,
    panels: list[str],
    curve: str = "method",
    along: str = "training",
    order: list | None = None,
    motion: str = "motion_ok",
    title: str = "",
) -> list[Path]:
    """Subject similarity (x) against ``motion`` (y), one panel per value of ``panel`` field
    ``"subject"`` in ``panels``, one curve per ``curve`` value joining its points in the order
    of ``along`` (training strengths, in ``order``), with 95% intervals on both axes. ``points`` come from
    ``frontier.summarise(..., by=("subject", curve, along))``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
    names = list(dict.fromkeys(p[curve] for p in points))
    palette = [plt.get_cmap("tab10")(i) for i in range(10)] + ["black", "#a6761d", "#66a61e"]
    for ax, panel in zip(axes[0], panels, strict=True):
        for n, name in enumerate(names):
            mine = [p for p in points if p["subject"] == panel and p[curve] == name]
            mine = [
                p for p in mine if p.get("similarity") is not None and p.get(motion) is not None
            ]
            if not mine:
                continue
            mine.sort(key=lambda p: order.index(p[along]) if order else p[along])
            x = [p["similarity"] for p in mine]
            y = [p[motion] for p in mine]
            # motion ok's bounds are motion_low/high (Wilson); the means' are <name>_low/high
            prefix = "motion" if motion == "motion_ok" else motion
            yerr = _errors(mine, motion, f"{prefix}_low", f"{prefix}_high")
            xerr = _errors(mine, "similarity", "similarity_low", "similarity_high")
            ax.errorbar(
                x,
                y,
                xerr=xerr,
                yerr=yerr,
                marker="o" if len(mine) > 1 else "s",
                ms=4 if len(mine) > 1 else 6,
                lw=1.2,
                elinewidth=0.6,
                capsize=2,
                color=palette[n % len(palette)],
                label=name,
                alpha=0.85,
            )
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("subject similarity")
        ax.set_ylim(-0.02, 1.05 if motion == "motion_ok" else None)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("motion as prompted" if motion == "motion_ok" else motion)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # every method once, whichever panel has it
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, fontsize=7, loc="upper center", ncol=2, bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=10)
    written = _save(fig, Path(stem))
    plt.close(fig)
    return written


def _errors(points: list[dict], value: str, low: str, high: str) -> list[list[float]]:
    """Matplotlib's ``[below, above]`` error bars (0 where a bound is missing)."""

    def gap(p, bound, sign):
        return 0.0 if p.get(bound) is None else max(0.0, sign * (p[value] - p[bound]))

    return [[gap(p, low, 1) for p in points], [gap(p, high, -1) for p in points]]
