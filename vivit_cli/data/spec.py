"""The `data.source` spec strings (no heavy imports: `vivit data list` reads this)."""

from __future__ import annotations

from vivit_cli.errors import VivitError

KINDS = {
    "embedded": ("embedded:motion | embedded:appearance [:SEED]",
                 "procedural glyph videos generated offline (default); motion: the order of two movements, "
                 "8 classes; appearance: which digit, 10 classes"),
    "folder": ("folder:PATH", "video files in class subfolders (PATH/<class>/*, or PATH/{train,val,test}/<class>/*), "
               "decoded with PyAV"),
    "csv": ("csv:PATH", "CSV rows path,label[,split] (Kinetics style); PATH is a .csv or a folder with "
            "train.csv/val.csv/test.csv; paths relative to the CSV"),
    "ssv2": ("ssv2:PATH", "Something-Something v2: labels.json, train.json, validation.json (in PATH or "
             "PATH/labels/, optionally prefixed something-something-v2-) and the <id>.webm videos"),
    "kinetics": ("kinetics:PATH", "Kinetics 400/600/700 as distributed: PATH/annotations/{train,val,test}.csv "
                 "(label,youtube_id,time_start,time_end,split[,is_cc]) and PATH/{train,val,test}/[<class>/]"
                 "{youtube_id}_{start:06d}_{end:06d}.mp4; missing videos are counted skips"),
    "epic": ("epic:PATH", "Epic-Kitchens-100: EPIC_100_train.csv / EPIC_100_validation.csv over "
             "PATH/<participant>/rgb_frames/<video_id>/ or PATH/<participant>/videos/<video_id>.MP4; one example per "
             "action segment, two heads (verb 97, noun 300)"),
    "mit": ("mit:PATH", "Moments in Time: moments_categories.txt, trainingSet.csv / validationSet.csv "
            "(filename,label,...) over PATH/training/ and PATH/validation/"),
    "tfds": ("tfds:NAME", "a TensorFlow Datasets video dataset prepared under data.data_dir, read with "
             "tfds.data_source (array_record; no TensorFlow needed for Tensor features)"),
    "records": ("records:DIR", "clips prepared by `vivit data prepare SPEC --out DIR`: JPEG frames in sharded "
                "ArrayRecord files with labels, splits and an index; trains and evaluates as the source it came from"),
    "dmvr": ("dmvr:PATH", "Scenic's DMVR TFRecords (tf.train.SequenceExample: JPEG frames in image/encoded, "
             "clip/label/index); PATH is a folder of <split>*.tfrecord* files or one file; no TensorFlow needed"),
    "npy": ("npy:PATH", "preprocessed clips: a .npz, or a folder of .npy files, with <split>_video uint8 "
            "[N,T,H,W,3] and <split>_label int [N] (+ optional label_names); loaded with allow_pickle=False"),
}


def parse(spec: str) -> tuple[str, str]:
    """'kind:arg' -> (kind, arg), naming the valid kinds when the spec is wrong."""
    kind, sep, arg = str(spec).partition(":")
    if not sep or kind not in KINDS or not arg:
        raise VivitError(f"data.source={spec!r}: expected KIND:ARG with KIND one of {', '.join(KINDS)} "
                         "(see `vivit data list`)")
    return kind, arg
