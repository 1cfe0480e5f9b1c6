"""The shared layer under train/, eval/, bench/ and sweep/: process and device setup, the mesh, the CPU's
special paths, checkpoints and timing. Nothing here knows about a train loop, an evaluation or a sweep.

  process.py     jax.distributed, the persistent compilation cache, which process logs (re-exported here)
  mesh.py        the ("data", "model") mesh, shardings, global batches from per-process rows
  cpu.py         the CPU-only paths: XLA flag defaults, one launch at a time over several CPU devices
  checkpoint.py  the checkpoint format: Orbax step folders, "/"-named weight files, `load(path)`
  timing.py      timing on an asynchronous runtime: samples, a stopwatch for loops, timed compiles

Importing this package imports no JAX.
"""

from .process import cache_root, device_description, is_main, multi_process, setup

__all__ = ["cache_root", "device_description", "is_main", "multi_process", "setup"]
