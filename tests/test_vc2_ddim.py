"""The VideoCrafter2 pieces together: DDIM with guidance and signal scaling, as the original."""

import json

import torch
from safetensors import safe_open
from shared_data import GOLDEN, needs_golden

from customcrafter.models.videocrafter2.sampler import VC2DDIMSampler
from customcrafter.models.videocrafter2.schedule import VC2NoiseSchedule
from customcrafter.models.videocrafter2.unet import VC2UNet, VC2UNetConfig

PREFIX = "ckpt.model.diffusion_model."


@needs_golden
def test_guided_scaled_ddim_sampling_reproduces_the_original():
    with safe_open(str(GOLDEN), "pt") as f:
        meta = json.loads(f.metadata()["meta"])
        weights = {k[len(PREFIX) :]: f.get_tensor(k) for k in f.keys() if k.startswith(PREFIX)}
        golden = {k: f.get_tensor(f"ddim.{k}") for k in ("x_T", "cond", "uncond", "out")}
    params = meta["config"]["params"]
    unet = VC2UNet(VC2UNetConfig.from_dict(params["unet_config"]["params"])).eval()
    unet.load_state_dict(weights, strict=True)
    sampler = VC2DDIMSampler(VC2NoiseSchedule.from_ldm_params(params))
    settings = meta["ddim"]
    sampler.set_timesteps(settings["steps"])
    x = golden["x_T"]
    with torch.no_grad():
        for t in sampler.timesteps:
            t_batch = torch.full((x.shape[0],), int(t), dtype=torch.long)
            cond = unet(x, t_batch, golden["cond"], fps=settings["fps"])
            uncond = unet(x, t_batch, golden["uncond"], fps=settings["fps"])
            eps = uncond + settings["cfg_scale"] * (cond - uncond)
            x = sampler.step(eps, t, x, eta=settings["eta"]).prev_sample
    error = (x - golden["out"]).abs().max() / golden["out"].abs().max()
    assert error < 1e-4
