"""vivit-cli: run the ablations of ViViT (Arnab et al., ICCV 2021) from one command to a paper-ready table.

Data flows one way: cli -> config -> sweep (grid -> cells -> run store) -> train (<- data, models)
-> eval -> report. Importing this package is cheap: nothing here imports JAX, so commands that
compute nothing (`report`, `sweep --dry-run`, `status`, `--help`) answer fast.
"""

__version__ = "0.1.0"


def _apply_xla_defaults() -> None:
    # Must run before JAX starts its backend (XLA reads XLA_FLAGS once); stdlib only, no JAX import.
    from vivit_cli.bench.xla_flags import apply_cpu_defaults

    apply_cpu_defaults()


_apply_xla_defaults()
