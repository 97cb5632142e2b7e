"""Every field of a subject file's metadata and every one of its tensors, damaged, and every
command that reads a subject file run on it (generate, export, the band probe, the app): the
outcome is exit 0 (the damage did not matter) or exit 2 with one ``error:`` line, never a
traceback, and the file is left as it was."""

import json
from dataclasses import fields

import pytest
import torch
from conftest import identifier_subject, learn_tiny_subject
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from customcrafter.cli import main
from customcrafter.errors import UserError
from customcrafter.subject import SubjectMetadata

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.slow]

#: what a damaged field may hold instead of its value
BAD_VALUES = [None, -1, 0, 1e30, "x", [], {}, True]
FIELDS = [f.name for f in fields(SubjectMetadata)]


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """A tiny subject with a learnt token (generate, the probe, the app) and a tiny-wan one
    named by an identifier (export)."""
    root = tmp_path_factory.mktemp("subjects")
    return {
        "tiny": learn_tiny_subject(root) / "subject.safetensors",
        "wan": identifier_subject(root / "wan" / "subject.safetensors"),
    }


def _damaged(source, target, field=None, value=None, tensor=None, how=None):
    with safe_open(str(source), framework="pt") as handle:
        meta = json.loads(handle.metadata()["customcrafter"])
    tensors = load_file(source)
    if field is not None:
        if value == "delete":
            meta.pop(field, None)
        else:
            meta[field] = value
    if tensor is not None:
        original = tensors[tensor]
        if how == "delete":
            del tensors[tensor]
        elif how == "nan":
            tensors[tensor] = torch.full_like(original, float("nan"))
        elif how == "shape":
            tensors[tensor] = torch.zeros(original.shape[0] + 1, 3)
        elif how == "ints":
            tensors[tensor] = original.to(torch.int32)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata={"customcrafter": json.dumps(meta)})
    return target


def _clean_outcome(argv, capsys):
    code = main(["-q", *map(str, argv)])
    err = capsys.readouterr().err
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err


def _every_command(bad, kind, tmp_path, capsys):
    """Run every command that reads a subject file on ``bad``; return nothing, assert."""
    before = bad.read_bytes()
    if kind == "wan":
        _clean_outcome(["export", bad, "--out", tmp_path / "lora.safetensors"], capsys)
    else:
        _clean_outcome(["generate", "--subject", bad, "--prompt", "a <new1> dog", "--out",
                        tmp_path / "v.mp4", "--steps", "6", "--num-frames", "2"], capsys)  # fmt: skip
        _clean_outcome(["probe", "bands", "--subject", bad, "--prompt", "a <new1> dog",
                        "--output-dir", tmp_path / "bands", "--samples", "1", "--steps", "2",
                        "--bands", "1"], capsys)  # fmt: skip
        _the_app_on(bad, tmp_path)
    assert bad.read_bytes() == before


def _the_app_on(bad, tmp_path):
    import shutil

    from customcrafter.app.jobs import AppSession
    from customcrafter.app.workspace import Workspace

    workspace = Workspace(tmp_path / "app")
    folder = workspace.subject_dir("bad")
    folder.mkdir(parents=True)
    shutil.copy(bad, folder / "subject.safetensors")
    entries = workspace.subjects()  # listing never fails
    assert [e.name for e in entries] == ["bad"]
    if entries[0].state == "learnt":
        try:
            AppSession(workspace, base="tiny", device="cpu").generate(
                "bad", "a <new1> dog", steps=6
            )
        except UserError:
            pass  # refused with a message the page shows


@pytest.mark.parametrize("kind", ["tiny", "wan"])
@pytest.mark.parametrize("value", [*BAD_VALUES, "delete"], ids=repr)
@pytest.mark.parametrize("field", FIELDS)
def test_every_metadata_field_damaged(subjects, tmp_path, capsys, kind, field, value):
    bad = _damaged(subjects[kind], tmp_path / "in" / "subject.safetensors", field, value)
    _every_command(bad, kind, tmp_path, capsys)


#: how a tensor is damaged; tensor i of a file gets the i-th (round robin)
TENSOR_DAMAGE = ["delete", "nan", "shape", "ints"]


@pytest.mark.parametrize("kind", ["tiny", "wan"])
def test_every_tensor_damaged(subjects, tmp_path, capsys, kind):
    names = sorted(load_file(subjects[kind]))
    for i, name in enumerate(names):
        how = TENSOR_DAMAGE[i % len(TENSOR_DAMAGE)]
        bad = _damaged(subjects[kind], tmp_path / f"in{i}" / "subject.safetensors", tensor=name,
                       how=how)  # fmt: skip
        _every_command(bad, kind, tmp_path / f"run{i}", capsys)
