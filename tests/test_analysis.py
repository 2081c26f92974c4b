"""fha analyze: per-sub-head attention measurements, induction and copying scores, ablations."""

from __future__ import annotations

import copy
import csv
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from matplotlib.image import imread
from tiny_model import make_tiny_model
from tiny_run import LINES

import fha
from fha.analysis import SubheadRow, SubheadTable, analyze_subheads, pooling, summary_by_size
from fha.analysis import ablation as ablation_module
from fha.analysis import analyze as analyze_module
from fha.analysis.ablation import subheads
from fha.analysis.metrics import (
    AttentionSums,
    copying_score,
    entropy_bits,
    first_token_weight,
    induction_weight,
    mean_distance,
    previous_token_weight,
    repeated_sequences,
)
from fha.cli import main
from fha.data import eval_windows
from fha.errors import FhaError
from fha.inspection import attention_modules
from fha.model.loss import counted_targets
from fha.runs.folder import CHECKPOINTS_DIR, MODEL_FILE, save_weights
from fha.tokenizer import BOS_ID

SHARPEN = 8.0  # scales the attention weights so that attention, and so ablation, matters
EMBEDDING_SCALE = 30.0
T = 12


def previous_token_map(T: int) -> torch.Tensor:
    """(T, T) weights with every query t >= 1 on t - 1 (query 0 on itself)."""
    weights = torch.zeros(T, T, dtype=torch.float64)
    weights[0, 0] = 1.0
    weights[torch.arange(1, T), torch.arange(T - 1)] = 1.0
    return weights


def uniform_map(T: int) -> torch.Tensor:
    """(T, T) causal weights spread evenly over the t + 1 visible positions."""
    return torch.ones(T, T, dtype=torch.float64).tril() / torch.arange(1, T + 1, dtype=torch.float64)[:, None]


def sharpened_model(seed: int = 0, **changes) -> fha.GPT:
    model = make_tiny_model(seed, **changes).double()
    with torch.no_grad():
        model.embedding.weight.mul_(EMBEDDING_SCALE)  # confident predictions, which the sub-heads change
        for _, attn in attention_modules(model):
            attn.qkv.weight.mul_(SHARPEN)
            attn.out.weight.mul_(SHARPEN)
    return model


@torch.no_grad()
def text_loss(model: fha.GPT, tokens: torch.Tensor) -> float:
    """The model's mean loss over the text's windows, in the model's own precision (the reference)."""
    total, count = 0.0, 0
    for x, y in eval_windows(tokens.numpy(), model.config.max_seq_len, 4):
        logits, _ = model(x)
        counted = counted_targets(y, model.config.pad_id)
        total += float(F.cross_entropy(logits[counted], y[counted], reduction="sum"))
        count += int(counted.sum())
    return total / count


def random_text(model: fha.GPT, windows: float, seed: int = 0) -> torch.Tensor:
    """Token ids that fill `windows` context windows (a fraction leaves a padded last window)."""
    generator = torch.Generator().manual_seed(seed)
    count = int(windows * model.config.max_seq_len) + 1
    return torch.randint(4, model.config.vocab_size, (count,), generator=generator)


# --------------------------------------------------------------------- the measurements
@pytest.mark.slow
def test_attention_on_the_previous_token_scores_one_with_no_entropy():
    weights = previous_token_map(T)
    torch.testing.assert_close(entropy_bits(weights), torch.zeros(T, dtype=torch.float64))
    torch.testing.assert_close(previous_token_weight(weights), torch.ones(T - 1, dtype=torch.float64))
    torch.testing.assert_close(mean_distance(weights), torch.tensor([0.0] + [1.0] * (T - 1), dtype=torch.float64))
    torch.testing.assert_close(first_token_weight(weights), torch.tensor([1.0] + [0.0] * (T - 2), dtype=torch.float64))


def test_uniform_attention_has_entropy_log2_of_the_visible_positions():
    weights = uniform_map(T)
    t = torch.arange(T, dtype=torch.float64)
    torch.testing.assert_close(entropy_bits(weights), torch.log2(t + 1))
    torch.testing.assert_close(mean_distance(weights), t / 2)
    torch.testing.assert_close(previous_token_weight(weights), 1 / (t[1:] + 1))
    torch.testing.assert_close(first_token_weight(weights), 1 / (t[1:] + 1))


