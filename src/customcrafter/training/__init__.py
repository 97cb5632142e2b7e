"""Training the subject module: data, the loop, class images, checkpoints."""

from .loop import TrainingInterrupted, compute_loss, train

__all__ = ["TrainingInterrupted", "compute_loss", "train"]
