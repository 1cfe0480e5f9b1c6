"""The `vivit` command. Command modules are thin: they parse arguments, build a config and call the
library. They import JAX only inside the commands that compute, so `--help` stays fast."""
