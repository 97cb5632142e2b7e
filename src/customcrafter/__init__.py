"""CustomCrafter: subject-customized text-to-video generation that keeps the base model's
motion and concept composition (Wu et al., AAAI 2025).

The public API:

- :class:`CustomCrafterPipeline` - sampling, one ``__call__``.
- :class:`DynamicWeightSchedule` - the subject module's weight at each denoising step.
- :class:`SpatialSubjectModule` - LoRA on the spatial attention plus the new tokens.
- :func:`train` with :class:`TrainConfig` - learning a subject from photos.
- :func:`load_base_model` - the base video diffusion models.
"""

from .config import SampleConfig, TrainConfig
from .errors import UserError
from .models import load_base_model
from .sampling import CustomCrafterPipeline, DynamicWeightSchedule, VideoOutput
from .subject import SpatialSubjectModule
from .training import train

__version__ = "0.1.0"

__all__ = [
    "CustomCrafterPipeline",
    "DynamicWeightSchedule",
    "SampleConfig",
    "SpatialSubjectModule",
    "TrainConfig",
    "UserError",
    "VideoOutput",
    "load_base_model",
    "train",
]
