"""Files: photos in, videos out, every write atomic."""

from .files import atomic_path, write_json
from .images import list_images, load_image
from .video import read_video, to_uint8_frames, write_video

__all__ = [
    "atomic_path",
    "list_images",
    "load_image",
    "read_video",
    "to_uint8_frames",
    "write_json",
    "write_video",
]
