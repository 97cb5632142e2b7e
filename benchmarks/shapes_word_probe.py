"""How much each kind of word in a prompt moves the shapes model's prediction.

For one prompt and its variants that change a single word (motion, object color,
background), run the UNet on the same noisy latents and print the root-mean-square change
of its output at a few noise levels. A model that follows its prompts changes its output
for every kind of word; one whose motion row stays near zero ignores the motion words
(and then the initial noise alone decides where its objects go).

It then prints where the model's guess of the clean clip from pure noise puts the object
in the first and the last frame, for each motion word: a model that has learnt the
directions guesses the object at one edge in frame 1 and at the other in frame 8 (the
world moves it 14 px), since that is where the layout of its clips gets decided.

    python benchmarks/shapes_word_probe.py                    # the shipped model
    python benchmarks/shapes_word_probe.py --base runs/shapes/model
"""

from __future__ import annotations

import argparse

import torch

from customcrafter.models import load_base_model

PROMPT = "a red square moving left on a gray background"
VARIANTS = {
    "motion: moving right": PROMPT.replace("left", "right"),
    "motion: standing still": PROMPT.replace("moving left", "standing still"),
    "color: blue": PROMPT.replace("red", "blue"),
    "background: purple": PROMPT.replace("gray", "purple"),
    "no prompt": "",
}
#: noise levels probed: pure noise, and two where the layout is still being decided
TIMESTEPS = (999, 800, 500)


def _noise(model, samples: int, seed: int) -> torch.Tensor:
    """``samples`` latent noises of the model's default clip shape, drawn from ``seed``."""
    d, s = model.defaults, model.vae_scale_factor
    shape = (samples, model.unet.config.in_channels, d.num_frames, d.height // s, d.width // s)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def probe(model, timesteps=TIMESTEPS, samples: int = 8, seed: int = 0) -> dict:
    """``{variant: [rms change at each timestep]}`` against ``PROMPT``."""
    d = model.defaults
    noise = _noise(model, samples, seed)
    x0 = torch.zeros_like(noise)

    def context(text):
        return model.encode_text(model.tokenize([text] * samples))

    reference = context(PROMPT)
    variants = {name: context(text) for name, text in VARIANTS.items()}
    out: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for t in timesteps:
        steps = torch.full((samples,), t)
        x_t = model.add_noise(x0, noise, steps)  # pure noise at this level
        base = model.predict(x_t, steps, reference, d.fps)
        for name, ctx in variants.items():
            change = model.predict(x_t, steps, ctx, d.fps) - base
            out[name].append(float(change.pow(2).mean().sqrt()))
    return out


@torch.no_grad()
def drift(model, t: int = 999, samples: int = 16, seed: int = 0) -> dict:
    """``{motion: (dx, dy)}``: how far the centroid of the model's guess of the clean clip
    moves from the first frame to the last, on pure noise at timestep ``t``, averaged over
    ``samples`` noises. The centroid weighs each pixel by how far its color is from the
    gray background, less 0.3 (in the [-1, 1] range), so that the blur of the guess
    around the object counts little."""
    from customcrafter.shapes.world import BACKGROUNDS, MOTIONS

    d, schedule = model.defaults, model.noise_schedule
    noise = _noise(model, samples, seed)
    steps = torch.full((samples,), t)
    x_t = model.add_noise(torch.zeros_like(noise), noise, steps)
    a, b = schedule.sqrt_alphas_cumprod[t], schedule.sqrt_one_minus_alphas_cumprod[t]
    gray = torch.tensor(BACKGROUNDS["gray"]).float() / 127.5 - 1
    out = {}
    for motion in MOTIONS:
        context = model.encode_text(
            model.tokenize([PROMPT.replace("moving left", motion)] * samples)
        )
        pred = model.predict(x_t, steps, context, d.fps)
        if schedule.parameterization == "v":
            x0 = a * x_t - b * pred
        else:
            x0 = (x_t - b * pred) / a
        video = model.decode_video(x0 / schedule.scale_arr[t])  # [n, 3, f, h, w]
        mass = torch.relu((video - gray[None, :, None, None, None]).norm(dim=1) - 0.3)
        h, w = mass.shape[-2:]
        total = mass.sum((-1, -2)) + 1e-6
        x = (mass * (torch.arange(w) + 0.5)).sum((-1, -2)) / total
        y = (mass * (torch.arange(h)[:, None] + 0.5)).sum((-1, -2)) / total
        out[motion] = (float((x[:, -1] - x[:, 0]).mean()), float((y[:, -1] - y[:, 0]).mean()))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="shapes", help="model to probe (default: shapes)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load_base_model(args.base)
    rows = probe(model)
    print(f"RMS change of the UNet output against {PROMPT!r}")
    print(f"| word changed | {' | '.join(f't={t}' for t in TIMESTEPS)} |")
    print(f"| --- | {' | '.join('---' for _ in TIMESTEPS)} |")
    for name, values in rows.items():
        print(f"| {name} | {' | '.join(f'{v:.4f}' for v in values)} |")
    print()
    print("Centroid of the guess from pure noise (t=999), last frame minus first, in px")
    print("| motion | dx | dy |")
    print("| --- | --- | --- |")
    for motion, (dx, dy) in drift(model).items():
        print(f"| {motion} | {dx:+.1f} | {dy:+.1f} |")


if __name__ == "__main__":
    main()
