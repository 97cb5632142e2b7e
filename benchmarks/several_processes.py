"""What several processes buy: the same job on one process and on N (torchrun), side by side.

Two jobs on the built-in shapes model, each run whole from the command line (start-up,
model loading and writing included), first on one process with every core, then on N
processes with one core's share each:

- ``generate --prompts``: a prompt file times seeds, the videos split across the processes;
- ``train``: one process with N times the gradient accumulation against N processes (DDP),
  which learn the same module.

    python benchmarks/several_processes.py              # N = 2, this machine's cores shared
    python benchmarks/several_processes.py --processes 4 --videos 16

On a machine with GPUs run it with ``--device cuda``: each process then has a GPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def timed(command: list[str], env: dict) -> float:
    began = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--videos", type=int, default=8, help="prompt-file videos (by 4)")
    parser.add_argument("--steps", type=int, default=12, help="training steps")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n = args.processes
    cores = os.cpu_count() or 1
    one = {**os.environ, "OMP_NUM_THREADS": str(cores)}
    each = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // n))}
    cli = ["-m", "customcrafter.cli", "-q"]
    single = [sys.executable, *cli]
    launched = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(n), *cli]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prompts = root / "prompts.txt"
        lines = ["a red circle moving left", "a blue square moving up", "a green star",
                 "a yellow triangle moving right"]  # fmt: skip
        count = max(1, args.videos // len(lines))
        seeds = ",".join(str(s) for s in range(count))
        videos = count * len(lines)
        prompts.write_text("\n".join(lines) + "\n")
        generate = ["generate", "--base", "shapes", "--no-subject", "--prompts", str(prompts),
                    "--seeds", seeds, "--device", args.device, "--overwrite"]  # fmt: skip
        photos = root / "photos"
        photos.mkdir()
        rng = np.random.default_rng(0)
        for i in range(3):
            array = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(array).save(photos / f"{i}.png")
        train = ["train", "--base", "shapes", "--instance-data-dir", str(photos),
                 "--instance-prompt", "a <new1> circle", "--prior-loss-weight", "0",
                 "--max-train-steps", str(args.steps), "--overwrite"]  # fmt: skip
        rows = []
        for name, job, extra_one, extra_n in (
            (f"generate --prompts ({videos} videos)", generate,
             ["--output-dir", str(root / "g1")], ["--output-dir", str(root / "gn")]),
            (f"train ({args.steps} steps of {n} micro-batches)", train,
             ["--output-dir", str(root / "t1"), "--gradient-accumulation-steps", str(n)],
             ["--output-dir", str(root / "tn")]),
        ):  # fmt: skip
            alone = timed([*single, *job, *extra_one], one)
            spread = timed([*launched, *job, *extra_n], each)
            rows.append((name, alone, spread))
    print(f"{n} processes against one, {args.device}, {cores} CPU cores, whole commands")
    print("| job | 1 process (s) | " + f"{n} processes (s) | speedup |")
    print("|---|---:|---:|---:|")
    for name, alone, spread in rows:
        print(f"| {name} | {alone:.1f} | {spread:.1f} | {alone / spread:.2f}x |")


if __name__ == "__main__":
    main()
