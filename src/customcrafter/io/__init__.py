"""Reading images and writing videos."""

from .files import atomic_path, write_json
from .video import read_video, to_uint8_frames, write_video

__all__ = ["atomic_path", "read_video", "to_uint8_frames", "write_json", "write_video"]
