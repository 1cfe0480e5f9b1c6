import pytest

from vivit_cli import config
from vivit_cli.errors import VivitError

BAD = [
    (["model.nope=1"], "unknown config key 'model.nope'"),
    (["nope.x=1"], "unknown config key 'nope.x'"),
    (["model.variant=7"], "model.variant='7': allowed values"),
    (["model.hidden=100", "model.heads=3"], "model.hidden=100 is not divisible by model.heads=3"),
    (["data.frames=9"], "data.frames=9 is not divisible by the tubelet's T=2"),
    (["data.crop=30"], "data.crop=30 is not divisible by the patch size 8x8"),
    (["model.variant=4", "model.heads=3", "model.hidden=96"], "needs an even head count"),
    (["model.variant=3", "model.classifier=token"], "model.classifier=token is unsupported"),
    (["model.variant=4", "model.classifier=token"], "model.classifier=token is unsupported"),
    (["model.layers=0"], "model.layers=0: must be a positive integer"),
    (["model.hidden=-8"], "model.hidden=-8: must be a positive integer"),
    (["model.tubelet=2x8"], "model.tubelet='2x8': expected TxHxW"),
    (["model.tubelet=axbxc"], "expected TxHxW"),
    (["model.layers=two"], "model.layers: expected an integer"),
    (["model.embedding=pixels"], "model.embedding='pixels': allowed values are tubelet, uniform_frame"),
    (["model.attention_order=diagonal"], "allowed values are space_time, time_space"),
    (["model.size=XXL"], "model.size='XXL': allowed values"),
    (["model.dropout=1.5"], "model.dropout=1.5: must be in [0, 1)"),
    (["data.eval_views=4"], "data.eval_views='4': expected TxS"),
    (["model.stochastic_depth"], "expected key=value"),
]


@pytest.mark.parametrize("sets,message", BAD)
def test_invalid_combinations_name_the_key(sets, message):
    with pytest.raises(VivitError, match=None) as e:
        config.build(sets)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_aliases_sizes_and_overrides():
    cfg = config.build(["model.variant=2", "model.size=B", "model.layers=6"])
    assert cfg.model.variant == "factorised_encoder"
    assert (cfg.model.hidden, cfg.model.layers, cfg.model.heads, cfg.model.mlp) == (768, 6, 12, 3072)
    assert cfg.model.classifier == "token"
    assert config.build(["model.variant=3"]).model.classifier == "gap"
    assert config.build(["model.size=L"]).model.mlp == 4096
    assert config.build(["model.size=H"]).model.hidden == 1280


def test_uniform_frame_forces_single_frame_patches():
    cfg = config.build(["model.embedding=uniform_frame", "model.tubelet=2x8x8", "model.sampled_frames=4"])
    assert cfg.model.tubelet == "1x8x8"
    assert config.token_grid(cfg) == (4, 4, 4)


def test_json_round_trip_and_hash():
    cfg = config.build(["model.size=S", "train.lr=0.01", "data.flip=false", "model.variant=3"])
    text = config.to_json(cfg)
    back = config.from_json(text)
    assert back == cfg
    assert config.config_hash(back) == config.config_hash(cfg)
    assert config.config_hash(cfg) != config.config_hash(config.build(["model.size=S", "train.lr=0.02",
                                                                         "data.flip=false", "model.variant=3"]))
    # The run section does not change results, so it does not change the hash.
    assert config.config_hash(cfg) == config.config_hash(config.apply_overrides(cfg, {"run.wandb": "offline"}))
    # data.eval_resize at its default keeps the run id it had before the key (the run is flagged by its numerics)
    assert config.config_hash(config.build([])) == "7d72f82fac"
    assert config.config_hash(config.build(["data.eval_resize=37"])) != config.config_hash(config.build([]))


def test_presets():
    smoke = config.build([], preset="smoke")
    assert smoke.train.steps < config.build([]).train.steps
    paper = config.build([], preset="paper")
    assert (paper.model.size, paper.data.frames, paper.data.crop, paper.train.optimizer) == ("B", 32, 224, "sgd")
    # the user's data and image ViT are placeholders that training refuses, one line naming what to pass
    assert (paper.data.source, paper.model.init_from) == ("kinetics:<PATH>", "<PATH>")
    with pytest.raises(VivitError, match=r"pass --set data.source=kinetics:PATH .*; --set model.init_from=DIR"):
        config.presets.check_given(paper, "paper")
    config.presets.check_given(config.build(["data.source=kinetics:/k", "model.init_from=/v"], preset="paper"), "paper")
    with pytest.raises(VivitError, match="unknown preset"):
        config.build([], preset="huge")


def test_cli_bad_input_is_one_line_exit_2(cli):
    r = cli("describe", "--set", "model.variant=9")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: model.variant='9': allowed values are spatio_temporal, "
                                             "factorised_encoder, factorised_self_attention, factorised_dot_product, "
                                             "1, 2, 3, 4"]
    assert "Traceback" not in r.stderr + r.stdout
