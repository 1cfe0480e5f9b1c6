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
    "ssv2": ("ssv2:PATH", "Something-Something v2: the folder with its labels/train/validation JSON files "
             "and the <id>.webm videos"),
    "tfds": ("tfds:NAME", "a TensorFlow Datasets video dataset prepared under data.data_dir, read with "
             "tfds.data_source (array_record; no TensorFlow needed for Tensor features)"),
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
