"""Ablation sweeps: grid files -> cells -> run store -> dispatch (see docs/DESIGN.md "Run store and sweeps").

  grid.py      combinators (product, zip_, chain, where, cumulative, conditional axes) and Dependency
  grids.py     finding and loading `experiments/<grid>.py`
  cells.py     a grid -> validated jobs with run ids (`<hash of the seed-0 config>-s<seed>`), dependencies first
  store.py     the run store: states new/done/partial/failed/running/shared, cell.json, sweep.json, locks, sharing
  runner.py    the scheduler loop (dependencies, retries, --parallel) and its live table (live.py)
  backends/    where a job runs: local.py (subprocesses), tpu.py (gcloud queued resources); one module per launcher
  status.py    `vivit status`

Nothing here imports JAX: `--list`, `--dry-run` and `status` answer at once.
"""
