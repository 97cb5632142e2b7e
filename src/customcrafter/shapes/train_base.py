"""Train the shapes model from scratch on the shapes world, reproducibly from a seed.

Two stages, each drawing its data from ``(seed, step)``, so that a resumed run sees the same
data as an uninterrupted one:

1. the VAE (32x32 frames to 8x8x4 latents): reconstruction loss with a light KL term, on
   world frames and on generic two-tone textured shapes, so that it can also reproduce
   patterns the world never shows; its latent scale factor is then set from the data, as
   Stable Diffusion's 0.18215 was.
2. the UNet (the text tower frozen at its seeded initialization unless the recipe trains
   it), with VideoCrafter2's noise schedule, captions with parts left out, empty captions
   for classifier-free guidance, and a share of the timesteps from the noisiest third of
   the schedule. Its clips come from a pool encoded once by the frozen VAE. The learning
   rate warms up, then follows a cosine; the exponential moving average of the weights is
   what gets exported, with the recipe in the model's index.

The settings are ``recipe.BaseRecipe``. Output folder: ``model/`` (a converted model
folder: ``--base DIR/model``), ``train-state.pt`` (resumable, written atomically every
``checkpoint_every`` steps) and ``train-log.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import UserError
from ..io.files import atomic_path
from ..models.videocrafter2 import VC2Components, write_converted
from ..models.videocrafter2.unet import VC2UNetConfig
from .model import VAE_CHUNK_SIZE, VAE_CONFIG, build_shapes_model, unet_config_for, vae_config
from .recipe import BaseRecipe
from .world import (
    BACKGROUNDS,
    OBJECT_COLORS,
    SHAPES,
    ClipSpec,
    Subject,
    caption,
    random_spec,
    render_clip,
)


def _rng(seed: int, stage: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage, step])


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[..., h, w, 3]`` -> float ``[..., 3, h, w]`` in [-1, 1]."""
    x = torch.from_numpy(frames).float().div(127.5).sub(1.0)
    return x.movedim(-1, -3)


