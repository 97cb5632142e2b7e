"""VideoCrafter2's VAE, noise schedule and DDIM sampler reproduce the original code's numbers.

The reference vectors (``shared/golden/vc2_tiny_a.safetensors``) were produced by the
original VideoCrafter code at a tiny size; ``shared/specs`` lists the full checkpoint's keys.
"""

import json

import numpy as np
import pytest
import torch
from shared_data import GOLDEN, SPEC

from customcrafter.models.base import decode_frames
from customcrafter.models.videocrafter2.checkpoint import convert_vae_state_dict, load_vc2_vae
from customcrafter.models.videocrafter2.sampler import VC2DDIMSampler
from customcrafter.models.videocrafter2.schedule import VC2NoiseSchedule
from customcrafter.models.videocrafter2.vae import build_vc2_vae, encode_mean_scaled

SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "scale_arr",
)


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.exists():
        pytest.skip(f"reference vectors not found at {GOLDEN}")
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(GOLDEN), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
    tensors = load_file(str(GOLDEN))
    ckpt = {k.removeprefix("ckpt."): v for k, v in tensors.items() if k.startswith("ckpt.")}
    return meta, ckpt, tensors


@pytest.fixture(scope="module")
def spec():
    if not SPEC.exists():
        pytest.skip(f"checkpoint key list not found at {SPEC}")
    return json.loads(SPEC.read_text())


@pytest.fixture(scope="module")
def golden_vae(golden):
    meta, ckpt, _ = golden
    params = meta["config"]["params"]
    first_stage = params["first_stage_config"]["params"]
    return load_vc2_vae(
        ckpt, first_stage["ddconfig"], first_stage["embed_dim"], params["scale_factor"]
    )


