"""Videos stored as folders of JPEG frames (Epic-Kitchens' rgb_frames/<video_id>/frame_0000000001.jpg, ...)."""

from __future__ import annotations

import os
import re

import numpy as np

from .video import DecodeError, target_size

FRAME_NAME = "frame_{:010d}.jpg"  # 1-based, as the published rgb_frames are
_FRAME_RE = re.compile(r"frame_(\d+)\.jpg$")


def probe_frames(folder: str) -> dict:
    """num_frames (the highest frame number: frames are numbered from 1 without gaps), size from frame 1."""
    try:
        numbers = [int(m.group(1)) for e in os.scandir(folder) if (m := _FRAME_RE.match(e.name))]
    except OSError as e:
        raise DecodeError(f"cannot list frames ({type(e).__name__})") from None
    if not numbers:
        raise DecodeError(f"no {FRAME_NAME.format(1).replace('1', 'N', 1)} frames")
    first = _load(os.path.join(folder, FRAME_NAME.format(min(numbers))))
    return {"width": first.shape[1], "height": first.shape[0], "codec": "jpeg frames", "fps": 0.0,
            "num_frames": max(numbers), "frames_dir": True}


def _load(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if size is not None and (im.height, im.width) != size:
                im.draft("RGB", (size[1], size[0]))  # JPEG decodes at 1/2, 1/4... of full size when that suffices
                im = im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DecodeError(f"missing frame {os.path.basename(path)}") from None
    except OSError as e:
        raise DecodeError(f"unreadable frame {os.path.basename(path)} ({type(e).__name__})") from None


class FrameFolderReader:
    """Frames 0..num_frames-1 of a folder (file numbers are 1-based), resized so the short side is `short_side`."""

    def __init__(self, folder: str, meta: dict, short_side: int | None):
        self.folder = folder
        self.num_frames = int(meta["num_frames"])
        self.size = target_size(meta["height"], meta["width"], short_side)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        return np.stack([_load(os.path.join(self.folder, FRAME_NAME.format(int(i) + 1)), self.size)
                         for i in np.asarray(indices)])
