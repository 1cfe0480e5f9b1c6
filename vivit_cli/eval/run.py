"""`vivit eval` end to end: restore, check every input, evaluate, then (only then) write the outputs: eval.json's
entry and, beside it, the per-clip predictions (`predictions/<key>.npz`, named by the entry)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vivit_cli.errors import VivitError

from . import results
from .restore import Restored


@dataclass
class EvalRun:
    key: str
    entry: dict
    result: object  # evaluate.EvalResult
    restored: Restored
    eval_json: Path | None


def evaluate_checkpoint(path: str | Path, *, data: str | None = None, split: str | None = None,
                        views: str | None = None, batch_size: int | None = None, save_logits: str | None = None,
                        plot: str | None = None, write_json: bool = True) -> EvalRun:
    from vivit_cli import config
    from vivit_cli import runtime

    from . import restore
    from .evaluate import evaluate

    # Cheap checks first: a typo in an option should not cost a checkpoint restore.
    view_pair = config.parse_views(views, "--views") if views else None
    if batch_size is not None and batch_size <= 0:
        raise VivitError(f"--batch-size={batch_size}: must be positive")
    results.check_writable(save_logits, "--save-logits")
    results.check_writable(plot, "--plot")

    restored = restore.load(path)
    own_source = restored.cfg.data.source
    cfg = restore.with_source(restored.cfg, data)
    split = split or cfg.data.eval_split
    view_pair = view_pair or config.parse_views(cfg.data.eval_views, "data.eval_views")
    result = evaluate(cfg, restored.params, restored.num_classes, split=split, views=view_pair,
                      batch_size=batch_size, keep_view_logits=save_logits is not None)

    key = results.eval_key(split, view_pair, cfg.data.source, own_source)
    entry = results.entry(result, checkpoint=str(restored.path), step=restored.step)
    main = runtime.is_main()
    eval_json = None
    if main:
        if save_logits:
            results.save_logits(save_logits, result)
        if plot:
            from .plot import save_confusion

            title = f"{restored.path.name}: {split} @ {view_pair[0]}x{view_pair[1]} views, top-1 {entry['top1']:.4f}"
            save_confusion(plot, result.metrics["confusion"], result.label_names, title)
        if write_json:  # the predictions first: the entry that names them lands only once they are there
            entry["predictions"] = results.write_predictions(restored.home, key, index=result.index,
                                                             **results.prediction_rows(result), by_eval=True)
            eval_json = results.merge_eval_json(restored.home, key, entry)
    return EvalRun(key=key, entry=entry, result=result, restored=restored, eval_json=eval_json)
