"""Analytic compute per clip, in the paper's convention: its "FLOPs" are multiply-accumulates.

Counted: the tubelet projection, the q/k/v/out projections, the two attention matmuls (QK^T and AV),
the MLP, and the head. Not counted: softmax, LayerNorm, GELU, additions, which is why the counts land
0.3-1% under the paper's (e.g. ViViT-B model 1 at 32x224x224: 451.5 here, 455.2 in the paper).

`executed=True` counts what our model actually runs: under a class-token readout the last block of each
encoder computes only the class token's row (keys and values still for every token), so its query, output
projection, attention and MLP cost 1 row instead of n. MFU is computed on this count, so skipped work earns
no credit.
"""

from __future__ import annotations

from vivit_cli.config import Config, parse_tubelet, token_grid


def _layer(seqs: int, n: int, d: int, mlp: int) -> float:
    """One pre-norm block applied to `seqs` independent sequences of n tokens."""
    return seqs * (4 * n * d * d + 2 * n * d * mlp + 2 * n * n * d)


def _readout_layer(seqs: int, n: int, d: int, mlp: int) -> float:
    """The last block under a class-token readout: keys and values for n tokens, everything else for 1."""
    return seqs * (2 * n * d * d + 2 * d * d + 2 * d * mlp + 2 * n * d)


def _encoder(layers: int, seqs: int, n: int, d: int, mlp: int, readout: bool) -> float:
    if readout and layers:
        return (layers - 1) * _layer(seqs, n, d, mlp) + _readout_layer(seqs, n, d, mlp)
    return layers * _layer(seqs, n, d, mlp)


# Token mixing per variant, by name as `vivit.VARIANTS` (pure Python: `describe` and the report import no JAX).
# Each takes (cfg, grid (nt, s), token (0 or 1), readout) and returns the encoder's multiply-adds.
def _spatio_temporal(m, nt, s, token, readout):
    return _encoder(m.layers, 1, nt * s + token, m.hidden, m.mlp, readout)


def _factorised_encoder(m, nt, s, token, readout):
    return (_encoder(m.layers, nt, s + token, m.hidden, m.mlp, readout)
            + _encoder(m.temporal_layers, 1, nt + token, m.hidden, m.mlp, readout))


def _factorised_self_attention(m, nt, s, token, readout):
    d, n = m.hidden, nt * s
    attention = 4 * n * d * d  # each of the two attentions has its own q/k/v/out
    return m.layers * (2 * attention + 2 * n * d * m.mlp + 2 * s * nt * nt * d + 2 * nt * s * s * d)


def _factorised_dot_product(m, nt, s, token, readout):
    d, n = m.hidden, nt * s
    # Same projections as model 1; half the heads see nt keys, half see s keys.
    return m.layers * (4 * n * d * d + 2 * n * d * m.mlp + n * nt * d + n * s * d)


ENCODER_GMACS = {"spatio_temporal": _spatio_temporal, "factorised_encoder": _factorised_encoder,
                 "factorised_self_attention": _factorised_self_attention,
                 "factorised_dot_product": _factorised_dot_product}


def gmacs(cfg: Config, num_classes: int, executed: bool = False) -> float:
    m = cfg.model
    nt, nh, nw = token_grid(cfg)
    ft, fh, fw = parse_tubelet(m.tubelet)
    token = 1 if m.classifier == "token" else 0
    embedding_and_head = nt * nh * nw * ft * fh * fw * 3 * m.hidden + m.hidden * num_classes
    return (embedding_and_head + ENCODER_GMACS[m.variant](m, nt, nh * nw, token, executed and bool(token))) / 1e9
