"""Procedural glyphs: the ten digits of a 5x7 dot-matrix font, drawn with numpy.

Why a font instead of scikit-learn's digits: no extra dependency, exact control of size, stroke and
pose, and the images are generated at any resolution without resampling artefacts from 8x8 sources.
"""

from __future__ import annotations

import numpy as np

# 5 columns x 7 rows per digit, '#' = ink. A classic LCD/dot-matrix face.
_FONT = {
    "0": [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
    "1": ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    "2": [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
    "3": ["#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "],
    "4": ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
    "5": ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
    "6": ["  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "],
    "7": ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
    "8": [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
    "9": [" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "],
}
GLYPH_NAMES = tuple(_FONT)


def glyph_masks() -> np.ndarray:
    """float32 [10, 7, 5] in {0, 1}: the bitmaps, index = digit."""
    return np.array([[[c == "#" for c in row] for row in _FONT[k]] for k in GLYPH_NAMES], dtype=np.float32)


def render_sprites(ids: np.ndarray, size: int, rng: np.random.Generator, *, max_rotate: float = 0.35,
                   scale: tuple[float, float] = (0.75, 1.0), shear: float = 0.2) -> np.ndarray:
    """Anti-aliased sprites float32 [N, size, size] in [0, 1] of glyphs `ids` under a random affine pose.

    Each output pixel is supersampled 2x2 and mapped back into the 5x7 bitmap (inverse affine), so a
    batch of thousands renders in one vectorised gather.
    """
    n = len(ids)
    masks = glyph_masks()
    # Pad the bitmap with a zero border so out-of-glyph lookups read 0.
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))  # [10, 9, 7]
    theta = rng.uniform(-max_rotate, max_rotate, n)
    s = rng.uniform(*scale, n)
    sh = rng.uniform(-shear, shear, n)
    # Output coordinates in [-1, 1] (supersampled), then inverse pose -> glyph coordinates.
    sub = (np.arange(size * 2) + 0.5) / (size * 2) * 2 - 1
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = (cos * xx + sin * yy) / s[:, None, None]
    v = (-sin * xx + cos * yy) / s[:, None, None]
    u = u + sh[:, None, None] * v
    # The glyph is 5 wide x 7 tall: fit its height into [-1, 1] and keep the aspect ratio.
    col = (u * 3.5 + 2.5).astype(np.float32) + 1
    row = (v * 3.5 + 3.5).astype(np.float32) + 1
    inside = (col >= 0) & (col < 7) & (row >= 0) & (row < 9)
    ci = np.clip(col, 0, 6).astype(np.int64)
    ri = np.clip(row, 0, 8).astype(np.int64)
    hi = padded[ids[:, None, None], ri, ci] * inside
    return hi.reshape(n, size, 2, size, 2).mean(axis=(2, 4)).astype(np.float32)
