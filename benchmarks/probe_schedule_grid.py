"""Schedule probe (benchmarks/RESULTS.md "A shorter schedule"): models 1 and 3 on both tasks, as model-variants builds them.

    vivit sweep benchmarks/probe_schedule_grid.py --seeds 3 -j 2 --set train.steps=150 --set train.warmup_steps=15 \\
        [--set train.image_steps=1200] --set data.eval_split=val -r /tmp/probe150

Its tasks now carry their own schedules (sweep.grid.task_schedules, from this probe): to rerun a row as it was
measured, pass `--set train.image_steps=S` too (S the row's image steps), so that both tasks take the --set's.
"""

from vivit_cli.report import tables as T
from vivit_cli.sweep.grid import chain, fixed, image_init, product, tasks

TABLE = "model-variants"
BASE = {"data.source": "embedded:appearance"}  # the image ViT's task, as in model-variants


def cells(base, preset):
    variants = chain(fixed({"model.variant": "spatio_temporal", **image_init(preset)}, row=T.MODEL_1),
                     fixed({"model.variant": "factorised_self_attention", **image_init(preset)}, row=T.MODEL_3))
    return product(variants, tasks(preset))
