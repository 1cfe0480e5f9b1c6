"""Evaluation and prediction: multi-view testing of a checkpoint, top-k labels of video files, raw logits
of clip arrays.

  metrics.py   pure numpy: view averaging (mean of raw logits), top-k, confusion matrix, mean class accuracy
  forward.py   the jitted float32 forward pass sharded over all devices/processes; batch rounding and padding
  evaluate.py  the evaluation loop over `data.eval_iterator` -> EvalResult
  restore.py   checkpoint -> (config, params) with shape checks, eval.json's folder, label names
  checks.py    refusals before any compute: views the clips cannot give, malformed clip arrays
  results.py   eval.json ("<split>@<T>x<S>" keys, merged atomically), saved logits
  plot.py      confusion-matrix PNG
  predict.py   `vivit predict` on video files and on arrays
  run.py       `vivit eval` end to end

Nothing is imported from JAX at package import time.
"""

from __future__ import annotations


def evaluate_checkpoint(path, **kwargs):
    from .run import evaluate_checkpoint as f

    return f(path, **kwargs)


def evaluate(cfg, params, num_classes, **kwargs):
    from .evaluate import evaluate as f

    return f(cfg, params, num_classes, **kwargs)


__all__ = ["evaluate", "evaluate_checkpoint"]
