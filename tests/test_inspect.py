"""fha inspect: shape trees through forward hooks, attention weights, heatmaps."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread
from tiny_model import make_tiny_model

from fha import GPT, KVCache, Tokenizer
from fha.cli import main
from fha.inspection import (
    attention_maps,
    attention_modules,
    capture_attention,
    example_input,
    level_layouts,
    level_weights,
    mix_values,
    save_head_layout,
    trace_shapes,
)
from fha.runs.folder import TOKENIZER_FILE, save_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARPEN = 20.0  # scales the qkv weights so that attention is far from uniform and mistakes show


def make_model(seed: int = 0, sharpen: float = 1.0, **changes) -> GPT:
    """The tests' tiny model with its qkv weights multiplied by `sharpen`."""
    model = make_tiny_model(seed, **changes)
    with torch.no_grad():
        for _, attn in attention_modules(model):
            attn.qkv.weight.mul_(sharpen)
    return model


def no_hooks_left(model: GPT) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ----------------------------------------------------------------------------- shape tree
PATTERN_CASES = [
    {"attention": "split", "layer_head_splits": [[4, 1, 2], [2, 2, 8]], "rope_layout": "subhead"},
    {"attention": "uniform-finest", "rope_layout": "subhead"},
    {"attention": "reversed-fha", "num_kv_heads": 3},
]


@pytest.mark.parametrize(
    "changes", [{}, {"attention": "mha", "num_kv_heads": 3}, {"second_resid_norm": True}, *PATTERN_CASES]
)
def test_trace_covers_every_module_and_every_level(changes):
    model = make_model(**changes)
    idx = example_input(model.config, batch_size=2, seq_len=7)
    with trace_shapes(model) as trace:
        model(idx)
    traced = set(trace.module_names())
    assert traced == {name for name, _ in model.named_modules()}
    text = trace.render()
    for layer in range(model.config.num_layers):
        assert len(level_layouts(model.config, layer)) == model.config.num_q_heads
        for layout, n in zip(level_layouts(model.config, layer), model.config.layer_splits[layer]):
            d = model.config.head_dim // n
            assert (layout.num_subheads, layout.subhead_dim) == (n, d)
            reads = (
                f"kv head {layout.value_head}"
                if layout.key_head == layout.value_head
                else f"key head {layout.key_head}, value head {layout.value_head}"
            )
            if all(split == 1 for split in model.config.layer_splits[layer]):  # ordinary heads, named so
                assert f"blocks.{layer}.attn.head{layout.level}  head  {reads}: q (2, 7, {d}), k/v (2, 7, {d})" in text
                assert f"blocks.{layer}.attn.level" not in text and "sub-head" not in text
            else:
                assert f"blocks.{layer}.attn.level{layout.level}  level  {reads}, {n} sub-head" in text
                assert f"q (2, {n}, 7, {d})" in text
    assert "<model>  GPT  (2, 7) -> ((2, 7, 97), None)" in text
    assert trace.roots[0].children[-1].label() == "output  Linear (tied to embedding)  (2, 7, 32) -> (2, 7, 97)"
    c = model.config
    assert (
        f"blocks.1.attn.qkv  Linear  (2, 7, 32) -> (2, 7, {(c.num_q_heads + 2 * c.num_kv_heads) * c.head_dim})" in text
    )


def test_kernel_lines_sit_between_the_projections():
    model = make_model()
    with trace_shapes(model) as trace:
        model(example_input(model.config, 1, 5))
    attn = next(node for node in trace.walk() if node.name == "blocks.0.attn")
    assert [child.name for child in attn.children] == ["blocks.0.attn.qkv", "blocks.0.attn.kernel", "blocks.0.attn.out"]
    kernel = attn.children[1]
    assert kernel.inputs.startswith("fractal_attention(split 2, scale subhead) q (1, 3, 5, 16), k/v (1, 1, 5, 16)")
    assert [c.outputs for c in kernel.children] == ["(1, 1, 5, 16)", "(1, 2, 5, 8)", "(1, 4, 5, 4)"]


