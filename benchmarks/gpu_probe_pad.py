"""Does the padded cuDNN attention run in the ViViT-B model 1 train step (3137 tokens: odd)? What it gives at
batch 8 and 16. `python3 benchmarks/gpu_probe_pad.py` on a GPU machine (about 2 minutes); results: RESULTS.md."""
import os, sys, time
sys.path[:0] = [".", "benchmarks"]
os.environ["VIVIT_ATTENTION"] = "cudnn"
import jax, jax.numpy as jnp
sys.argv = [sys.argv[0]]
from gpu_check import VIVIT_B, _hlo_facts
from vivit_cli import config
from vivit_cli.bench import core
from vivit_cli.models import attention
q, k, v = (jax.random.normal(jax.random.key(i), (8, 3137, 12, 64), jnp.bfloat16) for i in range(3))
ref = jax.nn.dot_product_attention(q, k, v, scale=1.0)
got = jax.jit(attention.padded_attention)(q, k, v)
print("pad fwd max|diff| vs xla", float(jnp.max(jnp.abs(got.astype(jnp.float32) - ref.astype(jnp.float32)))), flush=True)
g = jax.jit(jax.grad(lambda q, k, v: attention.padded_attention(q, k, v).astype(jnp.float32).sum(), argnums=(0, 1, 2)))
print("pad grad", _hlo_facts(g.lower(q, k, v).compile()), flush=True)
peaks = {"bfloat16": 777.4e12, "float32": 359.4e12}
for b in (8, 16):
    t0 = time.time()
    r = core.run(config.build(VIVIT_B + ["model.variant=spatio_temporal"]), batch_size=b, num_classes=400,
                 forward=(b == 8), repeats=3, peaks=peaks)
    print(b, {k: r.get(k) for k in ("train_clips_per_s", "train_step_ms", "mfu", "forward_ms_per_clip", "program_memory_bytes")}, round(time.time() - t0), flush=True)
