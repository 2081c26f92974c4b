"""Any per-head cut: the kernel against the slow reference, the config's patterns and errors."""

import pytest
import torch
from reference_attention import reference_fractal_attention

from fha import ModelConfig, fractal_attention, grouped_attention
from fha.model import decode_attention
from fha.model.attention import NO_PADDING, head_padding
from fha.variants import ATTENTION_VARIANTS


def make_qkv(B, L, Hk, Hv, T, S, hd, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, L, T, hd, generator=gen, dtype=dtype, requires_grad=True)
    k = torch.randn(B, Hk, S, hd, generator=gen, dtype=dtype, requires_grad=True)
    v = torch.randn(B, Hv, S, hd, generator=gen, dtype=dtype, requires_grad=True)
    return q, k, v


def padding_mask(B, T, S, seed=1):
    """A causal mask with random hidden keys, every query keeping at least itself: (B, 1, T, S)."""
    gen = torch.Generator().manual_seed(seed)
    causal = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    hidden = torch.rand(B, 1, T, S, generator=gen) < 0.3
    own = torch.zeros(T, S, dtype=torch.bool)
    own[torch.arange(T), torch.arange(S - T, S)] = True
    return (causal & ~hidden) | own


PATTERNS = [
    # splits, kv heads, hd
    ([1, 2, 4], 1, 16),  # fha
    ([4, 4, 4], 1, 16),  # uniform finest
    ([2, 2, 2], 3, 16),  # uniform middle, one kv head per query head
    ([4, 2, 1], 1, 16),  # reversed
    ([1, 4, 2], 1, 16),  # any order: heads sharing no cut
    ([2, 1, 2], 1, 12),  # a cut shared by heads that are not next to each other
    ([1, 3, 9], 3, 18),  # split 3
    ([3, 3, 1], 1, 18),
    ([1, 2, 4, 8], 2, 32),  # grouped-query
    ([8, 8, 2, 2], 2, 32),
    ([1, 1, 4, 4], 4, 16),
]


@pytest.mark.slow
@pytest.mark.parametrize("splits,Hkv,hd", PATTERNS)
@pytest.mark.parametrize("T,S", [(6, 6), (3, 8), (1, 5)])
@pytest.mark.parametrize("masked", [False, True])
def test_every_pattern_matches_the_reference_forward_and_backward(splits, Hkv, hd, T, S, masked):
    L = len(splits)
    q, k, v = make_qkv(2, L, Hkv, Hkv, T, S, hd)
    mask = padding_mask(2, T, S) if masked else None
    out = fractal_attention(q, k, v, splits=splits, attn_mask=mask)
    ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = reference_fractal_attention(*ref_inputs, splits=splits, attn_mask=mask)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), upstream), torch.autograd.grad(ref, ref_inputs, upstream)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("T", [1, 4])
def test_key_heads_may_outnumber_value_heads(T):
    """Sub-head RoPE gives every query head its own rotated key head over shared values."""
    splits = [1, 2, 4, 8]
    q, k, v = make_qkv(2, 4, 4, 2, T, 7, 32)
    out = fractal_attention(q, k, v, splits=splits, scale="head")
    ref = reference_fractal_attention(q, k, v, splits=splits, scale="head")
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("T", [1, 3])
def test_a_query_that_sees_no_key_gets_zeros_like_sdpa(T):
    q, k, v = make_qkv(2, 3, 1, 1, T, 5, 16)
    mask = torch.ones(2, 1, T, 5, dtype=torch.bool)
    mask[1, :, -1] = False  # the last query of row 1 may see nothing
    out = fractal_attention(q, k, v, splits=[1, 2, 4], attn_mask=mask)
    assert torch.isfinite(out).all()
    assert out[1, :, -1].abs().max() == 0
    torch.testing.assert_close(out, reference_fractal_attention(q, k, v, splits=[1, 2, 4], attn_mask=mask))


def test_split_spelling_equals_its_geometric_pattern_exactly():
    q, k, v = make_qkv(2, 4, 1, 1, 9, 9, 32, dtype=torch.float32)
    assert torch.equal(fractal_attention(q, k, v, split=2), fractal_attention(q, k, v, splits=[1, 2, 4, 8]))
    assert torch.equal(fractal_attention(q, k, v), fractal_attention(q, k, v, splits=[1, 2, 4, 8]))  # split 2
    with pytest.raises(ValueError, match="give split .* or splits, not both"):
        fractal_attention(q, k, v, split=3, splits=[1, 2, 4, 8])


