"""The package's layers import one way: no module imports a layer above its own, not even
inside a function (docs/ARCHITECTURE.md draws them)."""

import ast
import subprocess
import sys
from pathlib import Path

import customcrafter

PACKAGE = Path(customcrafter.__file__).parent
#: lowest first; a module may import its own layer and the layers before it
LAYERS = (
    ("errors", "config", "prompts", "io", "processes"),
    ("models",),
    ("subject",),
    ("sampling",),
    ("training", "evaluation"),
    ("shapes",),
    ("benchmark", "probe", "planning"),
    ("cli", "app"),
)
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _top(module: str) -> str:
    return module.split(".")[0]


def _imports(source: str, package: str) -> set[str]:
    """Top-level customcrafter subpackages that ``source``, a module of ``package``
    (``customcrafter.models``), imports, wherever the import stands."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "customcrafter" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_subpackage_has_a_layer():
    subpackages = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    subpackages -= {"__init__", "__pycache__"}
    assert subpackages <= set(LEVEL), subpackages - set(LEVEL)


def test_no_module_imports_a_higher_layer():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts == ("__init__.py",):
            continue  # the public API names every layer (imported on first use)
        own = LEVEL[_top(relative.with_suffix("").parts[0])]
        package = ".".join(("customcrafter", *relative.parts[:-1]))
        for imported in _imports(path.read_text(), package):
            if LEVEL[imported] > own:
                wrong.append(f"{relative} imports customcrafter.{imported}")
    assert not wrong, wrong


def test_the_layer_check_sees_every_form_of_import():
    source = (
        "from ..errors import UserError\n"
        "from . import base\n"
        "import customcrafter.io.files\n"
        "def f():\n    from ..benchmark import run_benchmark\n"
    )
    assert _imports(source, "customcrafter.models") == {"errors", "models", "io", "benchmark"}


def test_the_command_line_help_imports_no_torch():
    code = (
        "import sys; from customcrafter.cli import build_parser; build_parser(); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
