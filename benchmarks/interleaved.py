"""Side-by-side timing shared by the benchmarks: runs interleaved, medians, ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_interleaved(
    runs: dict[str, Callable[[], object]], repeats: int, device: str
) -> dict[str, list[float]]:
    """Seconds of each run, ``repeats`` times, interleaved (a, b, c, a, b, c, ...) after one
    warm-up of each; CUDA is synchronised around every run."""
    for run in runs.values():
        run()
    cuda = device.startswith("cuda")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def print_ratios(times: dict[str, list[float]], measured: str, target: float) -> None:
    """A table of medians and their ratios to the first run, then ``measured``'s ratio
    against ``target``."""
    names = list(times)
    reference = statistics.median(times[names[0]])
    width = max(16, max(map(len, names)) + 2)
    print(f"{'run':<{width}}{'median s':>10}{'ratio':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<{width}}{median:>10.3f}{median / reference:>8.3f}")
    ratio = statistics.median(times[measured]) / reference
    verdict = "OK" if ratio <= target else "OVER"
    print(f"{measured} / {names[0]} = {ratio:.3f} (target <= {target}): {verdict}")
