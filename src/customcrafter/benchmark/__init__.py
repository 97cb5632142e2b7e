"""Benchmarks: a spec of subjects, prompts, seeds and methods; the runner that trains,
generates and scores what the spec asks for; the reports."""

from .load import load_spec
from .report import write_reports
from .runner import run_benchmark
from .spec import BenchmarkSpec

__all__ = ["BenchmarkSpec", "load_spec", "run_benchmark", "write_reports"]
