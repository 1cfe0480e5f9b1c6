# Recipes mirror the README's two commands. `pip install rust-just` (in the test extra) provides `just`.

venv := ".venv"

# Install and run the main job: the embed-ablation and model-variants sweeps, then both tables.
main:
    python3 -m venv {{venv}} && {{venv}}/bin/pip install -q -e . && {{venv}}/bin/vivit reproduce

# Install and run the whole test suite (slow tests included).
test:
    python3 -m venv {{venv}} && {{venv}}/bin/pip install -q -e '.[test]' && {{venv}}/bin/python -m pytest -q

# The fast tests only.
quick:
    {{venv}}/bin/python -m pytest -q -m "not slow"

describe *ARGS:
    {{venv}}/bin/vivit describe {{ARGS}}