@pytest.mark.fast_path
@pytest.mark.parametrize(
    "splits,expected",
    [
        ([4, 4, 4, 4], [(2, 16, 8, 8)]),  # every head in one call
        ([1, 2, 1, 2], [(2, 2, 8, 32), (2, 4, 8, 16)]),  # heads 0 and 2, then 1 and 3
        ([8, 8, 2, 1], [(2, 16, 8, 4), (2, 2, 8, 16), (2, 1, 8, 32)]),
    ],
)
def test_one_sdpa_call_per_distinct_cut(sdpa_query_shapes, splits, expected):
    q, k, v = make_qkv(2, 4, 2, 2, 8, 8, 32, dtype=torch.float32)
    fractal_attention(q, k, v, splits=splits, head_multiple=1)  # unpadded, to see each cut's sub-heads
    assert sdpa_query_shapes == expected


@pytest.mark.parametrize(
    "splits,message",
    [
        ([1, 2], "splits has 2 entries for heads of 16; the query has 3 heads of 16"),
        ([1, 0, 2], "head 1: the number of sub-heads must be a positive integer, got 0"),
        ([1, -2, 2], "head 1: the number of sub-heads must be a positive integer, got -2"),
        ([1, 3, 2], "head 1: head size 16 is not divisible by its cut into 3 sub-heads"),
    ],
)
def test_kernel_rejects_bad_patterns(splits, message):
    q, k, v = make_qkv(1, 3, 1, 1, 4, 4, 16)
    with pytest.raises(ValueError, match=message):
        fractal_attention(q, k, v, splits=splits)


SHAPE = dict(num_q_heads=4, head_dim=32, num_kv_heads=1, num_layers=3)


@pytest.mark.parametrize(
    "attention,expected",
    [
        ("fha", [(1, 2, 4, 8)] * 3),
        ("mha", [(1, 1, 1, 1)] * 3),
        ("reversed-fha", [(8, 4, 2, 1)] * 3),
        ("uniform-finest", [(8, 8, 8, 8)] * 3),
        ("uniform-middle", [(4, 4, 4, 4)] * 3),
        ("coarse-to-fine", [(1, 1, 1, 1), (4, 4, 4, 4), (8, 8, 8, 8)]),
        ("fine-to-coarse", [(8, 8, 8, 8), (4, 4, 4, 4), (1, 1, 1, 1)]),
    ],
)
def test_named_variants_cut_heads_as_documented(attention, expected):
    assert list(ModelConfig(attention=attention, **SHAPE).layer_splits) == expected


def test_written_patterns():
    config = ModelConfig(attention="split", head_splits=[2, 1, 8, 2], **SHAPE)
    assert config.layer_splits == ((2, 1, 8, 2),) * 3
    per_layer = ModelConfig(attention="split", layer_head_splits=[[1, 1, 1, 1], [2, 2, 4, 4], [1, 2, 4, 8]], **SHAPE)
    assert per_layer.layer_splits == ((1, 1, 1, 1), (2, 2, 4, 4), (1, 2, 4, 8))
    assert per_layer.layer_head_splits == ((1, 1, 1, 1), (2, 2, 4, 4), (1, 2, 4, 8))  # lists become tuples
    finest = ModelConfig(attention="split", head_splits=[1, 2, 4, 16], **SHAPE)  # sub-heads of 2: one RoPE pair
    assert finest.layer_splits[0] == (1, 2, 4, 16)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(head_splits=[1, 2, 4]), r"head_splits has 3 entries; it needs one per query head \(num_q_heads=4\)"),
        (
            dict(head_splits=[1, 3, 4, 8]),
            r"head_splits cuts head 1 into 3 sub-heads, but head_dim \(32\) is not divisible by 3",
        ),
        (
            dict(head_splits=[1, 2, 4, 32]),
            "head_splits cuts head 3 into 32 sub-heads of 1 dimensions; the smallest sub-head must be even",
        ),
        (dict(head_splits=[1, 0, 4, 8]), "head_splits: head 1 is cut into 0 sub-heads; a cut must be 1 or more"),
        (dict(head_splits=[1, -2, 4, 8]), "head_splits: head 1 is cut into -2 sub-heads"),
        (
            dict(layer_head_splits=[[1, 2, 4, 8]] * 2),
            r"layer_head_splits has 2 patterns; it needs one per layer "
            r"\(num_layers=3\)",
        ),
        (dict(layer_head_splits=[[1, 2, 4, 8], [1, 2, 4], [1, 1, 1, 1]]), r"layer_head_splits\[1\] has 3 entries"),
        (dict(head_splits=[1, 2, 4, 8], layer_head_splits=[[1, 1, 1, 1]] * 3), "exactly one of head_splits"),
        (dict(), "exactly one of head_splits"),
        (dict(head_splits=[1, 2.5, 4, 8]), "head_splits must be a list of integers"),
        (dict(head_splits="1,2"), "head_splits must be a list of integers"),
    ],
)
def test_bad_patterns_give_one_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(attention="split", **{**SHAPE, **changes})