@pytest.mark.parametrize(
    "patterns,changes,expected",
    [
        (["*.attn"], {}, ["blocks.0.attn", "blocks.1.attn"]),
        (["blocks.1.mlp*"], {}, ["blocks.1.mlp_norm", "blocks.1.mlp", "blocks.1.mlp.up", "blocks.1.mlp.down"]),
        (
            ["blocks.1.mlp*"],
            {"second_resid_norm": True},
            ["blocks.1.mlp_norm", "blocks.1.mlp", "blocks.1.mlp.up", "blocks.1.mlp.down", "blocks.1.mlp_out_norm"],
        ),
        (["norm", "embedding"], {}, ["embedding", "norm"]),
    ],
)
def test_patterns_restrict_the_trace(patterns, changes, expected):
    model = make_model(**changes)
    with trace_shapes(model, include=patterns) as trace:
        model(example_input(model.config, 1, 4))
    assert trace.module_names() == expected
    assert ("level0" in trace.render()) == (patterns == ["*.attn"])


@pytest.mark.slow
def test_tracing_changes_no_output_and_removes_its_hooks():
    model = make_model()
    idx = example_input(model.config, 2, 9)
    expected, _ = model(idx)
    with trace_shapes(model) as trace:
        traced, _ = model(idx)
        assert not no_hooks_left(model)
    torch.testing.assert_close(traced, expected, rtol=0, atol=0)
    assert no_hooks_left(model) and trace.roots
    with pytest.raises(RuntimeError), trace_shapes(model):
        raise RuntimeError("hooks must go even when the block fails")
    assert no_hooks_left(model)


def test_trace_with_a_kv_cache_marks_key_lengths_symbolically():
    model = make_model()
    cache = KVCache.for_model(model, batch_size=1)
    model(example_input(model.config, 1, 4), kv_cache=cache)
    with trace_shapes(model, include=["blocks.0.attn"]) as trace:
        model(example_input(model.config, 1, 1), kv_cache=cache)
    assert "q (1, 3, 1, 16), k/v (1, 1, S, 16)" in trace.render()
    with pytest.raises(ValueError, match="without a KV cache"), capture_attention(model):
        model(example_input(model.config, 1, 1), kv_cache=cache)
    assert no_hooks_left(model)


# ----------------------------------------------------------------------- attention weights
ATTENTION_CASES = [
    {},
    {"fractal_scale": "head"},
    {"fractal_scale": 0.3, "num_q_heads": 4, "num_kv_heads": 2, "head_dim": 32},
    {"fractal_split": 3, "head_dim": 18, "num_q_heads": 3},
    {"attention": "mha", "num_kv_heads": 3},
    {"attention": "mha", "num_q_heads": 4, "num_kv_heads": 2},
    *PATTERN_CASES,
]


@pytest.mark.slow
@pytest.mark.parametrize("changes", ATTENTION_CASES)
def test_recomputed_weights_reproduce_the_attention_output(changes):
    model = make_model(sharpen=SHARPEN, **changes).double()
    idx = example_input(model.config, 2, 11)
    maps = attention_maps(model, idx)
    modules = dict(attention_modules(model))
    assert [m.layer for m in maps] == list(range(model.config.num_layers))
    for layer in maps:
        attn = modules[layer.call.name]
        rebuilt = mix_values(attn, model.config, layer.call, layer.weights)
        torch.testing.assert_close(rebuilt, layer.call.output, rtol=1e-9, atol=1e-9)
        # The check has teeth: weights that are merely causal and uniform do not pass it.
        uniform = [
            torch.tril(torch.ones_like(w)) / torch.arange(1, w.shape[-1] + 1, dtype=w.dtype)[:, None]
            for w in layer.weights
        ]
        assert not torch.allclose(mix_values(attn, model.config, layer.call, uniform), layer.call.output, atol=1e-4)