def test_induction_weight_reads_the_token_after_the_first_occurrence():
    length = 5
    sequences = repeated_sequences(3, length, vocab_size=50, seed=1)
    assert sequences.shape == (3, 2 * length + 1) and (sequences[:, 0] == BOS_ID).all()
    assert (sequences[:, 1 : length + 1] == sequences[:, length + 1 :]).all() and (sequences[:, 1:] >= 4).all()
    weights = torch.zeros(2 * length + 1, 2 * length + 1, dtype=torch.float64)
    for i in range(length):
        query = length + 1 + i  # the repeat of the token at 1 + i, which was followed by 2 + i
        assert sequences[0, query] == sequences[0, 1 + i]
        weights[query, 2 + i] = 1.0
    torch.testing.assert_close(induction_weight(weights, length), torch.ones(length, dtype=torch.float64))
    torch.testing.assert_close(
        induction_weight(previous_token_map(2 * length + 1), length), torch.zeros(length).double()
    )
    with pytest.raises(ValueError, match="not a repeated sequence of length 4"):
        induction_weight(weights, 4)


def test_attention_sums_average_over_counted_queries_only():
    maps = torch.stack([previous_token_map(T), uniform_map(T)])[None]  # (B=1, n=2, T, T)
    queries = torch.ones(1, T, dtype=torch.bool)
    queries[0, 8:] = False  # a padded tail
    sums = AttentionSums()
    sums.add([maps[:, :1], maps[:, 1:]], queries)  # two levels of one sub-head each
    sums.add([maps[:, :1], maps[:, 1:]], torch.ones(1, T, dtype=torch.bool))
    t = torch.arange(T, dtype=torch.float64)
    counted = torch.cat([t[:8], t])
    later = torch.cat([t[1:8], t[1:]])
    expected_uniform = [torch.log2(counted + 1).mean(), (counted / 2).mean(), (1 / (later + 1)).mean()]
    means = sums.means()
    torch.testing.assert_close(means[0, :3], torch.tensor([0.0, (len(counted) - 2) / len(counted), 1.0]).double())
    torch.testing.assert_close(means[1, :3], torch.stack(expected_uniform))


def test_copying_score_matches_the_eigenvalues_of_the_whole_circuit():
    generator = torch.Generator().manual_seed(0)
    V, C, d = 40, 12, 3
    embedding, value, output = (torch.randn(*shape, generator=generator).double() for shape in ((V, C), (d, C), (C, d)))
    gain_in, gain_out = torch.rand(C, generator=generator).double() + 0.5, torch.rand(C, generator=generator).double()
    full = embedding @ torch.diag(gain_out) @ output @ value @ torch.diag(gain_in) @ embedding.t()  # (V, V)
    eigenvalues = torch.linalg.eigvals(full)
    expected = float(eigenvalues.real.sum() / eigenvalues.abs().sum())
    circuit = torch.diag(gain_in) @ embedding.t() @ embedding @ torch.diag(gain_out)
    assert copying_score(value, output, circuit) == pytest.approx(expected, abs=1e-9)
    assert copying_score(value, -output, circuit) == pytest.approx(-expected, abs=1e-9)
    assert math.isnan(copying_score(value, output * 0, circuit))


