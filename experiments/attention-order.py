"""Attention order of model 3 (factorised self-attention, paper Sec. 3.3): space then time vs time then space.

The paper reports that the order makes no difference once the temporal attention starts at zero (Sec. 3.4);
both cells run on both tasks. The space-then-time cells are shared with model-variants' "Model 3" cells.

    vivit sweep attention-order                     # 2 orders x 2 tasks = 4 cells
    vivit report --table attention-order
"""

from vivit_cli.report import tables as T
from vivit_cli.sweep.grid import fixed, image_init, product, sweep, tasks

TABLE = "attention-order"
# Both attentions start from the image ViT's (the temporal one's output at zero); the base task only picks
# that ViT (model-variants' one), every cell sets its own task.
BASE = {"model.variant": "factorised_self_attention", "data.source": "embedded:appearance"}


def cells(base, preset):
    orders = sweep("model.attention_order", list(T.ATTENTION_ORDER_ROWS), row=T.ATTENTION_ORDER_ROWS.get)
    return product(fixed(image_init(preset)), orders, tasks(preset))
