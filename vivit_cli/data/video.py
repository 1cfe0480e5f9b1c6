"""Video files through PyAV (the FFmpeg libraries): probing and decoding the frames of one clip."""

from __future__ import annotations

import numpy as np


class DecodeError(Exception):
    """A file that FFmpeg cannot read as video (message names the problem, not the file)."""


def _open(path: str):
    import av

    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise DecodeError(f"not a readable video ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not container.streams.video:
        container.close()
        raise DecodeError("has no video stream")
    return container


def probe(path: str) -> dict:
    """Frame count, size, rate and codec of the first video stream; decodes one frame to prove the file is video.

    The count comes from demuxing packets (no decoding) when the container does not store it (webm)."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        meta = {"width": stream.codec_context.width, "height": stream.codec_context.height,
                "codec": stream.codec_context.name, "fps": float(stream.average_rate or stream.base_rate or 0)}
        try:
            next(container.decode(stream))
            container.seek(0)
            count = sum(1 for p in container.demux(stream) if p.size)
        except (av.FFmpegError, StopIteration, OSError) as e:
            raise DecodeError(f"cannot decode video frames ({type(e).__name__})") from None
        if count == 0 or not meta["width"]:
            raise DecodeError("contains no video frames")
        meta["num_frames"] = count
        return meta
    finally:
        container.close()


def target_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(h, w) to decode at: the short side scaled down to `short_side` (`transforms.resized_size`), never up (the
    crops resample from the frame as decoded, so a small video is upscaled once, there)."""
    from .transforms import resized_size

    if not short_side or min(height, width) <= short_side:
        return height, width
    return resized_size(height, width, short_side)


def _rgb(frame, h: int, w: int) -> np.ndarray:
    """uint8 [h, w, 3]: converted to RGB at the coded size, then resized there (swscale, bilinear), as the references
    resize decoded RGB frames (DMVR's JPEG frames, Hugging Face's processor; tests/test_interop_hf.py compares).
    Scaling in the same pass as the conversion resizes the YUV 4:2:0 planes instead: on a colourful h264 clip halved
    its chroma came out 11/255 off PIL's RGB resize on average, the two passes 3/255 (and within rounding at
    non-integer factors). The cost is one more swscale pass per frame, only where the frame is resized."""
    rgb = frame.reformat(format="rgb24")
    if (rgb.height, rgb.width) != (h, w):
        rgb = rgb.reformat(width=w, height=h, interpolation="BILINEAR")
    return rgb.to_ndarray()


class VideoReader:
    """Decodes only the frames a clip needs, resized to `short_side` (`target_size`) by FFmpeg's swscale.

    With `seek` (segments of long videos: Epic-Kitchens' actions sit anywhere in an hour of video), decoding starts
    at the keyframe before the first wanted frame instead of at frame 0, and frames are numbered from their
    timestamps at the stream's frame rate. That numbering equals the decode order for constant-rate video (every
    published dataset here); when it cannot be trusted (no timestamps, a seek that lands past the frame) the reader
    decodes from the start instead."""

    def __init__(self, path: str, meta: dict, short_side: int | None, seek: bool = False):
        self.path = path
        self.num_frames = int(meta["num_frames"])
        self.size = target_size(meta["height"], meta["width"], short_side)
        self.fps = float(meta.get("fps") or 0) if seek else 0.0

    def frames(self, indices: np.ndarray) -> np.ndarray:
        wanted = np.asarray(indices)
        needed = {int(i) for i in wanted}
        got = None
        if self.fps > 0 and int(wanted.min()) >= SEEK_AFTER:
            got = self._decode(needed, seek_to=int(wanted.min()))
        if got is None:
            got = self._decode(needed, seek_to=None)
        if len(got) < len(needed):
            raise DecodeError(f"truncated: needed frame {max(needed)}, the file ends before it")
        return np.stack([got[int(i)] for i in wanted])

    def _decode(self, needed: set[int], seek_to: int | None) -> dict[int, np.ndarray] | None:
        import av

        last = max(needed)
        h, w = self.size
        got: dict[int, np.ndarray] = {}
        container = _open(self.path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if seek_to is None:
                numbered = enumerate(container.decode(stream))
            else:
                start = stream.start_time or 0
                tb = float(stream.time_base)
                container.seek(start + int((seek_to - 0.5) / self.fps / tb), stream=stream, backward=True,
                               any_frame=False)
                numbered = self._by_timestamp(container.decode(stream), start, tb)
            first = True
            for i, frame in numbered:
                if i is None or (seek_to is not None and first and i > seek_to):
                    return None  # no timestamps, or the seek overshot: decode from the start
                first = False
                if i in needed:
                    got[i] = _rgb(frame, h, w)
                if i >= last:
                    break
        except av.FFmpegError as e:
            raise DecodeError(f"decoding failed at frame {len(got)} ({type(e).__name__})") from None
        finally:
            container.close()
        return got

    def _by_timestamp(self, frames, start: int, tb: float):
        for frame in frames:
            yield (None if frame.pts is None else round((frame.pts - start) * tb * self.fps)), frame


# Below this frame, decoding from the start costs less than a seek (and keeps clips bit-identical to before).
SEEK_AFTER = 48


def write_video(path: str, frames: np.ndarray, codec: str = "libx264", fps: int = 8, gop: int | None = None) -> None:
    """Writes uint8 frames [T, H, W, 3] (for tests, benchmarks and examples); `gop`: frames between keyframes."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        if gop:
            stream.codec_context.gop_size = gop
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