@pytest.mark.slow
@pytest.mark.parametrize("changes", [{"attention": "reversed-fha", "num_kv_heads": 3}, {"second_resid_norm": True}])
def test_copying_scores_of_a_model_read_each_subheads_own_weights(changes):
    model = sharpened_model(5, **changes)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:  # norm gains: not all ones, so that leaving one out shows
                parameter.uniform_(0.5, 1.5)
    table = analyze_subheads(model, random_text(model, 1), induction_length=4, induction_sequences=2)
    config = model.config
    L, hd = config.num_q_heads, config.head_dim
    embedding = model.embedding.weight.detach()
    for row in table:
        block = model.blocks[row.layer]
        heads = block.attn.qkv.weight.view(-1, hd, config.dim)  # q heads, k heads, v heads
        value_head = heads[L + config.num_kv_heads + row.head // (L // config.num_kv_heads)]  # (hd, C)
        dims = slice(row.subhead * row.subhead_dim, (row.subhead + 1) * row.subhead_dim)
        output = block.attn.out.weight[:, row.head * hd : (row.head + 1) * hd][:, dims]  # (C, d)
        gain_out = model.norm.weight * (block.attn_out_norm.weight if block.attn_out_norm is not None else 1)
        full = embedding @ torch.diag(gain_out) @ output @ value_head[dims] @ torch.diag(block.attn_norm.weight)
        eigenvalues = torch.linalg.eigvals(full.detach() @ embedding.t())  # (V, V) circuit
        assert row.copying == pytest.approx(float(eigenvalues.real.sum() / eigenvalues.abs().sum()), abs=1e-6)


# ------------------------------------------------------------------ a whole model, by hand
@pytest.mark.slow
def test_a_model_with_uniform_attention_gives_the_uniform_answers():
    model = make_tiny_model(1).double()
    with torch.no_grad():
        for _, attn in attention_modules(model):
            attn.qkv.weight[: attn.num_q_heads * attn.head_dim] = 0  # no query: every score 0, uniform weights
    T = model.config.max_seq_len
    length = 6
    table = analyze_subheads(model, random_text(model, 2), induction_length=length, induction_sequences=3)
    t = torch.arange(T, dtype=torch.float64)
    repeat = torch.arange(length + 1, 2 * length + 1, dtype=torch.float64)
    assert len(table) == model.config.num_layers * sum(model.config.layer_splits[0])
    for row in table:
        assert row.entropy_bits == pytest.approx(float(torch.log2(t + 1).mean()), abs=1e-9)
        assert row.mean_distance == pytest.approx(float((t / 2).mean()), abs=1e-9)
        assert row.previous_token == pytest.approx(float((1 / (t[1:] + 1)).mean()), abs=1e-9)
        assert row.first_token == pytest.approx(row.previous_token, abs=1e-9)
        assert row.induction == pytest.approx(float((1 / (repeat + 1)).mean()), abs=1e-9)


@pytest.mark.slow
def test_weights_forced_onto_the_previous_token_score_one_in_every_subhead(monkeypatch):
    model = make_tiny_model(2)
    real = analyze_module.level_weights

    def forced(attn, config, call):
        return [torch.zeros_like(w) + previous_token_map(w.shape[-1]).to(w) for w in real(attn, config, call)]

    monkeypatch.setattr(analyze_module, "level_weights", forced)
    table = analyze_subheads(model, random_text(model, 1.5), induction_length=5, induction_sequences=2)
    for row in table:
        assert (row.entropy_bits, row.previous_token, row.induction) == pytest.approx((0.0, 1.0, 0.0), abs=1e-6)


ATTENTION_CASES = [
    {},
    {"attention": "mha", "num_kv_heads": 3},
    {"attention": "split", "layer_head_splits": [[4, 1, 2], [2, 2, 8]], "rope_layout": "subhead"},
    {"attention": "reversed-fha", "num_kv_heads": 3, "rope_layout": "subhead"},
    {"second_resid_norm": True, "pad_id": 0},
]


@pytest.mark.slow
@pytest.mark.parametrize("changes", ATTENTION_CASES)
def test_zero_ablation_equals_removing_the_subheads_columns(changes):
    model = sharpened_model(**changes)
    tokens = random_text(model, 2.5)
    table = analyze_subheads(model, tokens, induction_length=4, induction_sequences=2)
    clean = text_loss(model, tokens)
    config = model.config
    expected_rows = [
        (layer, s.head, s.subhead, s.dim) for layer in range(config.num_layers) for s in subheads(config, layer)
    ]
    assert [(row.layer, row.head, row.subhead, row.subhead_dim) for row in table] == expected_rows
    assert all(row.clean_loss == pytest.approx(clean, abs=1e-9) for row in table)
    for row in table:
        pruned = copy.deepcopy(model)
        found = next(s for s in subheads(config, row.layer) if (s.head, s.subhead) == (row.head, row.subhead))
        with torch.no_grad():
            pruned.blocks[row.layer].attn.out.weight[:, found.columns] = 0
        assert row.zero_ablation == pytest.approx(text_loss(pruned, tokens) - clean, abs=1e-9)
    assert max(abs(row.zero_ablation) for row in table) > 1e-3  # the sub-heads matter


@pytest.mark.slow
def test_ablations_on_the_first_tokens_match_a_shorter_text():
    model = sharpened_model(4)
    tokens = random_text(model, 3)
    T = model.config.max_seq_len
    first = analyze_subheads(model, tokens, ablation_tokens=T, induction_length=4, induction_sequences=2)
    whole = analyze_subheads(model, tokens, ablation_tokens=None, induction_length=4, induction_sequences=2)
    assert {row.ablation_tokens for row in first} == {T} and {row.ablation_tokens for row in whole} == {3 * T}
    assert first.rows[0].clean_loss == pytest.approx(text_loss(model, tokens[: T + 1]), abs=1e-9)
    assert [row.entropy_bits for row in first] == [row.entropy_bits for row in whole]  # the whole text
    assert first.rows[0].zero_ablation != pytest.approx(whole.rows[0].zero_ablation, abs=1e-6)


def test_mean_ablation_equals_a_bias_of_the_mean_output():
    model = sharpened_model(3)
    tokens = random_text(model, 1.5)
    table = analyze_subheads(model, tokens, induction_length=4, induction_sequences=2)
    layer = 1
    found = subheads(model.config, layer)[4]  # a sub-head of the third head
    outputs = []
    hook = model.blocks[layer].attn.out.register_forward_pre_hook(lambda module, args: outputs.append(args[0]))
    clean = text_loss(model, tokens)
    hook.remove()
    T = model.config.max_seq_len
    counted = torch.cat([output.flatten(0, 1) for output in outputs])[: len(tokens) - 1]  # positions with a target
    mean = counted[:, found.columns].mean(dim=0)
    replaced = copy.deepcopy(model)
    out = replaced.blocks[layer].attn.out
    with torch.no_grad():
        out.bias = torch.nn.Parameter(out.weight[:, found.columns] @ mean)
        out.weight[:, found.columns] = 0
    row = next(r for r in table if (r.layer, r.head, r.subhead) == (layer, found.head, found.subhead))
    assert T * 1.5 + 1 == len(tokens)
    assert row.mean_ablation == pytest.approx(text_loss(replaced, tokens) - clean, abs=1e-9)
    assert row.mean_ablation != pytest.approx(row.zero_ablation, abs=1e-6)


@torch.no_grad()
def plain_ablation_losses(model: fha.GPT, tokens: torch.Tensor) -> dict[tuple[int, int, int], tuple[float, float]]:
    """(zero, mean) loss increase of every sub-head the plain way: the whole model run on the
    text, the sub-head's input columns of `attn.out` replaced by a hook (no copies, no reuse)."""
    windows = list(eval_windows(tokens.numpy(), model.config.max_seq_len, len(tokens)))  # all in one batch
    outs = [block.attn.out for block in model.blocks]
    inputs: list[torch.Tensor] = []
    hooks = [out.register_forward_pre_hook(lambda module, args: inputs.append(args[0])) for out in outs]
    sums = [torch.zeros(out.in_features, dtype=torch.float64) for out in outs]
    count = 0
    for x, y in windows:  # the mean input of each attn.out over the counted positions
        inputs.clear()
        model(x)
        counted = counted_targets(y, model.config.pad_id)
        for layer, found in enumerate(inputs):
            sums[layer] += found[counted].double().sum(dim=0)
        count += int(counted.sum())
    for hook in hooks:
        hook.remove()

    def loss(layer: int = 0, columns: slice = slice(0, 0), value: torch.Tensor | None = None) -> float:
        def replace(module, args):
            replaced = args[0].clone()
            replaced[..., columns] = 0 if value is None else value[columns].to(replaced)
            return (replaced,)

        hook = outs[layer].register_forward_pre_hook(replace)
        total = 0.0
        for x, y in windows:
            logits, _ = model(x)
            counted = counted_targets(y, model.config.pad_id)
            total += float(F.cross_entropy(logits[counted].double(), y[counted], reduction="sum"))
        hook.remove()
        return total / count

    clean = loss()
    found = {}
    for layer in range(model.config.num_layers):
        mean = sums[layer] / count
        for sub in subheads(model.config, layer):
            zero, replaced = loss(layer, sub.columns), loss(layer, sub.columns, mean)
            found[(layer, sub.head, sub.subhead)] = (zero - clean, replaced - clean)
    return found


@pytest.mark.parametrize("changes", [{}, {"attention": "split", "layer_head_splits": [[1, 4, 2], [2, 2, 8]]}])
def test_batched_ablations_equal_the_plain_computation_in_float32(changes, monkeypatch):
    model = sharpened_model(6, **changes).float()
    tokens = random_text(model, 3.5)  # 4 windows, the last one padded: two batches of 2
    monkeypatch.setattr(ablation_module, "LOGITS_PER_CHUNK", {"cpu": 15 * model.config.vocab_size})  # 15 rows
    monkeypatch.setattr(ablation_module, "ABLATION_ROWS", 5)  # 2 windows x 2 copies a pass, with a remainder
    table = analyze_subheads(
        model, tokens, batch_size=2, ablation_tokens=None, induction_length=4, induction_sequences=2
    )
    plain = plain_ablation_losses(model, tokens)
    assert [row.position for row in table] == list(plain)
    for row in table:
        assert (row.zero_ablation, row.mean_ablation) == pytest.approx(plain[row.position], abs=1e-5)
    assert max(abs(row.zero_ablation) for row in table) > 1e-2  # large enough for 1e-5 to mean something


def test_the_model_is_left_as_it_was():
    model = sharpened_model()
    model.train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    analyze_subheads(model, random_text(model, 1), induction_length=4, induction_sequences=2)
    assert model.training
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(type(block.attn).__name__ == "Attention" for block in model.blocks)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": 0}, "`batch_size` must be at least 1"),
        ({"max_tokens": 1}, "`max_tokens` must be at least 2"),
        ({"induction_length": 16}, "`induction_length` must be between 2 and 15"),
        ({"induction_sequences": 0}, "`induction_sequences` must be at least 1"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    model = make_tiny_model()
    with pytest.raises(ValueError, match=message):
        analyze_subheads(model, random_text(model, 1), **kwargs)


def test_documents_need_their_tokenizer(tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.vocab_size)
    with pytest.raises(ValueError, match="needs their `tokenizer`"):
        analyze_subheads(model, LINES)
    table = analyze_subheads(model, LINES, tokenizer=tokenizer, induction_length=4, induction_sequences=2)
    assert len(table) == 2 * 7


# ------------------------------------------------------------------------------ the table
def make_row(**changes) -> SubheadRow:
    values = dict.fromkeys(("entropy_bits", "mean_distance", "previous_token", "first_token", "copying"), 0.5)
    values.update(induction=0.1, zero_ablation=0.01, mean_ablation=0.02, clean_loss=3.0, ablation_tokens=100)
    place = {"run": "a", "step": 10, "layer": 0, "head": 0, "subhead": 0, "subhead_dim": 8, "num_subheads": 1}
    return SubheadRow(**{**place, **values, **changes})


def test_table_round_trips_through_csv(tmp_path):
    table = SubheadTable(
        (make_row(), make_row(step=None, subhead=1, copying=math.nan), make_row(run="b, c", zero_ablation=-1 / 3))
    )
    back = SubheadTable.read_csv(table.to_csv(tmp_path / "t.csv"))
    assert back.rows[0] == table.rows[0] and back.rows[2] == table.rows[2]
    assert back.rows[1].step is None and math.isnan(back.rows[1].copying)
    (tmp_path / "bad.csv").write_text("run,step\na,1\n")
    with pytest.raises(FhaError, match="bad.csv: not a sub-head table"):
        SubheadTable.read_csv(tmp_path / "bad.csv")


def test_labels_steps_and_the_latest_rows():
    table = SubheadTable.concat(
        [SubheadTable((make_row(step=20), make_row(step=5))).labelled(run="x"), SubheadTable((make_row(step=None),))]
    )
    assert table.runs() == ["x", "a"] and table.steps("x") == [5, 20]
    assert [(row.run, row.step) for row in table.latest()] == [("x", 20), ("a", None)]


def test_summary_by_size_counts_induction_and_previous_token_subheads():
    rows = [
        make_row(subhead_dim=8, induction=0.9, previous_token=0.1, zero_ablation=0.3),
        make_row(subhead_dim=8, subhead=1, induction=0.2, previous_token=0.7, zero_ablation=0.1),
        make_row(subhead_dim=16, induction=0.4, previous_token=0.39),
    ]
    summaries = summary_by_size(SubheadTable(tuple(rows)))
    assert [(s.subhead_dim, s.count, s.induction_subheads, s.previous_token_subheads) for s in summaries] == [
        (16, 1, 1, 0),
        (8, 2, 1, 1),
    ]
    assert summaries[1].mean_zero_ablation == pytest.approx(0.2) and summaries[1].max_induction == 0.9


# -------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "valid.txt"
    path.write_text("\n\n".join(LINES * 3))
    return path


@pytest.fixture(scope="module")
def run_with_checkpoints(tiny_run_dir, tmp_path_factory) -> Path:
    """The tiny run with two earlier checkpoints: its weights, damped."""
    run = tmp_path_factory.mktemp("checkpointed") / "tiny"
    shutil.copytree(tiny_run_dir, run)
    model = fha.load_run(run).model
    for step, damping in ((10, 0.3), (20, 0.6)):
        folder = run / CHECKPOINTS_DIR / f"step-{step}"
        early = copy.deepcopy(model)
        with torch.no_grad():
            for parameter in early.parameters():
                parameter.mul_(damping)
        save_weights(early, folder)
        shutil.copy(run / "tokenizer.json", folder / "tokenizer.json")
    return run


@pytest.mark.slow
def test_cli_writes_the_table_reports_and_figures(tiny_run_dir, text_file, tmp_path, capsys):
    out = tmp_path / "analysis"
    argv = ["analyze", str(tiny_run_dir), str(tiny_run_dir), "--names", "one", "two"]
    assert main([*argv, "--data", str(text_file), "--out", str(out), "--induction-length", "5"]) == 0
    printed = capsys.readouterr().out
    assert "| one | — | 16 | 2 |" in printed and f"wrote {out / 'report.html'}" in printed
    table = SubheadTable.read_csv(out / "subheads.csv")
    assert table.runs() == ["one", "two"] and len(table) == 2 * 2 * (1 + 2)
    assert [row.subhead_dim for row in table.rows[:3]] == [16, 8, 8]
    same = [(a.zero_ablation, a.induction) for a in table.rows[:6]] == [
        (b.zero_ablation, b.induction) for b in table.rows[6:]
    ]
    assert same  # one run twice measures the same
    markdown = (out / "report.md").read_text()
    for heading in (
        "## Runs",
        "## By sub-head size",
        "## Most important sub-heads",
        "## Every sub-head",
        "docs/analysis.md",
    ):
        assert heading in markdown
    assert "![subheads induction](subheads_induction.png)" in markdown
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 9 and 'src="subheads' not in page
    heatmap = imread(out / "subheads_zero_ablation.png")
    assert heatmap.shape[1] > 1.6 * imread(out / "importance_vs_size.png").shape[1] / 2  # two runs side by side
    assert not (out / "over_training.png").exists()


@pytest.mark.slow
def test_cli_checkpoints_follow_training_in_svg(run_with_checkpoints, text_file, tmp_path, capsys):
    out = tmp_path / "analysis"
    argv = ["analyze", str(run_with_checkpoints), "--data", str(text_file), "--out", str(out), "--checkpoints"]
    options = ["--format", "svg", "--max-tokens", "40", "--ablation-tokens", "all", "--induction-sequences", "2"]
    assert main([*argv, *options]) == 0
    table = SubheadTable.read_csv(out / "subheads.csv")
    assert table.steps("tiny") == [10, 20, None]
    assert len({row.zero_ablation for row in table if row.position == (0, 0, 0)}) == 3
    assert (out / "over_training.svg").is_file() and (out / "subheads_entropy_bits.svg").is_file()
    assert "data:image/svg+xml;base64," in (out / "report.html").read_text()
    assert "tiny 40 tokens, ablations on the first 39 predicted" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["{run}", "--checkpoints"], "no checkpoints to analyse (--checkpoints reads"),
        (["{run}", "{run}"], "two runs are named 'tiny'; tell them apart with --names"),
        (["{run}", "--names", "a", "b"], "--names gives 2 names for 1 run"),
        (["{run}", "--max-tokens", "1"], "--max-tokens must be at least 2"),
        (["{run}", "--ablation-tokens", "some"], "--ablation-tokens: expected a number of tokens or 'all', got 'some'"),
        (["{run}", "--ablation-tokens", "0"], "--ablation-tokens must be at least 1, got 0"),
        (["{run}", "--induction-length", "99"], "--induction-length must be between 2 and 15"),
        (["{run}", "--dpi", "10"], "--dpi must be between 50 and 1200, got 10"),
        (["{tmp}/nothing"], "nothing: no such run folder"),
        (["{run}", "--out", "{tmp}/a_file"], "--out {tmp}/a_file: is a file"),
        (["{run}", "--data", "{tmp}/missing.txt"], "missing.txt"),
    ],
)
def test_cli_errors_are_one_line(argv, message, tiny_run_dir, text_file, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    argv = [a.format(run=tiny_run_dir, tmp=tmp_path) for a in argv]
    defaults = ["--data", str(text_file)] if "--data" not in argv else []
    defaults += ["--out", str(tmp_path / "out")] if "--out" not in argv else []
    assert main(["analyze", *argv, *defaults]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("fha: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message.format(tmp=tmp_path) in err


@pytest.mark.slow
def test_a_damaged_checkpoint_is_one_line(run_with_checkpoints, text_file, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(run_with_checkpoints, broken)
    (broken / CHECKPOINTS_DIR / "step-10" / MODEL_FILE).write_bytes(b"not weights")
    argv = ["analyze", str(broken), "--data", str(text_file), "--out", str(tmp_path / "o"), "--checkpoints"]
    assert main(argv) == 2
    assert "step-10/model.safetensors: corrupt weights" in capsys.readouterr().err


def test_the_function_is_exported_lazily():
    assert fha.analyze_subheads is analyze_subheads and "analyze_subheads" in dir(fha)


def test_per_run_summaries_round_trip_and_older_files_still_read(tmp_path):
    values = {name: 0.25 * (index + 1) for index, name in enumerate(pooling.MEASURE_NAMES)}
    summaries = [pooling.RunSummary("fha", "fha/seed-0", 8, 4, 2.5, values)]
    path = pooling.write_run_summaries(summaries, tmp_path / "runs.csv")
    assert pooling.read_run_summaries(path) == summaries
    # a file written before the attention distance was pooled: the other measures, and NaN for it
    older = tmp_path / "older.csv"
    with path.open() as source, older.open("w", newline="") as target:
        writer = csv.writer(target, lineterminator="\n")
        for row in csv.DictReader(source):
            if target.tell() == 0:
                writer.writerow(pooling.OLDER_RUN_COLUMNS)
            writer.writerow([row[column] for column in pooling.OLDER_RUN_COLUMNS])
    (read,) = pooling.read_run_summaries(older)
    assert math.isnan(read.values["mean_distance_tokens"])
    assert {k: v for k, v in read.values.items() if k != "mean_distance_tokens"} == {
        k: v for k, v in values.items() if k != "mean_distance_tokens"
    }
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("group,run\nfha,x\n")
    with pytest.raises(FhaError, match="not a table of per-run sub-head summaries"):
        pooling.read_run_summaries(wrong)
