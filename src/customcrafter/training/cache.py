"""Training inputs encoded once, so the VAE (and the text encoder) can leave the GPU.

Every photo is drawn as ``views`` training clips (each an independent draw of the flip,
caption template and Custom Diffusion's rescale augmentation, from the run's seed), and each
class image or clip ``class_views`` times. Their VAE latent distributions (mean and std) are
kept on the CPU, and a fresh latent is drawn from them at each step, as the uncached loop
draws one from the VAE. With no learnt token (``--identifier``) the captions' text
embeddings are kept too; a learnt token needs the text encoder's gradient, so its captions
stay token ids and the text encoder stays on the GPU.

A departure from the uncached loop: augmentation is a fixed pool of views per photo rather
than a new draw each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.base import BaseVideoModel


@dataclass
class CachedBatch:
    """Encoded training clips: the latent distribution ``mean`` / ``std`` ``[b, c, f', h', w']``,
    loss ``masks`` ``[b, 1, f, h/s, w/s]``, and ``texts``: caption embeddings ``[b, L, d]``,
    or token ids ``[b, L]`` when the text encoder runs in the step."""

    mean: torch.Tensor
    std: torch.Tensor
    masks: torch.Tensor
    texts: torch.Tensor
    prompts: list[str]


class EncodedClips:
    """A dataset's clips (``SubjectImages`` or ``ClassClips``) encoded once on the model's
    device and kept on the CPU; ``sample`` draws a batch of them."""

    def __init__(
        self,
        model: BaseVideoModel,
        dataset,
        views: int,
        rng: np.random.Generator,
        embed_text: bool,
        progress: bool = True,
        desc: str = "encoding",
    ):
        self.means, self.stds, self.masks, self.prompts = [], [], [], []
        bar = tqdm(total=len(dataset) * views, desc=desc, disable=not progress, leave=False)
        with torch.no_grad():
            for index in range(len(dataset)):
                for _ in range(views):
                    pixels, mask, prompt = dataset.view(index, rng)
                    mean, std = model.latent_distribution(pixels.unsqueeze(0))
                    self.means.append(mean[0].cpu())
                    self.stds.append(std[0].cpu())
                    self.masks.append(mask)
                    self.prompts.append(prompt)
                    bar.update(1)
            bar.close()
            self.texts: dict[str, torch.Tensor] = {}
            for prompt in dict.fromkeys(self.prompts):
                ids = model.tokenize([prompt])
                if embed_text:
                    self.texts[prompt] = model.encode_text(ids.to(model.device))[0].cpu()
                else:
                    self.texts[prompt] = ids[0]

    def __len__(self) -> int:
        return len(self.means)

    def sample(self, batch_size: int, rng: np.random.Generator) -> CachedBatch:
        picks = [int(rng.integers(0, len(self))) for _ in range(batch_size)]
        prompts = [self.prompts[i] for i in picks]
        return CachedBatch(
            torch.stack([self.means[i] for i in picks]),
            torch.stack([self.stds[i] for i in picks]),
            torch.stack([self.masks[i] for i in picks]),
            torch.stack([self.texts[p] for p in prompts]),
            prompts,
        )

    def nbytes(self) -> int:
        tensors = [*self.means, *self.stds, *self.texts.values()]
        return sum(t.numel() * t.element_size() for t in tensors)