def test_weights_are_causal_distributions_with_one_map_per_subhead():
    model = make_model(sharpen=SHARPEN, num_q_heads=3, head_dim=16)
    T = 10
    maps = attention_maps(model, example_input(model.config, 2, T), layers=[1])
    assert [m.layer for m in maps] == [1]
    for level, weights in enumerate(maps[0].weights):
        assert weights.shape == (2, 2**level, T, T)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2**level, T))
        assert (weights >= 0).all()
        above_diagonal = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)
        assert (weights[..., above_diagonal] == 0).all()
    assert (maps[0].weights[2].amax(dim=-1) > 0.9).any()  # sharpened: some rows are nearly one-hot


def test_weights_follow_a_padding_mask_given_to_the_model():
    model = make_model(sharpen=SHARPEN)
    idx = example_input(model.config, 2, 6)
    token_mask = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    modules = dict(attention_modules(model))
    with capture_attention(model) as calls:
        model(idx, token_mask=token_mask)
    for call in calls:
        weights = level_weights(modules[call.name], model.config, call)
        assert (weights[0][0, :, 2:, :2] == 0).all()  # real tokens of row 0 never read its padding
        torch.testing.assert_close(
            mix_values(modules[call.name], model.config, call, weights)[:, 2:], call.output[:, 2:]
        )


def test_head_layout_draws_one_block_of_rows_per_layer_when_layers_differ(tmp_path):
    same = save_head_layout(make_model().config, tmp_path / "same.png")
    per_layer = save_head_layout(make_model(attention="coarse-to-fine").config, tmp_path / "per_layer.png")
    rows = {path: imread(path).shape[0] for path in (same, per_layer)}
    assert rows[per_layer] > 1.5 * rows[same]  # 2 layers x 3 heads of rows against 3


def test_unknown_layer_is_an_error():
    model = make_model()
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        attention_maps(model, example_input(model.config, 1, 3), layers=[5])


# ---------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("run")
    tokenizer = Tokenizer.train(["Once upon a time there was a cat.", "The cat sat on a mat."], 40)
    model = make_model(sharpen=SHARPEN, vocab_size=tokenizer.vocab_size, num_layers=2, num_q_heads=3)
    save_weights(model, directory)
    tokenizer.save(directory / TOKENIZER_FILE)
    return directory


def test_cli_prints_the_tree_from_a_toml_config(tmp_path, capsys):
    config = tmp_path / "small.toml"
    config.write_text("[model]\ndim = 32\nnum_layers = 1\nnum_q_heads = 3\nhead_dim = 32\n\n[train]\nbatch_size = 4\n")
    assert main(["inspect", "--config", str(config), "--set", "fractal_split=4", "--seq-len", "5"]) == 0
    out = capsys.readouterr().out
    assert "fha (split 4" in out and "input (B, T) = (2, 5)" in out
    assert "blocks.0.attn.level1  level  kv head 0, 4 sub-heads of 8" in out
    assert "blocks.0.attn.level2  level  kv head 0, 16 sub-heads of 2: q (2, 16, 5, 2)" in out
    assert (
        "├─ norm  RMSNorm  (2, 5, 32) -> (2, 5, 32)\n└─ output  Linear (tied to embedding)  (2, 5, 32) -> (2, 5, 2048)"
        in out
    )


