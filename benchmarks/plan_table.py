"""The memory plan of every release, as the README's table: for training (with
``--identifier``) and for generation at the release's default size, the estimated peak of
the fastest way, and the way ``customcrafter plan`` picks for cards of 12, 16, 24, 48 and
80 GB with its expected slowdown. Every figure is an estimate (``customcrafter.planning``);
``benchmarks/memory_check.py`` measures them on a GPU.

    python benchmarks/plan_table.py                  # ~5 min on 2 CPU cores, no GPU
    python benchmarks/plan_table.py --release Wan-AI/Wan2.1-T2V-1.3B-Diffusers
"""

from __future__ import annotations

import argparse

from customcrafter.planning.plan import GB, Job, estimate
from customcrafter.planning.releases import RELEASES

CARDS = (12, 16, 24, 48, 80)
#: flags every way shares, left out of the table
COMMON = {"--mixed-precision", "bf16", "--dtype", "bfloat16"}


def _flags(estimate_, task: str) -> str:
    flags = [f for f in estimate_.way.flags(task) if f not in COMMON]
    text = " ".join(flags) or "(as is)"
    return text.replace("--gradient-checkpointing", "--gradient-ckpt")


def rows(release: str) -> list[str]:
    out = []
    for task in ("train", "generate"):
        plan = estimate(Job(release, task, identifier=True))
        h, w, f = plan.size
        fastest = min(plan.estimates, key=lambda e: e.seconds)
        cells = []
        for card in CARDS:
            chosen = plan.fastest_within(card)
            if chosen is None:
                cells.append("does not fit")
            else:
                cells.append(f"`{_flags(chosen, task)}` {chosen.slowdown:.2f}x")
        size = f"{w}x{h}x{f}"
        out.append(
            f"| {release} | {task} {size} | {fastest.peak / GB:.1f} | "
            f"{plan.smallest.peak / GB:.1f} | " + " | ".join(cells) + " |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="append", choices=list(RELEASES))
    args = parser.parse_args()
    header = "| release | job (WxHxF) | fastest way, GB | least, GB | " + " | ".join(
        f"{c} GB" for c in CARDS
    )
    print(header + " |")
    print("|" + "---|" * (4 + len(CARDS)))
    for release in args.release or RELEASES:
        for row in rows(release):
            print(row, flush=True)


if __name__ == "__main__":
    main()
