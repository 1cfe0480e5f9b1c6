"""`tfds:NAME`: a TensorFlow Datasets video dataset prepared as array_record under data.data_dir."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vivit_cli.errors import VivitError

from .base import SPLIT_ALIASES, ArrayReader, Example, Source, Split
from .registry import OpenContext, register


def _tfds_source(name: str, split: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)


@dataclass
class TfdsSplit(Split):
    tfds_name: str = ""
    tfds_split: str = ""
    data_dir: str | None = None
    video_key: str = "video"
    count: int = 0
    _ds: object = None

    # Labels are read with the clip, not all up front: a record holds the whole video, so listing the
    # labels of a real dataset at open time would read all of it.
    def __len__(self) -> int:
        return self.count

    def _source(self):
        if self._ds is None:
            self._ds = _tfds_source(self.tfds_name, self.tfds_split, self.data_dir)
        return self._ds

    def label(self, i: int) -> int:
        return int(self._source()[int(i)]["label"])

    def _reader_of(self, record) -> ArrayReader:
        video = record[self.video_key]
        return ArrayReader(np.stack(video) if isinstance(video, list) else np.asarray(video))

    def open_reader(self, i: int) -> ArrayReader:
        return self._reader_of(self._source()[int(i)])

    def example(self, i: int) -> Example:
        record = self._source()[int(i)]  # one read gives both the clip and its label
        return Example(self._reader_of(record), int(record["label"]), None)

    def __getstate__(self):
        return {**self.__dict__, "_ds": None}


@register("tfds")
def open_tfds(arg: str, ctx: OpenContext) -> Source:
    data_dir = ctx.data_dir
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise VivitError("data.source=tfds:...: tensorflow-datasets is not installed (pip install 'vivit-cli[tfds]')") \
            from None
    try:
        builder = tfds.builder(arg, data_dir=data_dir)
        info = builder.info
        split_names = list(info.splits.keys())
    except Exception as e:  # noqa: BLE001  tfds raises many types (DatasetNotFoundError, AssertionError, ...) for a bad name/dir
        raise VivitError(f"data.source=tfds:{arg}: not found under data.data_dir={data_dir} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    if not split_names:
        raise VivitError(f"data.source=tfds:{arg}: not prepared under data.data_dir={data_dir} (no splits)")
    features = info.features
    video_key = next((k for k in ("video", "image", "frames") if k in features), None)
    if video_key is None or "label" not in features:
        raise VivitError(f"data.source=tfds:{arg}: needs a 'video' and a 'label' feature, has {', '.join(features)}")
    label_names = tuple(getattr(features["label"], "names", None) or ())
    splits = {}
    for s in split_names:
        try:
            ds = builder.as_data_source(split=s)
        except Exception as e:  # noqa: BLE001  (as above)
            raise VivitError(f"data.source=tfds:{arg}: split {s} cannot be read without TensorFlow "
                             f"({type(e).__name__}); prepare it as array_record") from None
        key = SPLIT_ALIASES.get(s, s)
        splits[key] = TfdsSplit(key, np.zeros(0, np.int32), tfds_name=arg, tfds_split=s, data_dir=data_dir,
                                video_key=video_key, count=len(ds), _ds=ds)
    if not label_names:
        raise VivitError(f"data.source=tfds:{arg}: the 'label' feature must be a ClassLabel (with names)")
    return Source("tfds", f"tfds:{arg}", label_names, splits, info={"data_dir": data_dir, "video_key": video_key})
