"""The sources registry (one opener per kind), segments of a longer video, and multi-head labels."""

from __future__ import annotations

import numpy as np
import pytest

from vivit_cli.data import pipeline, sources
from vivit_cli.data.spec import KINDS
from vivit_cli.data.video import probe, write_video


def test_every_kind_has_one_opener():
    assert set(sources.OPENERS) == set(KINDS)
    with pytest.raises(ValueError, match="two openers"):
        sources.register("folder")(lambda arg, ctx: None)
    ctx = sources.registry.context(frames=4, stride=2, crop=224)
    assert (ctx.span, ctx.short_side) == (7, 256)


def ramp(n: int, size: int = 16) -> np.ndarray:
    """Frame k has brightness 8 k: a decoded frame says its own index (within codec error)."""
    return np.broadcast_to((np.arange(n) * 8).astype(np.uint8)[:, None, None, None], (n, size, size, 3)).copy()


def frame_index(frames: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(frames, np.float64).mean(axis=(-3, -2, -1)) / 8).astype(int)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    write_video(str(path), ramp(30), "libx264")
    return str(path)


def test_a_segment_reader_sees_only_its_range(long_video):
    meta = probe(long_video)
    split = sources.VideoSplit("train", np.array([[1, 2], [3, 4]], np.int32), segments=np.array([[5, 13], [20, 30]]),
                               paths=[long_video] * 2, metas=[meta] * 2)
    reader, label, segment = split.example(1)
    assert reader.num_frames == 10 and segment == (20, 30) and label.tolist() == [3, 4]
    assert frame_index(reader.frames(np.array([0, 9]))).tolist() == [20, 29]
    assert split.frame_counts() == [8, 10] and "frames 20-30" in split.where(1)
    # the pipeline samples a segment as it samples a clip: 2 views of 4 frames, stride 2, inside frames 5..12
    spec = pipeline.T.ClipSpec(frames=4, stride=2, crop=16)
    ex = pipeline.EvalMap(split, spec, (2, 1), max_skip_fraction=0.0)(0)
    assert ex["label"].tolist() == [1, 2]
    got = frame_index((ex["video"] + 1) * 127.5)
    assert got.tolist() == [[5, 7, 9, 11], [6, 8, 10, 12]]
    batch = pipeline.TrainMap(split, spec, max_skip_fraction=0.0)(1, np.random.default_rng(0))
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (2,)


def test_heads_default_to_one_and_name_the_first():
    split = sources.ArraySplit("train", np.zeros(2, np.int32), videos=np.zeros((2, 4, 8, 8, 3), np.uint8))
    one = sources.Source("npy", "npy:x", ("a", "b"), {"train": split})
    assert one.heads == (("label", ("a", "b")),) and one.num_classes == 2 and one.head_sizes == (2,)
    two = sources.Source("epic", "epic:x", ("take", "put", "wash"), {"train": split},
                         heads=(("verb", ("take", "put", "wash")), ("noun", ("cup", "pan"))))
    assert two.num_classes == 3 and two.head_sizes == (3, 2)
    with pytest.raises(ValueError, match="first head"):
        sources.Source("epic", "epic:x", ("cup",), {"train": split}, heads=(("verb", ("take",)),))
