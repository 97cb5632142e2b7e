"""Reading images and writing videos."""

from .video import read_video, to_uint8_frames, write_video

__all__ = ["read_video", "to_uint8_frames", "write_video"]