def test_patterns_belong_to_the_split_variant():
    with pytest.raises(
        ValueError,
        match="head_splits is read only by attention='split' .got attention='fha'.; set "
        "attention='split' with it, or head_splits=none",
    ):
        ModelConfig(head_splits=[1, 2, 4, 8], **SHAPE)


def test_a_named_variant_that_cannot_cut_the_head_says_which_head():
    with pytest.raises(
        ValueError,
        match="attention='uniform-finest' with fractal_split=2 cuts head 0 into 8 sub-heads "
        "of 1 dimensions; the smallest sub-head must be even",
    ):
        ModelConfig(attention="uniform-finest", num_q_heads=4, head_dim=8)


@pytest.mark.parametrize(
    "name,text,value",
    [
        ("head_splits", "1,2,4,8", (1, 2, 4, 8)),
        ("head_splits", " 4, 4 ,4 ", (4, 4, 4)),
        ("head_splits", "none", None),
        ("layer_head_splits", "1,1/2,2/4,4", ((1, 1), (2, 2), (4, 4))),
        ("rope_layout", "subhead", "subhead"),
    ],
)
def test_patterns_parse_from_set_strings(name, text, value):
    assert ModelConfig.parse_field(name, text) == value


@pytest.mark.parametrize(
    "name,text,message",
    [
        (
            "head_splits",
            "1,two,4",
            r"head_splits='1,two,4': expected a list of integers \(1,2,4; in TOML \[1, 2, 4\]\) "
            "or None",
        ),
        ("head_splits", "[1,2,4]", "expected a list of integers"),
        (
            "layer_head_splits",
            "1,2/x",
            r"expected one list of integers per layer \(1,2,4/4,4,4; in TOML "
            r"\[\[1, 2, 4\], \[4, 4, 4\]\]\) or None",
        ),
    ],
)
def test_pattern_parse_errors_say_what_was_expected(name, text, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.parse_field(name, text)


def test_patterns_round_trip_through_json(tmp_path):
    config = ModelConfig(
        attention="split", layer_head_splits=[[1, 2, 4, 8], [8, 4, 2, 1], [2, 2, 2, 2]], rope_layout="subhead", **SHAPE
    )
    config.to_json(tmp_path / "c.json")
    loaded = ModelConfig.from_json(tmp_path / "c.json")
    assert loaded == config and loaded.layer_splits == config.layer_splits


def test_rope_layout_is_validated():
    with pytest.raises(ValueError, match="rope_layout must be one of head, subhead"):
        ModelConfig(rope_layout="level")


def test_every_variant_has_a_description():
    for name, variant in ATTENTION_VARIANTS.items():
        config = ModelConfig(attention=name, head_splits=[1, 2, 4, 8] if variant.reads_pattern else None, **SHAPE)
        assert variant.describe(config).startswith(name)


@pytest.mark.slow
@pytest.mark.parametrize("d", range(2, 65))
def test_padding_subheads_for_fused_kernels_is_exact_for_every_size(d):
    """Sub-heads zero-padded to a multiple of 8 (what CUDA's fused kernels take) give the
    reference's values and gradients, also with queries shorter than keys."""
    for T, S, splits in ((5, 5, [1, 2]), (3, 7, [2, 1])):
        q, k, v = make_qkv(2, 2, 1, 1, T, S, 2 * d)
        out = fractal_attention(q, k, v, splits=splits, head_multiple=8)
        ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        ref = reference_fractal_attention(*ref_inputs, splits=splits)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        upstream = torch.randn_like(out)
        for got, want in zip(
            torch.autograd.grad(out, (q, k, v), upstream), torch.autograd.grad(ref, ref_inputs, upstream)
        ):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.fast_path
def test_padded_calls_hand_sdpa_multiples_of_the_head_multiple(sdpa_query_shapes):
    q, k, v = make_qkv(1, 3, 1, 1, 6, 6, 16, dtype=torch.float32)
    fractal_attention(q, k, v, splits=[1, 2, 4], head_multiple=8)
    assert sdpa_query_shapes == [(1, 1, 6, 16), (1, 2, 6, 8), (1, 4, 6, 8)]  # 4-dim sub-heads padded to 8


def test_each_device_pads_as_its_kernels_run_fastest():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert [head_padding(cpu, torch.float32).size(d) for d in (2, 4, 8, 12, 16, 24, 32)] == [16, 16, 16, 16, 16, 24, 32]
    assert head_padding(cpu, torch.bfloat16) == head_padding(cpu, torch.float64) == NO_PADDING
    for dtype in (torch.float32, torch.bfloat16):
        assert [head_padding(cuda, dtype).size(d) for d in (2, 4, 8, 12, 16, 24)] == [8, 8, 8, 16, 16, 24]


@pytest.mark.fast_path
@pytest.mark.parametrize("T,S,masked", [(12, 12, False), (5, 12, False), (12, 12, True)])
def test_float32_subheads_below_16_are_padded_on_the_cpu_by_default(sdpa_query_shapes, T, S, masked):
    """Training, KV-cache and masked shapes: sub-heads of 8 and 4 reach SDPA as 16 (32 and 16
    as they are), and values and gradients match the unpadded call."""
    q, k, v = make_qkv(2, 4, 1, 1, T, S, 32, dtype=torch.float32)
    mask = padding_mask(2, T, S) if masked else None
    out = fractal_attention(q, k, v, split=2, attn_mask=mask)
    assert sdpa_query_shapes == [(2, 1, T, 32), (2, 2, T, 16), (2, 4, T, 16), (2, 8, T, 16)]
    plain_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    plain = fractal_attention(*plain_inputs, split=2, attn_mask=mask, head_multiple=1)
    assert sdpa_query_shapes[4:] == [(2, 1, T, 32), (2, 2, T, 16), (2, 4, T, 8), (2, 8, T, 4)]
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-6)
    upstream = torch.randn_like(out)
    for got, want in zip(
        torch.autograd.grad(out, (q, k, v), upstream), torch.autograd.grad(plain, plain_inputs, upstream)
    ):
        torch.testing.assert_close(got, want, rtol=0, atol=4e-6)


@pytest.mark.fast_path
def test_small_full_heads_are_padded_on_the_cpu_too(sdpa_query_shapes):
    q, k, v = make_qkv(2, 4, 2, 2, 12, 12, 8, dtype=torch.float32)
    out = grouped_attention(q, k, v)
    plain = grouped_attention(q, k, v, head_multiple=1)
    assert sdpa_query_shapes == [(2, 4, 12, 16), (2, 4, 12, 8)]
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-6)


@pytest.mark.fast_path
def test_single_queries_and_other_dtypes_are_not_padded_on_the_cpu(sdpa_query_shapes):
    S = decode_attention.SINGLE_QUERY_MAX_SCORES // (2 * 4 * 8) + 1  # just over the single-query path's limit
    q, k, v = make_qkv(2, 4, 1, 1, 1, S, 32, dtype=torch.float32)
    fractal_attention(q, k, v, split=2)
    q, k, v = make_qkv(2, 4, 1, 1, 6, 6, 32, dtype=torch.bfloat16)
    fractal_attention(q, k, v, split=2)
    sizes = [32, 16, 8, 4]
    assert [shape[-1] for shape in sdpa_query_shapes] == sizes + sizes
