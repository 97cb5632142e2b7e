"""What a shapes model with 16x16 latents would cost to train, beside the shipped 8x8 one.

The lab's last open lever (``docs/results/lab.md``, section 4) is more latent resolution.
This times, side by side in one run, one training step of each stage of
``customcrafter shapes train-base`` at ``--latent-size 8`` and ``--latent-size 16`` (the
recipe's own models and batch sizes, random weights), prints the ratios, and what the
whole recipe would take at these speeds:

    python benchmarks/lab_latent_cost.py            # about two minutes on a CPU
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from customcrafter.shapes.model import build_shapes_model, vae_config
from customcrafter.shapes.recipe import BaseRecipe
from customcrafter.shapes.train_base import unet_config, vae_batch


def _time(step, repeats: int) -> float:
    step()  # warm-up
    began = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - began) / repeats


def stage_times(latent_size: int, repeats: int) -> dict[str, float]:
    recipe = BaseRecipe(latent_size=latent_size)
    model = build_shapes_model(0, unet_config(recipe), vae_config(latent_size))
    vae, unet = model.vae.requires_grad_(True).train(), model.unet.requires_grad_(True).train()
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    x = vae_batch(0, 0, recipe.vae_batch_size)

    def vae_step():
        dist = vae.encode(x).latent_dist
        loss = F.mse_loss(vae.decode(dist.sample()).sample, x)
        vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        vae_opt.step()

    with torch.no_grad():
        latent = vae.encode(x[:1]).latent_dist.mean
    shape = (recipe.batch_size, latent.shape[1], 8, latent.shape[2], latent.shape[3])
    x0 = torch.randn(shape)
    t = torch.randint(0, model.num_train_timesteps, (shape[0],))
    context = torch.randn(shape[0], 16, unet.config.context_dim)
    unet_opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)

    def unet_step():
        noise = torch.randn(shape)
        pred = model.predict(model.add_noise(x0, noise, t), t, context, 8)
        loss = F.mse_loss(pred, model.training_target(x0, noise, t))
        unet_opt.zero_grad(set_to_none=True)
        loss.backward()
        unet_opt.step()

    return {
        "latent": f"{shape[3]}x{shape[4]}",
        "vae_step_s": _time(vae_step, repeats),
        "unet_step_s": _time(unet_step, repeats),
        "unet_params": sum(p.numel() for p in unet.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    recipe = BaseRecipe()
    rows = {size: stage_times(size, args.repeats) for size in (8, 16)}
    for size, row in rows.items():
        total = recipe.vae_steps * row["vae_step_s"] + recipe.steps * row["unet_step_s"]
        print(
            f"--latent-size {size:2d} ({row['latent']}, UNet {row['unet_params'] / 1e6:.2f}M):"
            f" VAE step {row['vae_step_s']:.2f} s, UNet step {row['unet_step_s']:.2f} s"
            f" (batch {recipe.batch_size}); the recipe's {recipe.vae_steps} + {recipe.steps}"
            f" steps: {total / 3600:.2f} h, without encoding the clip pool"
        )
    small, big = rows[8], rows[16]
    print(
        f"ratios 16 / 8: VAE step {big['vae_step_s'] / small['vae_step_s']:.2f}x,"
        f" UNet step {big['unet_step_s'] / small['unet_step_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
