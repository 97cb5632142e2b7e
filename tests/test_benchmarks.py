"""The benchmark scripts still run (on tiny models; their figures come from real sizes)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.slow
def test_the_videocrafter2_memory_benchmark_runs_at_tiny_size():
    args = ["--tiny", "--device", "cpu", "--steps", "2", "--train-steps", "1"]
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "vc2_memory.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("generate (sequential offload)") for line in lines)
    assert any(line.startswith("train (fp32, checkpointing)") for line in lines)
