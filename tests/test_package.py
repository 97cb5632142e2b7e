"""The package as an index would ship it: ``python -m build`` makes a wheel and an sdist
that ``twine check`` accepts and that hold what the package reads (the shapes model, the
bundled subjects, the report templates); installed into a fresh virtual environment
(without ``-e``), the command answers ``--version`` and runs the demo's quick path."""

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import customcrafter

ROOT = Path(__file__).parent.parent


def _run(*argv, cwd=None, timeout=600):
    result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, (argv, result.stdout[-2000:], result.stderr[-3000:])
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT))
    return out


def test_the_wheel_and_sdist_pass_twine_and_hold_the_package_data(dist):
    wheel = next(dist.glob("*.whl"))
    sdist = next(dist.glob("*.tar.gz"))
    assert customcrafter.__version__ in wheel.name and customcrafter.__version__ in sdist.name
    _run(sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("customcrafter/shapes/weights/", "customcrafter/shapes/subjects/",
                   "customcrafter/benchmark/templates/"):  # fmt: skip
        assert any(n.startswith(needed) for n in names), needed
    metadata = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    )
    assert f"Version: {customcrafter.__version__}" in metadata
    assert "License-Expression: Apache-2.0" in metadata and "Classifier:" in metadata
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "customcrafter = customcrafter.cli:main" in entry_points
    assert "shapes = customcrafter.shapes.lab:SHAPES" in entry_points


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_demo_in_a_fresh_environment(dist, tmp_path):
    # the dependencies (torch, diffusers, ...) come from this environment; the package itself
    # only from the wheel
    env = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env)
    python, command = env / "bin" / "python", env / "bin" / "customcrafter"
    wheel = next(dist.glob("*.whl"))
    _run(str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel))
    where = _run(str(python), "-c", "import customcrafter; print(customcrafter.__file__)",
                 cwd=tmp_path)  # fmt: skip
    assert where.strip().startswith(str(env)), where
    assert _run(str(command), "--version", cwd=tmp_path).strip() == (
        f"customcrafter {customcrafter.__version__}"
    )
    out = tmp_path / "demo"
    _run(str(command), "-q", "demo", "--steps", "3", "--output-dir", str(out), cwd=tmp_path)
    assert (out / "contact-sheet.png").is_file() and (out / "metrics.json").is_file()