def relative_error(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


# --- VAE ---------------------------------------------------------------------------------


def test_golden_vae_converts_every_key_and_loads_strictly(golden):
    meta, ckpt, _ = golden
    first_stage = meta["config"]["params"]["first_stage_config"]["params"]
    vae_keys = [k for k in ckpt if k.startswith("first_stage_model.")]
    converted = convert_vae_state_dict(ckpt)
    assert len(converted) == len(vae_keys)
    vae = build_vc2_vae(first_stage["ddconfig"], first_stage["embed_dim"])
    vae.load_state_dict(converted, strict=True)


def test_encoder_reproduces_the_scaled_posterior_mean(golden, golden_vae):
    _, _, tensors = golden
    latents = encode_mean_scaled(golden_vae, tensors["vae.image"])
    assert latents.shape == tensors["vae.latent_mean_scaled"].shape
    assert relative_error(latents, tensors["vae.latent_mean_scaled"]) < 1e-5


def test_decoder_reproduces_the_frame_by_frame_video(golden, golden_vae):
    meta, _, tensors = golden
    frames = meta["unet_call"]["frames"]
    latents = tensors["vae.latent_mean_scaled"].unsqueeze(2).repeat(1, 1, frames, 1, 1)
    # a chunk size that does not divide the frame count still decodes every frame
    video = decode_frames(golden_vae, latents, chunk_size=3)
    assert video.shape == tensors["vae.decoded_video"].shape
    assert relative_error(video, tensors["vae.decoded_video"]) < 1e-5


def test_full_size_vae_takes_every_checkpoint_vae_key_with_its_shape(spec):
    vae_spec = {k: v for k, v in spec.items() if k.startswith("first_stage_model.")}
    assert len(vae_spec) == 248
    with torch.device("meta"):
        vae = build_vc2_vae()
        state = {k: torch.empty(shape) for k, shape in vae_spec.items()}
    converted = convert_vae_state_dict(state)
    assert len(converted) == len(vae_spec)
    # strict: no missing or unexpected key; a wrong shape raises as well
    vae.load_state_dict(converted, strict=True, assign=True)


def test_conversion_refuses_a_vae_key_it_cannot_place(spec):
    with torch.device("meta"):
        state = {k: torch.empty(s) for k, s in spec.items() if k.startswith("first_stage_model.")}
        state["first_stage_model.encoder.down.3.attn.0.q.weight"] = torch.empty(512, 512, 1, 1)
    with pytest.raises(KeyError, match=r"down\.3\.attn\.0\.q\.weight"):
        convert_vae_state_dict(state)


# --- schedule ----------------------------------------------------------------------------


def test_schedule_buffers_equal_the_checkpoint_buffers(golden, spec):
    meta, ckpt, _ = golden
    buffers = VC2NoiseSchedule.from_ldm_params(meta["config"]["params"]).buffers()
    assert set(buffers) == set(SCHEDULE_BUFFERS)
    for name in SCHEDULE_BUFFERS:
        assert list(buffers[name].shape) == spec[name], name
        assert torch.equal(buffers[name], ckpt[name]), name


def test_scale_arr_ramps_from_one_to_0_7_over_400_steps():
    scale = VC2NoiseSchedule().scale_arr
    assert scale.shape == (1400,)
    assert scale[0] == 1.0 and scale[399] == pytest.approx(0.7)
    assert torch.all(scale[400:] == scale[399])
    assert torch.all(scale[1:400] < scale[:399])


def test_ddim_50_step_schedule_equals_the_original_samplers(golden):
    _, _, tensors = golden
    sampler = VC2DDIMSampler(VC2NoiseSchedule())
    sampler.set_timesteps(50)
    assert sampler.timesteps.tolist() == list(range(981, 0, -20))
    assert sampler.init_noise_sigma == 1.0
    tables = {
        "timesteps": sampler.ddim_timesteps,
        "alphas": sampler.ddim_alphas,
        "alphas_prev": sampler.ddim_alphas_prev,
        "sigmas_eta1": sampler.step_noise_std(1.0),
        "scale": sampler.ddim_scale,
        "scale_prev": sampler.ddim_scale_prev,
    }
    for name, table in tables.items():
        assert torch.equal(table, tensors[f"sched50.{name}"]), name


def _reference_coefficients(t: int, t_prev: int | None):
    """abar and s at t and t_prev, computed from the formulas in float64."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    abar = np.cumprod(1.0 - betas)
    scale = np.concatenate([np.linspace(1.0, 0.7, 400), np.full(600, 0.7)])
    if t_prev is None:  # the last step lands on abar[0], s[0]
        return abar[t], abar[0], scale[t], scale[0]
    return abar[t], abar[t_prev], scale[t], scale[t_prev]


@pytest.mark.parametrize(("t", "t_prev"), [(981, 961), (381, 361), (1, None)])
def test_deterministic_ddim_step_follows_the_scaled_update(t, t_prev):
    sampler = VC2DDIMSampler()
    sampler.set_timesteps(50)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 8, 8, generator=gen)
    eps = torch.randn(2, 4, 3, 8, 8, generator=gen)
    out = sampler.step(eps, torch.tensor(t), x, eta=0.0)

    a, a_prev, s, s_prev = _reference_coefficients(t, t_prev)
    x64, eps64 = x.double(), eps.double()
    x0 = (x64 - np.sqrt(1 - a) * eps64) / np.sqrt(a) / s
    expected = np.sqrt(a_prev) * s_prev * x0 + np.sqrt(1 - a_prev) * eps64
    assert out.prev_sample.dtype == torch.float32
    assert relative_error(out.pred_original_sample.double(), x0) < 1e-5
    assert relative_error(out.prev_sample.double(), expected) < 1e-5


@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_step_with_the_true_target_walks_along_the_forward_process(parameterization):
    schedule = VC2NoiseSchedule(parameterization=parameterization)
    sampler = VC2DDIMSampler(schedule)
    sampler.set_timesteps(50)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 4, 2, 8, 8, generator=gen)
    eps = torch.randn(1, 4, 2, 8, 8, generator=gen)
    x_t = schedule.add_noise(x0, eps, torch.tensor([401]))
    out = sampler.step(schedule.training_target(x0, eps, torch.tensor([401])), 401, x_t)
    torch.testing.assert_close(out.pred_original_sample, x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        out.prev_sample, schedule.add_noise(x0, eps, torch.tensor([381])), rtol=1e-5, atol=1e-5
    )


def test_the_v_target_is_the_velocity_of_the_scaled_signal():
    schedule = VC2NoiseSchedule(parameterization="v")
    x0, eps = torch.randn(2, 4, 2, 4, 4), torch.randn(2, 4, 2, 4, 4)
    t = torch.tensor([30, 900])
    a = schedule.alphas_cumprod.double()[t].reshape(2, 1, 1, 1, 1)
    s = schedule.scale_arr.double()[t].reshape(2, 1, 1, 1, 1)
    expected = a.sqrt() * eps.double() - (1 - a).sqrt() * s * x0.double()
    assert relative_error(schedule.training_target(x0, eps, t).double(), expected) < 1e-6
    assert torch.equal(VC2NoiseSchedule().training_target(x0, eps, t), eps)


def test_the_parameterization_comes_from_the_original_config_and_is_checked():
    assert VC2NoiseSchedule.from_ldm_params({}).parameterization == "eps"
    v = VC2NoiseSchedule.from_ldm_params({"parameterization": "v"})
    assert v.config["parameterization"] == "v"
    assert VC2NoiseSchedule(**v.config).parameterization == "v"
    with pytest.raises(ValueError, match="parameterization"):
        VC2NoiseSchedule.from_ldm_params({"parameterization": "x0"})


def test_stochastic_step_is_reproducible_with_a_generator():
    sampler = VC2DDIMSampler()
    sampler.set_timesteps(10)
    x = torch.randn(1, 4, 2, 4, 4)
    eps = torch.randn(1, 4, 2, 4, 4)
    t = sampler.timesteps[3]

    def run(eta):
        return sampler.step(eps, t, x, eta=eta, generator=torch.Generator().manual_seed(7))

    assert torch.equal(run(1.0).prev_sample, run(1.0).prev_sample)
    assert not torch.allclose(run(1.0).prev_sample, run(0.0).prev_sample)


def test_step_refuses_a_timestep_outside_the_schedule():
    sampler = VC2DDIMSampler()
    sampler.set_timesteps(50)
    with pytest.raises(ValueError, match="not in the schedule"):
        sampler.step(torch.zeros(1, 4), 500, torch.zeros(1, 4))
