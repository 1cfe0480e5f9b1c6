"""Analytic compute per clip, in the paper's convention: its "FLOPs" are multiply-accumulates.

Counted: the tubelet projection, the q/k/v/out projections, the two attention matmuls (QK^T and AV),
the MLP, and the head. Not counted: softmax, LayerNorm, GELU, additions, which is why the counts land
0.3-1% under the paper's (e.g. ViViT-B model 1 at 32x224x224: 451.5 here, 455.2 in the paper).
"""

from __future__ import annotations

from vivit_cli.config import Config, parse_tubelet, token_grid


def _layer(seqs: int, n: int, d: int, mlp: int) -> float:
    """One pre-norm block applied to `seqs` independent sequences of n tokens."""
    return seqs * (4 * n * d * d + 2 * n * d * mlp + 2 * n * n * d)


def gmacs(cfg: Config, num_classes: int) -> float:
    m = cfg.model
    d, mlp, layers = m.hidden, m.mlp, m.layers
    nt, nh, nw = token_grid(cfg)
    s, n = nh * nw, nt * nh * nw
    ft, fh, fw = parse_tubelet(m.tubelet)
    token = 1 if m.classifier == "token" else 0
    total = n * ft * fh * fw * 3 * d + d * num_classes
    if m.variant == "spatio_temporal":
        total += layers * _layer(1, n + token, d, mlp)
    elif m.variant == "factorised_encoder":
        total += layers * _layer(nt, s + token, d, mlp)
        total += m.temporal_layers * _layer(1, nt + token, d, mlp)
    elif m.variant == "factorised_self_attention":
        attention = 4 * n * d * d  # each of the two attentions has its own q/k/v/out
        total += layers * (2 * attention + 2 * n * d * mlp + 2 * s * nt * nt * d + 2 * nt * s * s * d)
    elif m.variant == "factorised_dot_product":
        # Same projections as model 1; half the heads see nt keys, half see s keys.
        total += layers * (4 * n * d * d + 2 * n * d * mlp + n * nt * d + n * s * d)
    return total / 1e9
