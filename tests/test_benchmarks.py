"""The benchmark scripts still run (on tiny models; their figures come from real sizes)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _benchmark(script: str, *args: str, timeout: int = 300) -> str:
    """What ``benchmarks/<script>`` prints when run with ``args``; it must succeed."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_the_videocrafter2_memory_benchmark_runs_at_tiny_size():
    args = ["--tiny", "--device", "cpu", "--steps", "2", "--train-steps", "1"]
    stdout = _benchmark("vc2_memory.py", *args)
    lines = stdout.splitlines()
    assert any(line.startswith("generate (sequential offload)") for line in lines)
    assert any(line.startswith("train (fp32, checkpointing)") for line in lines)


def test_the_word_probe_reads_the_shipped_model():
    stdout = _benchmark("shapes_word_probe.py")
    words, drift = stdout.split("Centroid of the guess")
    rows = {
        line.split("|")[1].strip(): [float(v) for v in line.split("|")[2:-1]]
        for line in words.splitlines()
        if line.startswith("| ") and line[2].isalpha() and "word changed" not in line
    }
    assert set(rows) == {
        "motion: moving right",
        "motion: standing still",
        "color: blue",
        "background: purple",
        "no prompt",
    }
    assert all(len(values) == 3 for values in rows.values())
    # the shipped model knows its colors and backgrounds (see docs/results/shapes-base.md)
    assert min(rows["color: blue"]) > 0.01 and min(rows["background: purple"]) > 0.01
    # and its guess from pure noise moves the object the prompt's way, by most of the
    # world's 14 px over a clip
    moves = {
        line.split("|")[1].strip(): tuple(float(v) for v in line.split("|")[2:-1])
        for line in drift.splitlines()
        if line.startswith("| ") and line[2].isalpha() and not line.startswith("| motion |")
    }
    assert set(moves) == {
        "moving left",
        "moving right",
        "moving up",
        "moving down",
        "standing still",
    }
    assert moves["moving left"][0] < -7 and moves["moving right"][0] > 7, moves
    assert moves["moving up"][1] < -7 and moves["moving down"][1] > 7, moves
    assert max(abs(v) for v in moves["standing still"]) < 7, moves


def test_the_wan_dwvs_benchmark_runs_at_tiny_size():
    args = ["--layers", "2", "--heads", "2", "--head-dim", "12", "--ffn", "32", "--size", "16x16"]
    args += ["--frames", "5", "--steps", "6", "--repeats", "1"]
    stdout = _benchmark("wan_dwvs_overhead.py", *args)
    rows = {line.split()[0] for line in stdout.splitlines() if line.strip()}
    ways = {"base", "dwvs-folded", "dwvs-folded-cold", "diffusers-base", "diffusers-set-adapters"}
    assert ways | {"base-float8", "dwvs-float8", "dwvs-float8-beside"} <= rows
    assert "dwvs-folded / base =" in stdout and "dwvs-float8 / base-float8 =" in stdout
    # the first video folds twice into one copy, the second once (0.4 gets its own copy)
    assert "dwvs-folded: 3 folds in 2 videos" in stdout


def test_the_wan_memory_benchmark_builds_the_release_shapes_and_runs_at_tiny_size():
    shapes = _benchmark("wan_memory.py", "--shapes")
    # Wan 2.1 T2V 1.3B: a 1.419 B transformer, UMT5-XXL's 5.681 B encoder, a 0.127 B VAE
    assert (
        shapes.split()
        == (
            "unet: 1.419 B parameters text_encoder: 5.681 B parameters vae: 0.127 B parameters"
        ).split()
    )
    args = ["--tiny", "--device", "cpu", "--steps", "2", "--train-steps", "1"]
    lines = _benchmark("wan_memory.py", *args).splitlines()
    for row in ("train 1-frame (identifier, cached)", "train 5-frame", "generate (model offload)"):
        assert any(line.startswith(row) for line in lines), row


def test_the_full_size_benchmark_runs_at_tiny_size():
    stdout = _benchmark("full_size.py", "--tiny")
    assert "lora layers: 12 |" in stdout  # 2 blocks x 6
    assert "comfyui keys: 36 | diffusers keys: 24" in stdout


def test_the_gpu_memory_check_runs_its_ways_on_the_cpu():
    stdout = _benchmark("memory_check.py", "--smoke")
    assert "tiny-wan train [1 GB:" in stdout and "step " in stdout
    assert "tiny-wan generate [1 GB:" in stdout


@pytest.mark.slow
def test_the_training_samples_picture_is_made_from_the_validation_rounds(tmp_path):
    out = tmp_path / "samples.png"
    args = ["--steps", "2", "--every", "1", "--out", str(out)]
    stdout = _benchmark("shapes_training_samples.py", *args, timeout=600)
    assert "3 steps" in stdout and out.is_file()  # before training, steps 1 and 2


def test_the_context_parallel_check_says_it_needs_gpus():
    """(It runs on N GPUs only: diffusers' context parallelism does not run on CPUs.)"""
    assert "--frames" in _benchmark("context_parallel.py", "--help")
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "context_parallel.py"), "--layers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "torchrun --nproc_per_node N" in result.stderr


@pytest.mark.slow
def test_the_several_processes_benchmark_runs_both_jobs_both_ways():
    stdout = _benchmark("several_processes.py", "--videos", "4", "--steps", "2", timeout=600)
    rows = [line for line in stdout.splitlines() if line.startswith("| generate") or
            line.startswith("| train")]  # fmt: skip
    assert len(rows) == 2 and all(row.endswith("x |") for row in rows), stdout