def textured_frame(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A random shape painted with a random two-tone pattern on a random background."""
    colors = list(OBJECT_COLORS.values()) + list(BACKGROUNDS.values())
    a, b = rng.choice(len(colors), 2, replace=False)
    pattern = str(rng.choice(["stripes", "checker", "face"]))
    shape = str(rng.choice(SHAPES))
    thing = Subject("texture", shape, "", pattern, colors[a], colors[b])
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = colors[int(rng.integers(len(colors)))]
    r = rng.uniform(5.0, 10.0)
    cx, cy = rng.uniform(r, size - r, 2)
    thing.paint(canvas, cx, cy, r)
    return canvas


def vae_batch(seed: int, step: int, count: int) -> torch.Tensor:
    """Half world frames, half textured frames, ``[count, 3, 32, 32]``."""
    rng = _rng(seed, 1, step)
    frames = []
    for i in range(count):
        if i % 2:
            frames.append(textured_frame(rng))
        else:
            clip = render_clip(random_spec(rng), int(rng.integers(2**31)))
            frames.append(clip[int(rng.integers(len(clip)))])
    return _to_tensor(np.stack(frames))


def training_caption(spec: ClipSpec, rng: np.random.Generator, color_dropout: float = 0.0) -> str:
    """The clip's caption, sometimes with its motion or background (or both) left out, or
    with a "video of" prefix; with probability ``color_dropout`` without the object's
    color (at 0 nothing is drawn for it, so the other captions stay the same)."""
    draw = rng.random()
    if draw < 0.15:
        text = f"a {spec.color} {spec.shape} {spec.motion}"
    elif draw < 0.3:
        text = f"a {spec.color} {spec.shape} on a {spec.background} background"
    elif draw < 0.4:
        text = f"a {spec.color} {spec.shape}"
    else:
        text = caption(spec.color, spec.shape, spec.motion, spec.background)
    if rng.random() < 0.2:
        text = "video of " + text
    if color_dropout > 0 and rng.random() < color_dropout:
        text = text.replace(f" {spec.color} ", " ", 1)  # object colors are not backgrounds
    return text


@dataclass
class LatentPool:
    """Clips for the diffusion stage, encoded once: ``latents [n, c, f, h, w]`` (sampled
    from the VAE's posterior, scaled) and the ``specs`` their captions are made from."""

    specs: list[ClipSpec]
    latents: torch.Tensor


def latent_pool(model, recipe: BaseRecipe, progress: bool = True) -> LatentPool:
    """``recipe.pool_size`` clips drawn from the seed and encoded by the (frozen) VAE."""
    rng = _rng(recipe.seed, 2, 0)
    specs = [random_spec(rng) for _ in range(recipe.pool_size)]
    seeds = rng.integers(2**31, size=len(specs))
    gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + 5)
    chunks = []
    size = 64
    bar = tqdm(total=len(specs), desc="encoding clips", disable=not progress)
    with torch.no_grad():
        for start in range(0, len(specs), size):
            part = zip(specs[start : start + size], seeds[start : start + size], strict=True)
            clips = np.stack([render_clip(spec, int(seed)) for spec, seed in part])
            video = _to_tensor(clips).permute(0, 2, 1, 3, 4)  # [b, f, 3, h, w] -> [b, 3, f, h, w]
            chunks.append(model.encode_video(video, generator=gen))
            bar.update(len(clips))
    bar.close()
    return LatentPool(specs, torch.cat(chunks))


def diffusion_batch(recipe: BaseRecipe, step: int, pool: LatentPool):
    """``(latents [b, c, f, h, w], captions)`` for one training step."""
    rng = _rng(recipe.seed, 3, step)
    index = rng.integers(len(pool.specs), size=recipe.batch_size)
    captions = [
        ""
        if rng.random() < recipe.caption_dropout
        else training_caption(pool.specs[i], rng, recipe.color_dropout)
        for i in index
    ]
    return pool.latents[torch.from_numpy(index)], captions


def training_timesteps(
    recipe: BaseRecipe, count: int, num_train_timesteps: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` timesteps, uniform over the schedule; a share ``high_noise_share`` of them
    from its noisiest third (at 0 nothing more is drawn from ``generator``)."""
    t = torch.randint(0, num_train_timesteps, (count,), generator=generator)
    if recipe.high_noise_share > 0:
        top = num_train_timesteps - num_train_timesteps // 3
        high = torch.randint(top, num_train_timesteps, (count,), generator=generator)
        pick = torch.rand(count, generator=generator) < recipe.high_noise_share
        t = torch.where(pick, high, t)
    return t


def learning_rate(recipe: BaseRecipe, step: int) -> float:
    """Linear warm-up, then a cosine from the peak down to ``final_lr_fraction`` of it."""
    if step < recipe.warmup_steps:
        return recipe.learning_rate * (step + 1) / recipe.warmup_steps
    span = max(1, recipe.steps - recipe.warmup_steps)
    progress = min(1.0, (step - recipe.warmup_steps) / span)
    low = recipe.final_lr_fraction
    return recipe.learning_rate * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress)))


class _State:
    """Training state saved to ``train-state.pt`` (atomically) and resumed from it."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


def train_base(
    out_dir: str | Path, recipe: BaseRecipe | None = None, progress: bool = True
) -> Path:
    """Run (or resume) the recipe in ``out_dir``; returns the exported model folder."""
    recipe = recipe or BaseRecipe()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = _State(out / "train-state.pt")
    saved = store.load()
    if saved is not None:
        _check_same_recipe(out, saved["recipe"], recipe)
    model = build_shapes_model(recipe.seed, unet_config(recipe), vae_config(recipe.latent_size))
    train_vae(model, recipe, store, saved, progress)
    train_denoiser(model, recipe, store, saved, progress)
    return export(model, out / "model", recipe)


def _check_same_recipe(out: Path, saved: dict, recipe: BaseRecipe) -> None:
    ours = dataclasses.asdict(recipe)
    if saved == ours:
        return
    differ = ", ".join(
        f"{k}={saved.get(k)!r} (asked: {ours.get(k)!r})"
        for k in sorted(saved.keys() | ours.keys())
        if saved.get(k) != ours.get(k)
    )
    raise UserError(
        f"{out} holds a run with other settings: {differ}; use another --out or the same settings"
    )


def train_vae(model, recipe: BaseRecipe, store: _State, saved: dict | None, progress: bool):
    """Stage 1: the VAE, then its latent scale factor from the data."""
    vae = model.vae
    vae.requires_grad_(True).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_learning_rate, weight_decay=0.0)
    start = 0
    if saved is not None:
        vae.load_state_dict(saved["vae"])
        if saved["stage"] == "vae":
            opt.load_state_dict(saved["opt"])
            start = saved["step"]
        else:
            start = recipe.vae_steps
    bar = _steps("VAE", start, recipe.vae_steps, progress)
    for step in bar:
        x = vae_batch(recipe.seed, step, recipe.vae_batch_size)
        dist = vae.encode(x).latent_dist
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + step)
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        rec = F.mse_loss(recon, x)
        kl = dist.kl().mean() / z[0].numel()
        loss = rec + recipe.vae_kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(rec=f"{rec.item():.4f}")
        if (step + 1) % recipe.checkpoint_every == 0 or step + 1 == recipe.vae_steps:
            store.save(
                {
                    "recipe": dataclasses.asdict(recipe),
                    "stage": "vae",
                    "step": step + 1,
                    "vae": vae.state_dict(),
                    "opt": opt.state_dict(),
                }
            )
            _log(store.path.parent, {"stage": "vae", "step": step + 1, "rec": rec.item()})
    vae.requires_grad_(False).eval()
    with torch.no_grad():
        latents = torch.cat(
            [vae.encode(vae_batch(recipe.seed, 10**6 + i, 64)).latent_dist.mean for i in range(4)]
        )
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))


def train_denoiser(model, recipe: BaseRecipe, store: _State, saved: dict | None, progress: bool):
    """Stage 2: the UNet (and the text tower, if the recipe trains it) on the latent pool;
    the weights end as their exponential moving average."""
    unet, text = model.unet, model.text_encoder
    trained = (unet, text) if recipe.train_text_encoder else (unet,)
    params = [p for module in trained for p in module.parameters()]
    text.requires_grad_(False).eval()
    for module in trained:
        module.requires_grad_(True).train()
    opt = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    start = 0
    if saved is not None and saved["stage"] == "diffusion":
        unet.load_state_dict(saved["unet"])
        text.load_state_dict(saved["text"])
        opt.load_state_dict(saved["opt"])
        ema = saved["ema"]
        start = saved["step"]
    fps = model.defaults.fps
    pool = latent_pool(model, recipe, progress) if start < recipe.steps else None
    bar = _steps("UNet", start, recipe.steps, progress)
    began = time.perf_counter()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = learning_rate(recipe, step)
        x0, captions = diffusion_batch(recipe, step, pool)
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + 7 + step)
        torch.manual_seed(recipe.seed * 1_000_003 + 11 + step)  # dropout, as on resume
        noise = torch.randn(x0.shape, generator=gen)
        t = training_timesteps(recipe, x0.shape[0], model.num_train_timesteps, gen)
        context = text(model.tokenize(captions))
        pred = model.predict(model.add_noise(x0, noise, t), t, context, fps)
        loss = F.mse_loss(pred, model.training_target(x0, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(recipe.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % recipe.checkpoint_every == 0 or step + 1 == recipe.steps:
            store.save(
                {
                    "recipe": dataclasses.asdict(recipe),
                    "stage": "diffusion",
                    "step": step + 1,
                    "vae": model.vae.state_dict(),
                    "unet": unet.state_dict(),
                    "text": text.state_dict(),
                    "opt": opt.state_dict(),
                    "ema": ema,
                }
            )
            entry = {"stage": "unet", "step": step + 1, "loss": loss.item()}
            entry["seconds"] = round(time.perf_counter() - began, 1)
            _log(store.path.parent, entry)
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)


def _steps(desc: str, start: int, stop: int, progress: bool) -> tqdm:
    """Steps ``start..stop-1`` under a progress bar that counts to ``stop`` (a resumed run
    shows where it stands in the whole)."""
    return tqdm(range(start, stop), desc=desc, disable=not progress, initial=start, total=stop)


def unet_config(recipe: BaseRecipe) -> VC2UNetConfig:
    """The UNet the recipe trains: ``UNET_CONFIG`` (for its latent size) with the recipe's
    temporal text setting."""
    return dataclasses.replace(
        unet_config_for(recipe.latent_size),
        temporal_selfatt_only=not recipe.temporal_cross_attention,
    )


def _log(out: Path, entry: dict) -> None:
    """Append one line to ``train-log.jsonl`` (opened per line: nothing is left open when
    training is interrupted)."""
    with (out / "train-log.jsonl").open("a") as log:
        log.write(json.dumps(entry) + "\n")


def export(model, folder: Path, recipe: BaseRecipe | None = None) -> Path:
    """Write the model in the converted-folder format (what ``--base`` loads), with the
    recipe it was trained with in its index (``"training"``)."""
    vae_config = {k: v for k, v in dict(model.vae.config).items() if k in VAE_CONFIG}
    components = VC2Components(
        unet_config=model.unet.config,
        unet=dict(model.unet.state_dict()),
        vae_config=vae_config,
        vae=dict(model.vae.state_dict()),
        text_config=model.text_encoder.config,
        text=dict(model.text_encoder.state_dict()),
        noise_schedule=model.noise_schedule.config,
    )
    return write_converted(
        components,
        model.tokenizer,
        folder,
        model.defaults,
        source="customcrafter shapes train-base",
        overwrite=True,
        training=None if recipe is None else {"recipe": dataclasses.asdict(recipe)},
        vae_chunk_size=VAE_CHUNK_SIZE,
    )
