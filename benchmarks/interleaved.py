"""Side-by-side timing shared by the benchmarks: runs interleaved, medians, ratios.

A machine's speed drifts by several percent over minutes (other work, clocks, memory), more
than the differences these benchmarks look for. So the ways run in rounds, one run of each
back to back, in turn forwards and backwards (a drift within a round favours none), and a
ratio is the median over the rounds of that round's ratio: the drift between rounds cancels.
The ratio of the medians is printed beside it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_interleaved(
    runs: dict[str, Callable[[], object]], repeats: int, device: str
) -> dict[str, list[float]]:
    """Seconds of each run in each of ``repeats`` rounds (``times[name][round]``), after one
    warm-up of each; a round runs every way once, odd rounds in reverse order; CUDA is
    synchronised around every run."""
    for run in runs.values():
        run()
    cuda = device.startswith("cuda")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeats):
        order = list(runs.items())
        for name, run in order[::-1] if round_ % 2 else order:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(times: dict[str, list[float]], measured: str, reference: str) -> float:
    """The median over the rounds of ``measured``'s time over ``reference``'s."""
    return statistics.median(a / b for a, b in zip(times[measured], times[reference], strict=True))


def print_ratios(
    times: dict[str, list[float]], measured: str | None = None, target: float = 1.0
) -> None:
    """A table of each way's median and its ratios to the first way's (per round, and of the
    medians), then ``measured``'s per-round ratio against ``target`` (none without
    ``measured``)."""
    names = list(times)
    reference = statistics.median(times[names[0]])
    width = max(16, max(map(len, names)) + 2)
    print(f"{'run':<{width}}{'median s':>10}{'ratio':>8}{'of medians':>12}")
    for name, values in times.items():
        median = statistics.median(values)
        paired = paired_ratio(times, name, names[0])
        print(f"{name:<{width}}{median:>10.3f}{paired:>8.3f}{median / reference:>12.3f}")
    if measured is None:
        return
    print_verdict(times, measured, names[0], target)


def print_verdict(
    times: dict[str, list[float]], measured: str, reference: str, target: float | None
) -> None:
    """``measured / reference = r`` (per round), and against ``target`` where there is one."""
    ratio = paired_ratio(times, measured, reference)
    verdict = (
        "" if target is None else f" (target <= {target}): " + ("OK" if ratio <= target else "OVER")
    )
    print(f"{measured} / {reference} = {ratio:.3f}{verdict}")
