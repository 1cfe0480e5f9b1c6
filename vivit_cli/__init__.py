"""vivit-cli: run the ablations of ViViT (Arnab et al., ICCV 2021) from one command to a paper-ready table.

Data flows one way: cli -> config -> sweep (grid -> cells -> run store) -> train (<- data, models)
-> eval -> report. Importing this package is cheap: nothing here imports JAX, so commands that
compute nothing (`report`, `sweep --dry-run`, `status`, `--help`) answer fast. Importing it changes
nothing either: the CLI entry applies the XLA flag defaults (`runtime.cpu`).
"""

__version__ = "0.1.0"
