"""One training step, one denoising step, a text encoding and a VAE pass, run under the byte
counter: on the meta device for the plan (no weights, no GPU), on real tensors to check it.

Each function returns the *transient* bytes of what it runs: the peak of the tensors it
creates (activations, the gradients of the LoRA, casts of float8 weights, attention as the
fused kernel), over the weights and inputs that were there before it started. The plan adds
the weights each phase keeps on the device (``plan.py``). The steps do what the training
loop and the pipeline do, in the same order and dtypes (``training.loop.compute_loss``,
``sampling.pipeline._Guidance.predict``), without their bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .counter import counting


@dataclass
class Traced:
    """What a counted run cost: the peak bytes it added and its matrix-product FLOPs."""

    peak: int
    flops: int


def run_counted(device: str, model, fn) -> Traced:
    """``fn()`` under the counter, the peak over ``model``'s weights (held from the start, so
    that a view or a float8 cast of a weight counts only what it adds)."""
    counter, attention = counting(device)
    for module in model._components():
        counter.hold_module(module)
    baseline = counter.live
    with attention, counter:
        fn()
    return Traced(counter.peak - baseline, counter.flops)


def _ids(model, batch: int, device) -> torch.Tensor:
    """Token ids of captions as long as the encoder's context, none of them padding (the
    count that holds for any caption: a masked attention keeps no more)."""
    tokenizers = (model.tokenizer, getattr(model, "tokenizer_2", None))  # HunyuanVideo 1.5's ByT5
    pads = {getattr(t, "pad_token_id", None) for t in tokenizers}
    word = next(i for i in range(4) if i not in pads)
    return torch.full((batch, model.max_text_length), word, dtype=torch.long, device=device)


def text_encoding(model, prompts: int, device: str) -> Traced:
    """The text encoder on ``prompts`` captions, without gradient."""

    def run():
        with torch.no_grad():
            model.encode_text(_ids(model, prompts, device))

    return run_counted(device, model, run)


def video_encoding(model, frames: int, height: int, width: int, device: str) -> Traced:
    """The VAE's encoder on one clip (what caching the training inputs runs per view)."""

    def run():
        video = torch.zeros(1, 3, frames, height, width, device=device, dtype=_vae_dtype(model))
        with torch.no_grad():
            model.latent_distribution(video)

    return run_counted(device, model, run)


def video_decoding(model, frames: int, height: int, width: int, device: str) -> Traced:
    """The VAE's decoder on one video's latents (the end of a generation)."""
    shape = model.latent_shape(1, frames, height, width)

    def run():
        latents = torch.zeros(shape, device=device, dtype=model.dtype)
        with torch.no_grad():
            model.decode_video(latents)

    return run_counted(device, model, run)


def _vae_dtype(model) -> torch.dtype:
    return next(model.vae.parameters()).dtype


def denoising_step(model, frames: int, height: int, width: int, device: str) -> Traced:
    """One guided denoising step: the negative and the prompt in one batched call, or in two
    (``batch_guidance``), and the sampler's update."""
    fps = model.defaults.fps

    def run():
        # the sampler's state (LTX-2's holds the sound's latents as well)
        latents = model.initial_latents(1, frames, height, width, fps, None)
        latents = torch.zeros(latents.shape, device=device, dtype=model.dtype)
        context = torch.zeros(2, model.max_text_length, model.context_width(), device=device)
        context = context.to(model.dtype)
        t = torch.full((1,), 500, device=device, dtype=torch.float32)
        with torch.no_grad():
            if model.batch_guidance:
                out = model.predict(torch.cat([latents, latents]), t.expand(2), context, fps)
                uncond, cond = out.chunk(2)
            else:
                uncond = model.predict(latents, t, context[:1], fps)
                cond = model.predict(latents, t, context[1:], fps)
            guided = uncond + 5.0 * (cond - uncond)
            _ = latents - 0.02 * guided

    return run_counted(device, model, run)


def training_step(
    model,
    denoiser,
    optimizer,
    frames: int,
    height: int,
    width: int,
    batch: int,
    cached: bool,
    text_in_step: bool,
    device: str,
) -> Traced:
    """One optimizer step on ``batch`` instance and ``batch`` class clips: the latents drawn
    from the cache (or the clips encoded in the step), the text encoded in the step when the
    subject learns a token, forward, loss, backward, AdamW."""
    b = 2 * batch
    latent_shape = model.latent_shape(b, frames, height, width)
    denoiser.train()  # as the loop does (VideoCrafter2 checkpoints only in training mode)
    generator = torch.Generator().manual_seed(0)

    def run():
        if text_in_step:
            text = _ids(model, b, device)
        else:
            text = torch.zeros(b, model.max_text_length, model.context_width(), device=device)
            text = text.to(model.dtype)
        if cached:
            mean = torch.zeros(latent_shape, device=device, dtype=model.dtype)
            std = torch.zeros(latent_shape, device=device, dtype=model.dtype)
            latents = mean + std * torch.randn(mean.shape, generator=generator).to(mean)
        else:
            pixels = torch.zeros(b, 3, frames, height, width, device=device, dtype=model.dtype)
            with torch.no_grad():
                latents = model.encode_video(pixels, generator=generator)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        drawn = model.sample_timesteps(b, generator)
        timesteps = drawn.to(device)
        # the noise schedules read their tables at the timesteps (no values on meta)
        at = drawn if device == "meta" else timesteps
        noisy = model.add_noise(latents, noise, at)
        target = model.training_target(latents, noise, at)
        pred = denoiser(noisy, timesteps, text, model.defaults.fps)
        loss = (pred.float() - target.float()).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run_counted(device, model, run)


def start_optimizer(parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW over ``parameters`` with its state made (as after the first step), so that a
    counted step sees the state as resident, as every step but the first does."""
    optimizer = torch.optim.AdamW(parameters, lr=0.0, foreach=False)
    for p in parameters:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return optimizer