def test_cli_tree_of_a_run_with_module_patterns(run_dir, capsys):
    assert main(["inspect", str(run_dir), "--modules", "*.attn", "--batch-size", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("blocks.0.attn  Attention  (1, 16, 32)")
    assert not any("mlp" in line for line in lines)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["inspect"], "exactly one of RUN_DIR, --preset NAME or --config FILE"),
        (["inspect", "--config", "{cfg}", "--modules", "nothing*"], "no module name matches"),
        (["inspect", "--config", "{cfg}", "--set", "dimm=3"], "unknown setting 'dimm' (did you mean dim?)"),
        (["inspect", "--config", "{cfg}", "--seq-len", "999"], "seq_len <= max_seq_len=32"),
        (
            ["inspect", "--config", "{cfg}", "--attention", "--prompt", "a", "--out", "x"],
            "--attention needs a trained RUN_DIR",
        ),
        (["inspect", "{run}", "--attention", "--prompt", "a"], "--attention needs --prompt TEXT and --out DIR"),
        (["inspect", "{run}", "--prompt", "a"], "--prompt is used with --attention"),
        (["inspect", "{tmp}/empty"], "empty: not a run folder (no model_config.json)"),
    ],
)
def test_cli_errors_are_one_line(argv, message, run_dir, tmp_path, capsys):
    config = tmp_path / "model_config.json"
    make_model().config.to_json(config)
    (tmp_path / "empty").mkdir()
    argv = [a.format(cfg=config, run=run_dir, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fha: error: ") and message in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_saves_heatmaps_for_every_layer_level_and_subhead(run_dir, tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(["inspect", str(run_dir), "--attention", "--prompt", "Once upon a time", "--out", str(out)]) == 0
    assert "wrote the head layout" in capsys.readouterr().out
    assert (out / "head_layout.png").stat().st_size > 0
    for layer in range(2):
        assert (out / f"layer{layer}.png").is_file()
        for level, count in enumerate([1, 2, 4]):
            for sub in range(count):
                assert (out / f"layer{layer}" / f"level{level}_subhead{sub}.png").is_file()
    assert len(list(out.rglob("*.png"))) == 1 + 2 * (1 + 7)


@pytest.mark.slow
def test_example_script_runs(capsys):
    runpy.run_path(str(REPO_ROOT / "examples" / "inspect_shapes.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "blocks.0.attn.level2" in out and "recomputed weights reproduce" in out


# ------------------------------------------------------------------- presets, configs, errors
def test_cli_tree_of_a_preset(capsys):
    from fha.experiments import build_configs, load_experiment

    assert main(["inspect", "--preset", "tiny", "--seq-len", "4", "--modules", "norm"]) == 0
    out = capsys.readouterr().out
    model_config, _ = build_configs(load_experiment(preset="tiny"))
    assert out.startswith(f"fha (split {model_config.fractal_split}")
    assert f"{GPT(model_config).num_parameters():,} parameters" in out
    assert f"norm  RMSNorm  (2, 4, {model_config.dim}) -> (2, 4, {model_config.dim})" in out


@pytest.mark.slow
def test_cli_preset_and_toml_config_follow_their_base(tmp_path, capsys):
    from fha.experiments import build_configs, load_experiment

    expected, _ = build_configs(load_experiment(preset="seed-1m-mha"))  # base = "seed-1m", attention = "mha"
    config = tmp_path / "mine.toml"
    config.write_text('base = "seed-1m"\n[model]\nattention = "mha"\n')
    for argv in (["--preset", "seed-1m-mha"], ["--config", str(config)]):
        assert main(["inspect", *argv, "--modules", "norm"]) == 0
        header = capsys.readouterr().out.splitlines()[0]
        assert header == (
            f"mha ({expected.num_q_heads} heads of {expected.head_dim}, {expected.num_kv_heads} kv); "
            f"{GPT(expected).num_parameters():,} parameters; input (B, T) = (2, 16)"
        )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--preset", "tinyy"], "unknown preset 'tinyy'"),
        (["{run}", "--set", "dim=abc"], "--set dim=abc: dim='abc': expected int"),
        (["{run}", "--attention", "--prompt", "a", "--out", "{tmp}/a_file"], "--out {tmp}/a_file: is a file"),
        (["{run}", "--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_cli_more_errors_are_one_line(argv, message, run_dir, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    argv = [a.format(run=run_dir, tmp=tmp_path) for a in argv]
    assert main(["inspect", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("fha: error: ") and message.format(tmp=tmp_path) in err


def test_cli_unmatched_modules_print_nothing_on_stdout(run_dir, capsys):
    assert main(["inspect", str(run_dir), "--modules", "nothing*"]) == 2
    assert capsys.readouterr().out == ""


def test_printing_a_trace_shows_the_tree():
    import torch

    from fha import GPT, ModelConfig, trace_shapes

    model = GPT(ModelConfig(dim=16, vocab_size=40, num_layers=1, max_seq_len=8, num_q_heads=2, head_dim=8))
    with trace_shapes(model) as trace:
        model(torch.zeros(1, 4, dtype=torch.long))
    assert str(trace) == trace.render() and str(trace).splitlines()[1].startswith("├─ embedding")
