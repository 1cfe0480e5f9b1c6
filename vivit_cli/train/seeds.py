"""The seed axis: K seeds of one config trained as one compiled program (`train.run_group`).

The train state, the rng and the training batches carry a leading axis of K seeds and the pure step is mapped
over it (`SeedAxis.map`: `jax.vmap`, or on the CPU the seeds in turn, `runtime.cpu`), so K small models fill
the devices as one program and pay one compile, one start-up and one evaluation pass. The axis is not split over
devices: the batch axis behind it keeps its split over the mesh's "data" axis (and large tensors theirs over
"model"), so the seed axis composes with data and model parallelism unchanged; every device computes its rows of
every seed's batch.

K = 1 has no seed axis at all: the state, the batch and the program are a single run's, so `vivit train`
without a group computes what it always did, digit for digit. For K > 1 a seed's numbers match the same seed
trained alone to float rounding, not bit for bit (vmap batches the matmuls differently, and the CPU's loop over the
seeds is compiled apart from a single run's program; tests/test_train_group.py measures it).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from .state import TrainState, init_state


@dataclasses.dataclass(frozen=True)
class SeedAxis:
    """How K seeds' trees are stacked and taken apart; every method is the identity for K = 1."""

    k: int

    @property
    def stacked(self) -> bool:
        return self.k > 1

    def sharding(self, s: NamedSharding) -> NamedSharding:
        """A leaf's sharding with the seed axis in front, not split over any mesh axis."""
        return NamedSharding(s.mesh, P(None, *s.spec)) if self.stacked else s

    def shardings(self, tree):
        return jax.tree.map(self.sharding, tree)

    def map(self, fn, in_axes=0):
        """`fn` over the seed axis, as one program: on the CPU the seeds in turn (`runtime.cpu`), else vmap."""
        if not self.stacked:
            return fn
        if jax.default_backend() == "cpu":
            from vivit_cli.runtime import cpu

            return cpu.seeds_in_turn(fn, in_axes)
        return jax.vmap(fn, in_axes=in_axes)

    def stack_host(self, trees: list):
        """K host trees (numpy) -> one with the seed axis in front."""
        return jax.tree.map(lambda *xs: np.stack(xs), *trees) if self.stacked else trees[0]

    def split_host(self, tree) -> list:
        """A host tree with the seed axis in front -> the K seeds' trees."""
        if not self.stacked:
            return [tree]
        return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(self.k)]

    def group_state(self, ts: TrainState) -> TrainState:
        """The group's train state: a seed's (`ts`, what one checkpoint holds) with the seed axis in front."""
        if not self.stacked:
            return ts
        shardings = self.shardings(ts.shardings)
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct((self.k,) + a.shape, a.dtype, sharding=s),
                                ts.abstract, shardings)
        init = jax.jit(jax.vmap(partial(init_state, tx=ts.tx)), out_shardings=shardings)
        return dataclasses.replace(ts, shardings=shardings, abstract=abstract, init=init)

    def stacker(self, one: TrainState, group: TrainState):
        """`stack([state_0, ..., state_K-1]) -> group state` on the devices (restored checkpoints: no host trip,
        which several processes could not make for a tensor split over another process's devices)."""
        if not self.stacked:
            return lambda states: states[0]
        return jax.jit(lambda states: jax.tree.map(lambda *xs: jnp.stack(xs), *states),
                       out_shardings=group.shardings)

    def taker(self, one: TrainState):
        """`take(group state, i) -> seed i's state`, laid out as a single run's (what its checkpoint holds)."""
        if not self.stacked:
            return lambda state, i: state
        fn = jax.jit(lambda state, i: jax.tree.map(lambda x: x[i], state), out_shardings=one.shardings)
        return lambda state, i: fn(state, np.int32(i))


def same_but_seed(cfgs) -> None:
    """The configs of a group differ in train.seed alone, and no seed comes twice."""
    from vivit_cli import config
    from vivit_cli.errors import VivitError

    def seedless(cfg):
        return config.config_hash(cfg.replace(train=dataclasses.replace(cfg.train, seed=0)))

    if len({seedless(c) for c in cfgs}) > 1:
        raise VivitError("a group of seeds must share one config but for train.seed")
    seeds = [c.train.seed for c in cfgs]
    if len(set(seeds)) != len(seeds):
        raise VivitError(f"seeds {seeds}: a seed comes twice")


def describe(k: int) -> Any:
    return "" if k == 1 else f", {k} seeds as one program"
