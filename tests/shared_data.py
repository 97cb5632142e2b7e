"""Where the project's reference data lives: ``shared/`` beside the checkout (CI clones the
repository with it there). Tests that need it skip, saying why, when it is absent."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "golden" / "vc2_tiny_a.safetensors"
SPEC = SHARED / "specs" / "videocrafter2_checkpoint_keys.json"

needs_golden = pytest.mark.skipif(not GOLDEN.exists(), reason=f"reference file {GOLDEN} absent")
needs_spec = pytest.mark.skipif(not SPEC.exists(), reason=f"checkpoint key list {SPEC} absent")
