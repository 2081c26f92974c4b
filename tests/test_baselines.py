"""Head-split patterns in the model: parameter-matched baselines, exact equivalences, KV cache,
RoPE per sub-head and torch.compile (left padding: tests/test_model.py)."""

import math

import pytest
import torch
from tiny_model import TINY_MODEL, tiny_config

from fha import GPT, ModelConfig
from fha.baselines import BASELINES, baseline_config
from fha.experiments import build_configs, load_experiment
from fha.generation import generate
from fha.model.attention import apply_rope, rope_frequencies, rope_rotation
from fha.sampling import GREEDY


def seed_03m() -> ModelConfig:
    return build_configs(load_experiment("seed-0.3m"))[0]


def small(**changes) -> ModelConfig:
    """The seed-0.3m attention shape (4 heads of 32, one kv head) on the tests' tiny model, in three layers."""
    return tiny_config(**{"num_layers": 3, "num_q_heads": 4, "head_dim": 32, **changes})


def model_of(config: ModelConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def ids(B, T, vocab=TINY_MODEL["vocab_size"], seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def test_every_named_baseline_has_exactly_the_parameters_of_the_fha_model():
    base = seed_03m()
    expected = GPT(baseline_config(base, "fha")).num_parameters()
    assert expected == GPT(base).num_parameters()
    for name in BASELINES:
        assert GPT(baseline_config(base, name)).num_parameters() == expected, name


def test_named_baselines_differ_from_fha_in_their_cut_rope_or_scale():
    base = seed_03m()
    fha = baseline_config(base, "fha")
    assert fha.layer_splits == ((1, 2, 4, 8),) * 4
    assert baseline_config(base, "uniform-finest").layer_splits == ((8, 8, 8, 8),) * 4
    assert baseline_config(base, "uniform-middle").layer_splits == ((4, 4, 4, 4),) * 4
    assert baseline_config(base, "reversed-fha").layer_splits == ((8, 4, 2, 1),) * 4
    assert baseline_config(base, "coarse-to-fine").layer_splits == ((1,) * 4, (2,) * 4, (4,) * 4, (8,) * 4)
    assert baseline_config(base, "fha-rope-subhead").replace(rope_layout="head") == fha
    assert baseline_config(base, "fha-head-scale").replace(fractal_scale="subhead") == fha
    with pytest.raises(ValueError, match="unknown baseline 'fractal'"):
        baseline_config(base, "fractal")
    written = base.replace(attention="split", head_splits=[2, 2, 2, 2])
    assert baseline_config(written, "fha") == fha  # a base's written pattern does not leak into a baseline


def test_the_geometric_pattern_is_bit_identical_to_fha():
    fha = model_of(small(attention="fha"))
    written = model_of(small(attention="split", head_splits=[1, 2, 4, 8]))
    idx = ids(2, 20)
    logits_a, loss_a = fha(idx[:, :-1], idx[:, 1:])
    logits_b, loss_b = written(idx[:, :-1], idx[:, 1:])
    assert torch.equal(logits_a, logits_b) and torch.equal(loss_a, loss_b)
    loss_a.backward()
    loss_b.backward()
    for (name, p), q in zip(fha.named_parameters(), written.parameters()):
        assert torch.equal(p.grad, q.grad), name


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BASELINES))
def test_cached_greedy_generation_equals_full_recomputation(name):
    model = model_of(baseline_config(small(), name))
    prompt = ids(2, 5)
    context = model.config.max_seq_len
    out = generate(model, prompt, context + 2, sampling=GREEDY)  # past the context
    idx = prompt
    for _ in range(context + 2):
        logits, _ = model(idx[:, -context:])
        idx = torch.cat([idx, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    assert torch.equal(out, idx)


@pytest.mark.slow
def test_subhead_rope_gives_every_subhead_the_spectrum_of_its_own_size():
    hd, theta = 16, 100.0
    cos, _ = rope_frequencies(hd, 3, theta, cuts=(1, 4))  # (3, 2, 8)
    position = 2
    whole = torch.tensor([theta ** (-2 * j / hd) for j in range(hd // 2)])
    quarter = torch.tensor([theta ** (-2 * j / 4) for j in range(2)]).repeat(4)
    torch.testing.assert_close(cos[position, 0], (position * whole).cos())
    torch.testing.assert_close(cos[position, 1], (position * quarter).cos())
    # the head layout's last 4-dim sub-head rotates slowly; the sub-head layout's spans the spectrum
    assert cos[position, 0, -1].item() > math.cos(0.1) and cos[position, 1, -1].item() < math.cos(0.1)


@pytest.mark.parametrize("rope_layout", ["head", "subhead"])
@pytest.mark.parametrize("attention", ["fha", "reversed-fha", "uniform-finest"])
def test_rope_keeps_relative_positions_inside_every_subhead_of_the_model(rope_layout, attention):
    """A sub-head's score of query m and key m - 3 is the same at every m: only the distance counts."""
    config = small(attention=attention, rope_layout=rope_layout, num_kv_heads=2, max_seq_len=64, theta=100.0)
    attn = model_of(config).blocks[0].attn
    tables = rope_frequencies(config.head_dim, config.max_seq_len, config.theta, config.rope_cuts)
    rotation = rope_rotation(*tables)  # (64, R, hd/2)
    x = torch.randn(1, 1, config.dim).expand(1, 64, config.dim)  # the same token at every position
    q, k, _ = attn.project(x, rotation)  # (1, L, 64, hd), (1, Hk, 64, hd)
    group = config.num_q_heads // k.shape[1]
    for head, n in enumerate(config.layer_splits[0]):
        d = config.head_dim // n
        for j in range(n):
            dims = slice(j * d, (j + 1) * d)
            scores = [(q[0, head, m, dims] * k[0, head // group, m - 3, dims]).sum().item() for m in (3, 10, 40)]
            assert scores[0] == pytest.approx(scores[1], abs=1e-4) and scores[0] == pytest.approx(scores[2], abs=1e-4)


@pytest.mark.parametrize("rope_layout", ["head", "subhead"])
def test_every_subhead_of_the_model_rotates_with_the_spectrum_of_its_layout(rope_layout):
    """q of one token at position p is q at position 0 with pair j of a sub-head of d dimensions
    turned by p * theta**(-2j/d), where d is the sub-head's size ("subhead") or head_dim ("head")."""
    config = small(
        attention="split",
        head_splits=[1, 8, 2, 4],
        rope_layout=rope_layout,
        num_kv_heads=2,
        max_seq_len=16,
        theta=100.0,
    )
    attn = model_of(config).blocks[0].attn
    rotation = rope_rotation(*rope_frequencies(config.head_dim, 16, config.theta, config.rope_cuts))
    x = torch.randn(1, 1, config.dim).expand(1, 16, config.dim)  # the same token at every position
    q, k, _ = attn.project(x, rotation)  # (1, L, 16, hd), (1, Hk, 16, hd)
    position, hd = 11, config.head_dim
    for head, n in enumerate(config.layer_splits[0]):
        d = hd // n if rope_layout == "subhead" else hd
        angles = position * torch.tensor([config.theta ** (-2 * (j % (d // 2)) / d) for j in range(hd // 2)])
        start = torch.view_as_complex(q[0, head, 0].reshape(hd // 2, 2).contiguous())
        expected = torch.view_as_real(start * torch.polar(torch.ones_like(angles), angles)).flatten()
        torch.testing.assert_close(q[0, head, position], expected, rtol=1e-4, atol=1e-5)
        key_head = head // (config.num_q_heads // k.shape[1])
        key_start = torch.view_as_complex(k[0, key_head, 0].reshape(hd // 2, 2).contiguous())
        key_expected = torch.view_as_real(key_start * torch.polar(torch.ones_like(angles), angles)).flatten()
        torch.testing.assert_close(k[0, key_head, position], key_expected, rtol=1e-4, atol=1e-5)


def test_subhead_rope_rotates_a_shared_kv_head_once_per_reading_query_head():
    config = small(rope_layout="subhead")
    assert (config.key_heads, config.rope_cuts) == (4, (1, 2, 4, 8))
    assert small(rope_layout="subhead", attention="uniform-finest").key_heads == 1  # one cut per kv head
    assert small(rope_layout="head").key_heads == 1


def test_the_head_rope_layout_applies_one_rotation_to_every_head():
    config = small()
    x = torch.randn(2, 6, 16, 16)  # (B, T, H, hd)
    rotation = rope_rotation(*rope_frequencies(16, 6, config.theta))  # (6, 1, 8)
    per_head = rope_rotation(*rope_frequencies(16, 6, config.theta, cuts=(1,) * 16))  # (6, 16, 8)
    torch.testing.assert_close(apply_rope(x, rotation), apply_rope(x, per_head))


@pytest.mark.slow
def test_compiled_patterns_match_eager():
    config = small(
        attention="split",
        layer_head_splits=[[2, 1, 2, 8], [4, 4, 4, 4], [1, 2, 4, 8]],
        rope_layout="subhead",
        num_kv_heads=2,
    )
    model = model_of(config)
    idx = ids(2, 16)
    eager, _ = model(idx)
    compiled = torch.compile(model, dynamic=False)
    torch.testing.assert_close(compiled(idx)[0], eager, rtol=1e-4, atol=1e-4)
