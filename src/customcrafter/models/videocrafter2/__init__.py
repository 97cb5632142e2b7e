"""VideoCrafter2 (the paper's base model): its 3D UNet, VAE, OpenCLIP text tower and noise
schedule, read from the original checkpoint or from a converted folder."""

from .checkpoint import VC2_DEFAULTS, VC2Components, read_checkpoint, split_checkpoint
from .folder import convert_videocrafter2, is_converted, read_converted, write_converted
from .model import VideoCrafter2Model
from .text import load_openclip_tokenizer

__all__ = [
    "VC2_DEFAULTS",
    "VC2Components",
    "VideoCrafter2Model",
    "convert_videocrafter2",
    "is_converted",
    "load_openclip_tokenizer",
    "read_checkpoint",
    "read_converted",
    "split_checkpoint",
    "write_converted",
]
