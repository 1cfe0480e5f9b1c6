"""Clip sampling and augmentation, pure numpy on uint8 frames [T, H, W, 3].

One geometry for training and evaluation (the reference's: DMVR's resize_smallest, then crops of the crop size):
frames are resized so that their short side is `ClipSpec.resize` (`data.eval_resize`, default round(crop * 8 / 7):
256 for a 224 crop), the long side in proportion (rounded down, as DMVR and Hugging Face's processor do).
Train: `data.frames` frames at `data.stride` from a random temporal offset; the resized frame scaled again by
s_h, s_w ~ U(scale_min, scale_max), drawn apart (DMVR's scale_jitter_augm); a crop x crop window at a random
whole-pixel offset of that; optional flip, colour jitter and RandAugment.
Eval: T temporal clips evenly spread x S crop x crop windows of the resized frame: the centre one for S = 1; for
S = 3 Scenic's three crops (start, middle, end of the long side, centred on the short one), other S in between.
Each crop is one bilinear crop-and-resize of the source frames (`crop_resize`): the region that the crop covers
in the resized frame, mapped back, so frames already at the resized size (decoded video) are copied pixel for pixel.
Output pixels are float32 in [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipSpec:
    frames: int
    stride: int
    crop: int
    scale_min: float = 0.9
    scale_max: float = 1.33
    flip: bool = False
    color_jitter: float = 0.0
    randaugment_layers: int = 0
    randaugment_magnitude: int = 15
    resize: int | None = None  # short side before crops; None: default_resize(crop)
    on_device: bool = False  # the train crop's interpolation runs in the compiled step (`train_window`)

    @property
    def span(self) -> int:
        """Frames of the source covered by one clip."""
        return (self.frames - 1) * self.stride + 1

    @property
    def short_side(self) -> int:
        return default_resize(self.crop) if self.resize is None else self.resize

    @property
    def flip_only(self) -> bool:
        """No augmentation but (maybe) the flip: the pipelines then flip and scale without `augment`'s copies."""
        return not (self.color_jitter > 0 or self.randaugment_layers)


def default_resize(crop: int) -> int:
    """The reference's ratio of resize to crop, 256 : 224."""
    return round(crop * 8 / 7)


