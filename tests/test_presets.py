"""Presets, experiment files and --set routing."""

from __future__ import annotations

import pytest

from fha import GPT, ModelConfig
from fha.errors import FhaError
from fha.experiments import (
    build_configs,
    load_experiment,
    merge,
    owner_of,
    parse_overrides,
    preset_names,
)
from fha.train_config import TrainConfig

SEEDS = ("seed-0.3m", "seed-0.8m", "seed-1m")


def configs(name: str) -> tuple[ModelConfig, TrainConfig]:
    return build_configs(load_experiment(name))


def test_every_preset_validates_and_builds_a_model():
    names = preset_names()
    assert set(names) == {*SEEDS, *(f"{s}-mha" for s in SEEDS), "tiny"}
    for name in names:
        model_config, _ = configs(name)
        assert GPT(model_config).num_parameters() > 0


def test_seed_1m_has_the_original_numbers():
    model, train = configs("seed-1m")
    assert (model.dim, model.num_layers, model.mlp_hidden_mult, model.mlp_gated, model.mlp_nonlinearity) == (
        64,
        4,
        8.0,
        True,
        "SiLU",
    )
    assert (model.num_q_heads, model.num_kv_heads, model.head_dim, model.max_seq_len, model.vocab_size) == (
        3,
        1,
        64,
        512,
        8192,
    )
    assert (model.attention, model.fractal_split, model.fractal_scale, model.rope_layout) == ("fha", 2, "head", "head")
    assert (model.norm_bias, model.dropout, model.attn_dropout) == (True, 0.0, 0.0)
    assert (train.max_steps, train.batch_size, train.lr_init, train.lr_max, train.lr_min) == (2000, 32, 1e-6, 0.1, 1e-3)
    assert (train.weight_decay, train.warmup_length, train.final_flat_length) == (0.05, 100, 400)


def test_seed_03m_and_08m():
    small, train = configs("seed-0.3m")
    assert (small.dim, small.num_layers, small.num_q_heads, small.head_dim, small.max_seq_len, small.vocab_size) == (
        64,
        4,
        4,
        32,
        256,
        2048,
    )
    assert (small.fractal_scale, small.norm_bias) == ("head", True)
    assert (train.batch_size, train.max_steps, train.lr_init, train.lr_max, train.lr_min) == (32, 100, 1e-6, 1e-2, 1e-4)
    assert (train.warmup_length, train.final_flat_length) == (10, 10)
    assert (train.weight_decay, train.num_restarts, train.T_mult) == (0.02, 3, 2.0)
    wide, wide_train = configs("seed-0.8m")
    assert wide.dim == 128 and wide.replace(dim=64) == small
    assert (wide_train.lr_init, wide_train.lr_max, wide_train.lr_min) == (1e-5, 0.1, 1e-3)
    assert wide_train.replace(lr_init=1e-6, lr_max=1e-2, lr_min=1e-4) == train


@pytest.mark.parametrize("seed", SEEDS)
def test_mha_twins_differ_only_in_attention(seed):
    fha_model, fha_train = configs(seed)
    mha_model, mha_train = configs(f"{seed}-mha")
    assert mha_model.attention == "mha" and mha_model.replace(attention="fha") == fha_model
    assert mha_train == fha_train
    assert GPT(mha_model).num_parameters() == GPT(fha_model).num_parameters()


def test_model_and_train_fields_are_disjoint():
    assert not set(ModelConfig.field_types()) & set(TrainConfig.field_types())


def test_set_routes_keys_to_their_config_with_types():
    tables = parse_overrides(["dim=128", "attention=mha", "max_steps=50", "grad_clip=none", "compile=true"])
    assert tables["model"] == {"dim": 128, "attention": "mha"}
    assert tables["train"] == {"max_steps": 50, "grad_clip": None, "compile": True}
    model, train = build_configs(merge(load_experiment("seed-0.3m"), tables))
    assert (model.dim, model.attention, train.max_steps, train.grad_clip) == (128, "mha", 50, None)
    assert owner_of("lr_max") == "train" and owner_of("head_dim") == "model"


def test_bad_set_items_name_the_problem():
    with pytest.raises(FhaError, match=r"max_iter.*did you mean max_steps"):
        parse_overrides(["max_iter=5"])
    with pytest.raises(FhaError, match="expected key=value"):
        parse_overrides(["dim"])
    with pytest.raises(FhaError, match="dim=abc"):
        parse_overrides(["dim=abc"])
    with pytest.raises(FhaError, match="invalid configuration: dim must be positive"):
        build_configs(merge(load_experiment("tiny"), parse_overrides(["dim=-4"])))
    with pytest.raises(FhaError, match="unknown preset 'seed-1M'.*did you mean"):
        load_experiment("seed-1M")


def test_config_file_with_a_base(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "seed-1m"\n[model]\nnum_layers = 2\n[train]\nmax_steps = 400\n')
    model, train = build_configs(load_experiment(config_file=path))
    assert (model.num_layers, model.dim, train.max_steps, train.warmup_length) == (2, 64, 400, 20)
    child = tmp_path / "child.toml"
    child.write_text('base = "mine.toml"\n[model]\nattention = "mha"\n')
    assert build_configs(load_experiment(config_file=child))[0].num_layers == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model]\ndimm = 3\n", "unknown \\[model\\] key 'dimm'.*did you mean dim"),
        ("[modle]\ndim = 3\n", "unknown key 'modle'.*did you mean model"),
        ("[model\n", "not valid TOML"),
        ('base = "nope"\n', "neither a preset"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(FhaError, match=message):
        load_experiment(config_file=path)
