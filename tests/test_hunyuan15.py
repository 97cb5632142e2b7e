"""HunyuanVideo 1.5 as a base (sampling; training comes later), on tiny components of the
real diffusers classes built in code."""

import pytest
import torch

from customcrafter.cli import main
from customcrafter.errors import UserError
from customcrafter.io.video import read_video
from customcrafter.models import load_base_model
from customcrafter.models.hunyuan15 import HunyuanVideo15Model, build_tiny_hunyuan15_pipeline
from customcrafter.sampling import CustomCrafterPipeline

SIZE = dict(num_frames=5, height=32, width=32, num_inference_steps=3)


@pytest.mark.parametrize(
    "prompt, negative",
    [("a dog running", None), ('a dog holding a sign that says "hello"', "blurry")],
)
def test_sampling_equals_the_diffusers_pipeline(prompt, negative):
    """Same components, prompt, seed and scheduler: the same video, number for number (the
    second prompt quotes text: ByT5 encodes it for the glyph stream)."""
    pipe = build_tiny_hunyuan15_pipeline()
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompt, negative_prompt=negative, generator=torch.Generator().manual_seed(3),
                  output_type="pt", **SIZE).frames.permute(0, 2, 1, 3, 4)  # fmt: skip
    model = HunyuanVideo15Model.from_pipeline(pipe)
    ours = CustomCrafterPipeline(model)(
        prompt, seed=3, negative_prompt=negative or "", progress=False, **SIZE
    )
    assert ours.videos.shape == theirs.shape
    assert torch.equal(ours.videos, theirs)


def test_the_context_holds_both_encoders_and_their_masks():
    model = load_base_model("tiny-hunyuan15")
    ids = model.tokenize(["a dog", 'a sign that says "hi"'])
    assert ids.shape == (2, model.max_text_length)
    assert (ids[0, -256:] == -1).all() and (ids[1, -256:] >= 0).all()
    context = model.encode_text(ids)
    text, mask, glyph, glyph_mask = model._unpack(context)
    assert text.shape == (2, 1000, 32) and glyph.shape == (2, 256, 16)
    assert mask[0].sum() > 0 and glyph_mask[0].sum() == 0 and glyph_mask[1].sum() > 0
    assert glyph[0].abs().sum() == 0


def test_generate_takes_the_tiny_model_and_refuses_training(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    argv = ["-q", "generate", "--base", "tiny-hunyuan15", "--no-subject", "--prompt", "a dog",
            "--out", str(out), "--steps", "2", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert read_video(out).shape == (5, 32, 32, 3)
    model = load_base_model("tiny-hunyuan15")
    with pytest.raises(UserError, match="not supported yet"):
        model.sample_timesteps(1)