def resized_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """(h, w) with the short side scaled to `short_side`, the long one to its share rounded down (DMVR's
    resize_smallest; Hugging Face's shortest_edge gives the same)."""
    if h <= w:
        return short_side, max(short_side, w * short_side // h)
    return max(short_side, h * short_side // w), short_side


def to_unit_range(x: np.ndarray) -> np.ndarray:
    """Pixels in [0, 255] (uint8, or float32 after resizing) -> float32 [-1, 1], zero-centred as the reference
    checkpoints expect. The one spelling of this scaling, so train, eval and still images match to the bit."""
    return unit_range_in_place(x.astype(np.float32))  # a copy, then the scaling in place


def unit_range_in_place(y: np.ndarray) -> np.ndarray:
    """`to_unit_range` of a float32 array, in place: the same float32 products as x * (2 / 255) - 1."""
    y *= np.float32(2 / 255)
    y -= np.float32(1)
    return y


def frame_indices(start: int, spec: ClipSpec, num_frames: int) -> np.ndarray:
    """Indices of one clip; a video shorter than the span loops (only where the caller allows it)."""
    return (start + np.arange(spec.frames) * spec.stride) % max(num_frames, 1)


def random_start(rng: np.random.Generator, num_frames: int, spec: ClipSpec) -> int:
    return int(rng.integers(0, max(num_frames - spec.span, 0) + 1))


def even_starts(num_frames: int, spec: ClipSpec, count: int) -> list[int]:
    """`count` clip starts spread evenly over the video (the centre when count == 1)."""
    room = max(num_frames - spec.span, 0)
    if count == 1:
        return [room // 2]
    return [int(round(i * room / (count - 1))) for i in range(count)]


def _axis_weights(n_in: int, start: float, length: float, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Sample at pixel centres of the output grid mapped onto [start, start + length) of the input.
    pos = start + (np.arange(n_out, dtype=np.float32) + 0.5) * (length / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def _weight_matrix(n_in: int, start: float, length: float, n_out: int) -> np.ndarray:
    i0, i1, w = _axis_weights(n_in, start, length, n_out)
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1 - w)
    np.add.at(m, (np.arange(n_out), i1), w)
    return m


def crop_resize(frames: np.ndarray, top: float, left: float, size_h: float, size_w: float,
                out_h: int, out_w: int, *, flip: bool = False, unit_range: bool = False) -> np.ndarray:
    """Bilinear resize of the region [top, top+size_h) x [left, left+size_w) of frames [T, H, W, C] -> float32.

    `flip` mirrors the result left/right and `unit_range` scales it to [-1, 1] as `to_unit_range` does: for large
    frames both are done frame by frame while the frame is in cache (the columns' taps taken in reverse order, the
    same float32 products in place), bit for bit what flipping and scaling the whole result gives."""
    if max(frames.shape[1:3]) <= 96:
        out = _crop_resize_small(frames, top, left, size_h, size_w, out_h, out_w)
        out = out[:, :, ::-1] if flip else out
        return to_unit_range(out) if unit_range else out
    return _crop_resize_large(frames, top, left, size_h, size_w, out_h, out_w, flip, unit_range)


def _crop_resize_small(frames, top, left, size_h, size_w, out_h, out_w):
    # Small frames: two BLAS matmuls with dense interpolation weights beat four fancy-index gathers 3x.
    t, h, w, c = frames.shape
    wr = _weight_matrix(h, top, size_h, out_h)
    wc = _weight_matrix(w, left, size_w, out_w)
    rows = np.matmul(wr, frames.reshape(t, h, w * c).astype(np.float32)).reshape(t, out_h, w, c)
    return np.matmul(wc, rows)


def _crop_resize_large(frames, top, left, size_h, size_w, out_h, out_w, flip, unit_range):
    t, h, w, c = frames.shape
    # Large frames: per frame, gather the needed rows while still uint8 (a quarter of the bytes), interpolate them
    # (a + (b - a) * w), gather the needed columns as whole pixels (np.take of 12-byte items: fancy indexing along
    # a middle axis of 3-float pixels cost 3-6x more) and interpolate those, in place. The same float32 operations
    # as the whole-clip expression, so the pixels are equal bit for bit (tests/test_records.py), but a frame's
    # buffers stay in cache: 2.3x less CPU for a 32x256x341 clip cropped to 224 (benchmarks/RESULTS.md).
    r0, r1, wr = _axis_weights(h, top, size_h, out_h)
    c0, c1, wc = _axis_weights(w, left, size_w, out_w)
    lo, hi = int(c0.min()), int(c1.max()) + 1
    if flip:  # output column j is column out_w - 1 - j: its taps and weight, the same arithmetic
        c0, c1, wc = c0[::-1], c1[::-1], wc[::-1]
    c0, c1, wr, wc = c0 - lo, c1 - lo, wr[:, None, None], wc[None, :, None]
    pixel = np.dtype((np.void, 4 * c))
    out = np.empty((t, out_h, out_w, c), np.float32)
    rows, step = np.empty((out_h, hi - lo, c), np.float32), np.empty((out_h, hi - lo, c), np.float32)
    col_step = np.empty((out_h, out_w, c), np.float32)
    for i in range(t):
        sub = frames[i, :, lo:hi]
        a, b = np.take(sub, r0, axis=0), np.take(sub, r1, axis=0)
        np.subtract(b, a, out=step, dtype=np.float32)
        step *= wr
        np.add(a, step, out=rows, dtype=np.float32)
        pixels, frame = rows.view(pixel)[..., 0], out[i]
        np.take(pixels, c0, axis=1, out=frame.view(pixel)[..., 0])
        np.take(pixels, c1, axis=1, out=col_step.view(pixel)[..., 0])
        col_step -= frame
        col_step *= wc
        frame += col_step
        if unit_range:
            unit_range_in_place(frame)
    return out


def _jittered(n: int, s: float) -> int:
    return int(np.float32(s) * np.float32(n))  # DMVR: tf.cast(scale * float32(size), int32)


def crop_box(h: int, w: int, rng: np.random.Generator, spec: ClipSpec) -> tuple[float, float, float, float]:
    """The draws of `random_crop`: (top, left, size_h, size_w) in a frame of h x w of the crop x crop window
    taken at a random whole-pixel offset of the frame resized to the short side, then scaled by (s_h, s_w).
    A jittered side shorter than the crop (scale_min < crop / resize) is squeezed whole into it instead."""
    rh, rw = resized_size(h, w, spec.short_side)
    s_h = rng.uniform(spec.scale_min, spec.scale_max)
    s_w = rng.uniform(spec.scale_min, spec.scale_max)
    jh, jw = _jittered(rh, s_h), _jittered(rw, s_w)
    top = int(rng.integers(0, max(jh - spec.crop, 0) + 1))
    left = int(rng.integers(0, max(jw - spec.crop, 0) + 1))
    return top * h / jh, left * w / jw, min(spec.crop, jh) * h / jh, min(spec.crop, jw) * w / jw


def random_crop(frames: np.ndarray, rng: np.random.Generator, spec: ClipSpec) -> np.ndarray:
    """Scale jitter then a random crop, as one crop-and-resize of the source frames."""
    _, h, w, _ = frames.shape
    top, left, side_h, side_w = crop_box(h, w, rng, spec)
    return crop_resize(frames, top, left, side_h, side_w, spec.crop, spec.crop)


def _axis_weights_batch(n_in: int, starts, lengths, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_axis_weights` of B regions at once ([B, n_out] each), with the same float32 arithmetic element by element:
    the scalar version turns its Python-float start and step into float32 before it adds and multiplies."""
    start = np.asarray(starts, np.float64).astype(np.float32)[:, None]
    step = (np.asarray(lengths, np.float64) / n_out).astype(np.float32)[:, None]
    pos = start + (np.arange(n_out, dtype=np.float32) + 0.5) * step - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def _weight_matrices(n_in: int, starts, lengths, n_out: int) -> np.ndarray:
    """[B, n_out, n_in]: `_weight_matrix` of each region (where both taps fall on one input, the same float32 sum)."""
    i0, i1, w = _axis_weights_batch(n_in, starts, lengths, n_out)
    b = np.arange(len(i0))[:, None]
    o = np.arange(n_out)[None, :]
    m = np.zeros((len(i0), n_out, n_in), np.float32)
    m[b, o, i0] += 1 - w
    m[b, o, i1] += w
    return m


def crop_resize_batch(frames: np.ndarray, tops, lefts, sizes_h, sizes_w, out_h: int, out_w: int) -> np.ndarray:
    """`crop_resize` of clip i of frames [B, T, H, W, C] to its own region (tops[i], lefts[i], sizes_h[i],
    sizes_w[i]) -> float32 [B, T, out_h, out_w, C], equal to the clips' own `crop_resize` bit for bit.

    Small frames: `crop_resize`'s two matmuls, each stacked over the batch, so that BLAS gets the same 2-D products
    (same shapes, same operands) as clip by clip. Rewriting a product in another shape, e.g. the column pass as one
    (out_w x W) @ (W x T*out_h*C) product or as its two taps, changes the last bit of some pixels: BLAS kernels sum
    differently (fused or not) by shape. The batch saves the per-clip Python and weight-building work."""
    b, t, h, w, c = frames.shape
    if max(h, w) > 96:
        return np.stack([crop_resize(frames[i], tops[i], lefts[i], sizes_h[i], sizes_w[i], out_h, out_w)
                         for i in range(b)])
    wr = _weight_matrices(h, tops, sizes_h, out_h)
    wc = _weight_matrices(w, lefts, sizes_w, out_w)
    rows = np.matmul(wr[:, None], frames.reshape(b, t, h, w * c).astype(np.float32)).reshape(b, t, out_h, w, c)
    return np.matmul(wc[:, None, None], rows)


def view_offsets(h: int, w: int, crop: int, count: int) -> list[tuple[int, int]]:
    """(top, left) of `count` crop x crop windows of an h x w frame (already resized). One view: the centre,
    rounded down (DMVR's central crop, Hugging Face's center_crop). Several: spread along the long side from one end
    to the other (the width when square), centred on the short side rounded up; for 3 exactly Scenic's
    deterministic_crop (0, ceil(room / 2), room)."""
    if count == 1:
        return [((h - crop) // 2, (w - crop) // 2)]
    along_h = h > w
    room = (h if along_h else w) - crop
    across = -(-((w if along_h else h) - crop) // 2)
    spread = [(2 * i * room + count - 1) // (2 * (count - 1)) for i in range(count)]  # i * room / (count-1), half up
    return [(o, across) if along_h else (across, o) for o in spread]


def spatial_views(frames: np.ndarray, spec: ClipSpec, count: int, unit_range: bool = False) -> list[np.ndarray]:
    """`count` crop x crop views of frames [T, H, W, 3] resized to the short side (`view_offsets`), float32 (in
    [-1, 1] with `unit_range`, scaled inside the crop: `crop_resize`)."""
    _, h, w, _ = frames.shape
    rh, rw = resized_size(h, w, spec.short_side)
    sy, sx = h / rh, w / rw
    c = spec.crop
    return [crop_resize(frames, top * sy, left * sx, c * sy, c * sx, c, c, unit_range=unit_range)
            for top, left in view_offsets(rh, rw, c, count)]


def color_jitter(x: np.ndarray, rng: np.random.Generator, strength: float = 0.4) -> np.ndarray:
    """Brightness, contrast and saturation, the same for every frame (float32 [0, 255])."""
    b = rng.uniform(1 - strength, 1 + strength)
    c = rng.uniform(1 - strength, 1 + strength)
    sat = rng.uniform(1 - strength, 1 + strength)
    x = x * b
    mean = x.mean()
    x = (x - mean) * c + mean
    grey = x.mean(axis=-1, keepdims=True)
    x = (x - grey) * sat + grey
    return np.clip(x, 0, 255)


# RandAugment (Cubuk et al.): `layers` ops picked uniformly, each at `magnitude` out of 30 (as in
# Scenic/timm: 10 is "medium"); one draw per clip, so every frame gets the same op.
def _ra_ops():
    def blend(a, b, f):
        return np.clip(b + (a - b) * f, 0, 255)

    def signed(m, rng):
        return m if rng.uniform() < 0.5 else -m

    def affine(x, mat):
        # Nearest-neighbour inverse mapping around the centre, filling with grey.
        _, h, w, _ = x.shape
        yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
        sy = mat[0, 0] * yy + mat[0, 1] * xx + mat[0, 2] + (h - 1) / 2
        sx = mat[1, 0] * yy + mat[1, 1] * xx + mat[1, 2] + (w - 1) / 2
        yi, xi = np.rint(sy).astype(np.int64), np.rint(sx).astype(np.int64)
        ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        out = x[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
        return np.where(ok[None, :, :, None], out, 128.0)

    def rotate(x, m, rng):
        a = np.deg2rad(signed(30 * m, rng))
        return affine(x, np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0]]))

    def shear_x(x, m, rng):
        return affine(x, np.array([[1, 0, 0], [signed(0.3 * m, rng), 1, 0]]))

    def shear_y(x, m, rng):
        return affine(x, np.array([[1, signed(0.3 * m, rng), 0], [0, 1, 0]]))

    def translate_x(x, m, rng):
        return affine(x, np.array([[1, 0, 0], [0, 1, signed(0.45 * m * x.shape[2], rng)]]))

    def translate_y(x, m, rng):
        return affine(x, np.array([[1, 0, signed(0.45 * m * x.shape[1], rng)], [0, 1, 0]]))

    def grey(x):
        return np.broadcast_to(x @ np.array([0.299, 0.587, 0.114], np.float32), x.shape[:-1])[..., None]

    return {
        "identity": lambda x, m, rng: x,
        "autocontrast": lambda x, m, rng: (x - x.min()) * (255 / max(x.max() - x.min(), 1e-3)),
        "equalize": lambda x, m, rng: equalize(x),
        "rotate": rotate,
        "solarize": lambda x, m, rng: np.where(x < 256 - 256 * m, x, 255 - x),
        "color": lambda x, m, rng: blend(x, grey(x), 1 + signed(0.9 * m, rng)),
        "posterize": lambda x, m, rng: np.floor(x / 2 ** int(4 * m)) * 2 ** int(4 * m),
        "contrast": lambda x, m, rng: blend(x, np.full_like(x, grey(x).mean()), 1 + signed(0.9 * m, rng)),
        "brightness": lambda x, m, rng: blend(x, np.zeros_like(x), 1 + signed(0.9 * m, rng)),
        "sharpness": lambda x, m, rng: blend(x, _blur(x), 1 + signed(0.9 * m, rng)),
        "shear_x": shear_x,
        "shear_y": shear_y,
        "translate_x": translate_x,
        "translate_y": translate_y,
    }


def equalize(x: np.ndarray) -> np.ndarray:
    """Histogram equalisation per channel over the whole clip (one mapping for every frame, so it cannot
    flicker): each value goes to its cumulative share of the pixels below it, spread over 0..255. The most
    frequent top value is left out of the spread, as the usual image-library definition does, so a clip of one
    colour stays as it is."""
    out = np.empty_like(x)
    for c in range(x.shape[-1]):
        v = np.clip(x[..., c], 0, 255).astype(np.int64)
        hist = np.bincount(v.ravel(), minlength=256)
        step = (hist.sum() - hist[np.flatnonzero(hist)[-1]]) // 255
        if step == 0:
            out[..., c] = x[..., c]
            continue
        lut = np.minimum((np.cumsum(hist) - hist + step // 2) // step, 255)
        out[..., c] = lut[v]
    return out


def _blur(x: np.ndarray) -> np.ndarray:
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return (p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] + 4 * x) / 8


RANDAUGMENT_OPS = _ra_ops()
_RA_NAMES = tuple(RANDAUGMENT_OPS)


def randaugment(x: np.ndarray, rng: np.random.Generator, layers: int, magnitude: int) -> np.ndarray:
    m = min(max(magnitude, 0), 30) / 30
    for _ in range(layers):
        x = RANDAUGMENT_OPS[_RA_NAMES[rng.integers(len(_RA_NAMES))]](x, m, rng)
        x = np.clip(x, 0, 255).astype(np.float32)
    return x


def train_clip(frames: np.ndarray, rng: np.random.Generator, spec: ClipSpec) -> np.ndarray:
    """`random_crop` then `augment`: frames [T, H, W, 3] -> float32 [T, crop, crop, 3] in [-1, 1]. Where the flip is
    the only augmentation, the flip and the scaling run inside the crop, frame by frame in cache: the same draws in
    the same order, the same pixels bit for bit."""
    if not spec.flip_only:
        return augment(random_crop(frames, rng, spec), rng, spec)
    box = crop_box(frames.shape[1], frames.shape[2], rng, spec)
    flip = bool(spec.flip and rng.uniform() < 0.5)
    return crop_resize(frames, *box, spec.crop, spec.crop, flip=flip, unit_range=True)


def device_canvas(spec: ClipSpec) -> int:
    """The side of the square uint8 window `crop_window` sends: the most rows or columns a training crop's
    interpolation reads in frames already at the short side. A jittered side of n >= short side pixels spans at
    most crop * n / int(scale_min * n) <= crop / (scale_min - 1 / short) of them (plus two taps); a side squeezed
    whole (shorter than the crop once jittered) is under (crop + 1) / scale_min pixels long."""
    s, c, lo = spec.short_side, spec.crop, spec.scale_min
    if _jittered(s, lo) >= c:
        return math.ceil(c / (lo - 1 / s)) + 2
    return math.ceil((c + 1) / lo) + 2


def crop_window(frames: np.ndarray, box: tuple[float, float, float, float], out: int, canvas: int,
                flip: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """The pixels `crop_resize(frames, *box, out, out)` interpolates from, as a uint8 [T, canvas, canvas, C] window
    (zero beyond them), and the float32 geometry the compiled step needs to interpolate the same taps:
    (top, left) relative to the window, (size_h, size_w), the last row and column of the frame relative to the
    window (where `_axis_weights` clips), and the flip. None when the window does not fit the canvas (frames
    larger than the short side)."""
    t, h, w, c = frames.shape
    r0, r1, _ = _axis_weights(h, box[0], box[2], out)
    c0, c1, _ = _axis_weights(w, box[1], box[3], out)
    rlo, rhi, clo, chi = int(r0.min()), int(r1.max()) + 1, int(c0.min()), int(c1.max()) + 1
    if rhi - rlo > canvas or chi - clo > canvas:
        return None
    window = np.zeros((t, canvas, canvas, c), np.uint8)
    window[:, :rhi - rlo, :chi - clo] = frames[:, rlo:rhi, clo:chi]
    geometry = np.array([box[0] - rlo, box[1] - clo, box[2], box[3], h - 1 - rlo, w - 1 - clo, float(flip)],
                        np.float32)
    return window, geometry


def train_window(frames: np.ndarray, rng: np.random.Generator, spec: ClipSpec):
    """`train_clip`'s draws (crop box, then flip), but the pixels left to the compiled step: (window, geometry)
    of `crop_window`, or None when the frames are larger than the short side needs."""
    box = crop_box(frames.shape[1], frames.shape[2], rng, spec)
    flip = bool(spec.flip and rng.uniform() < 0.5)
    return crop_window(frames, box, spec.crop, device_canvas(spec), flip)


def augment(clip: np.ndarray, rng: np.random.Generator, spec: ClipSpec) -> np.ndarray:
    """Cropped float32 [T, crop, crop, 3] in [0, 255] -> augmented, in [-1, 1]."""
    if spec.flip and rng.uniform() < 0.5:
        clip = clip[:, :, ::-1]
    if spec.color_jitter > 0 and rng.uniform() < spec.color_jitter:
        clip = color_jitter(clip, rng)
    if spec.randaugment_layers:
        clip = randaugment(clip, rng, spec.randaugment_layers, spec.randaugment_magnitude)
    return np.ascontiguousarray(to_unit_range(clip))


def mixup(video: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Batch-level mixup: (video, soft labels [b, num_classes]) mixed with the batch reversed.

    For trainers that mix on the host; a jitted train step can do the same with jax.random."""
    lam = np.float32(rng.beta(alpha, alpha)) if alpha > 0 else np.float32(1)
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    return lam * video + (1 - lam) * video[::-1], lam * onehot + (1 - lam) * onehot[::-1]
