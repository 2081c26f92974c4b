import json

import pytest

from fha import FhaError, ModelConfig
from fha.experiments import build_configs, load_experiment, merge, parse_overrides
from fha.train_config import TrainConfig


@pytest.mark.parametrize(
    "changes,field",
    [
        (dict(dim=0), "dim"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(num_layers=0), "num_layers"),
        (dict(max_seq_len=0), "max_seq_len"),
        (dict(num_q_heads=0), "num_q_heads"),
        (dict(num_kv_heads=0), "num_kv_heads"),
        (dict(head_dim=0), "head_dim"),
        (dict(fractal_split=0), "fractal_split"),
        (dict(theta=0.0), "theta"),
        (dict(mlp_hidden_mult=0.0), "mlp_hidden_mult"),
        (dict(eps=0.0), "eps"),
        (dict(attention="linear"), "attention"),
        (dict(mlp_nonlinearity="tanh"), "mlp_nonlinearity"),
        (dict(norm_type="BatchNorm"), "norm_type"),
        (dict(dropout=1.0), "dropout"),
        (dict(attn_dropout=-0.1), "attn_dropout"),
        (dict(fractal_scale="sub"), "fractal_scale"),
        (dict(fractal_scale=-1.0), "fractal_scale"),
        (dict(num_q_heads=4, num_kv_heads=3), "num_q_heads"),
        (dict(head_dim=15, num_q_heads=1), "head_dim must be even"),
        (
            dict(head_dim=20, num_q_heads=4),
            r"fractal_split=2 cuts head 3 into 8 sub-heads, but head_dim \(20\) is not "
            "divisible by 8",
        ),
        (dict(head_dim=4, num_q_heads=3), "smallest sub-head"),
        (dict(pad_id=2048), "pad_id"),
        (dict(mlp_hidden_mult=0.001), "mlp_hidden_mult"),
        (dict(dim=64.0), "dim must be int"),
        (dict(mlp_gated=1), "mlp_gated must be bool"),
        (dict(attention=None), "attention must be str"),
    ],
)
def test_every_validation_rule_names_its_field(changes, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**changes)


def test_constraints_of_fha_do_not_apply_to_mha():
    config = ModelConfig(attention="mha", head_dim=24, num_q_heads=4)
    assert config.layer_splits == ((1, 1, 1, 1),) * config.num_layers


def test_derived_values():
    config = ModelConfig(head_dim=32, num_q_heads=3, fractal_split=2, dim=60, mlp_hidden_mult=3.0)
    assert config.layer_splits == ((1, 2, 4),) * config.num_layers
    assert config.mlp_hidden_dim == 120
    assert ModelConfig(dim=60, mlp_hidden_mult=3.0, mlp_gated=False).mlp_hidden_dim == 180


def test_json_round_trip(tmp_path):
    config = ModelConfig(fractal_scale=0.25, pad_id=0, attention="mha", norm_type="CosineNorm")
    config.to_json(tmp_path / "c.json")
    assert ModelConfig.from_json(tmp_path / "c.json") == config
    assert json.loads((tmp_path / "c.json").read_text())["fractal_scale"] == 0.25


def test_integers_are_accepted_for_float_fields():
    assert ModelConfig.from_dict({"theta": 500, "mlp_hidden_mult": 4}).theta == 500.0


def test_unknown_field_suggests_near_matches():
    with pytest.raises(ValueError, match="did you mean num_layers"):
        ModelConfig.from_dict({"num_layer": 3})


@pytest.mark.parametrize(
    "content,message", [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"), ('{"dim": -4}', "dim")]
)
def test_bad_json_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(FhaError, match=message):
        ModelConfig.from_json(path)
    with pytest.raises(FhaError, match="file not found"):
        ModelConfig.from_json(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "name,text,value",
    [
        ("dim", "128", 128),
        ("theta", "500", 500.0),
        ("mlp_gated", "false", False),
        ("attention", "mha", "mha"),
        ("fractal_scale", "head", "head"),
        ("fractal_scale", "0.5", 0.5),
        ("pad_id", "none", None),
        ("pad_id", "3", 3),
    ],
)
def test_parse_field_gives_typed_values(name, text, value):
    parsed = ModelConfig.parse_field(name, text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_field_errors():
    with pytest.raises(ValueError, match="expected int"):
        ModelConfig.parse_field("dim", "wide")
    with pytest.raises(ValueError, match="did you mean head_dim"):
        ModelConfig.parse_field("head_dm", "3")


def test_replace_validates_again():
    with pytest.raises(ValueError, match="num_q_heads"):
        ModelConfig().replace(num_kv_heads=3)


def test_old_names_of_the_step_counts_still_load(tmp_path):
    old = {"max_iters": 50, "warmup_iters": 5, "final_flat_iters": 10}
    expected = TrainConfig(max_steps=50, warmup_steps=5, final_flat_steps=10)
    assert TrainConfig.from_dict(old) == expected
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps(old))
    assert TrainConfig.from_json(path) == expected
    assert expected.replace(max_iters=60).max_steps == 60
    with pytest.raises(ValueError, match="^'max_iters' is the old name of 'max_steps'; give only 'max_steps'$"):
        TrainConfig.from_dict({"max_steps": 50, "max_iters": 50})

    toml = tmp_path / "old.toml"
    toml.write_text('base = "tiny"\n[train]\nmax_iters = 40\nwarmup_iters = 4\n')
    tables = merge(load_experiment(config_file=toml), parse_overrides(["final_flat_iters=8"]))
    _, train = build_configs(tables)
    assert (train.max_steps, train.warmup_steps, train.final_flat_steps) == (40, 4, 8)
