import pytest
import torch
import torch.nn.functional as F
from reference_attention import reference_fractal_attention

import fha.model.attention as attention_module
import fha.model.decode_attention as decode_attention
from fha import fractal_attention, grouped_attention
from fha.model.attention import apply_rope, causal_mask, rope_frequencies, rope_rotation


def make_qkv(B, L, Hkv, T, S, hd, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, L, T, hd, generator=gen, dtype=dtype, requires_grad=True)
    k = torch.randn(B, Hkv, S, hd, generator=gen, dtype=dtype, requires_grad=True)
    v = torch.randn(B, Hkv, S, hd, generator=gen, dtype=dtype, requires_grad=True)
    return q, k, v


CASES = [
    # split, levels, kv heads, T, S, hd
    (2, 3, 1, 7, 7, 16),  # multi-query, training shape
    (2, 4, 2, 6, 6, 32),  # grouped-query
    (2, 4, 4, 6, 6, 32),  # one kv head per level
    (3, 3, 1, 5, 5, 18),
    (3, 2, 2, 4, 9, 12),  # S > T (KV cache)
    (4, 3, 1, 6, 6, 32),
    (4, 2, 1, 1, 8, 16),  # one query against a cache (the decoding path)
    (2, 4, 2, 1, 6, 16),  # decoding with grouped-query sharing
    (3, 3, 1, 1, 5, 18),
    (2, 3, 3, 1, 1, 8),  # T == S == 1
]


@pytest.mark.slow
@pytest.mark.parametrize("split,L,Hkv,T,S,hd", CASES)
@pytest.mark.parametrize("scale", ["subhead", "head", 0.3])
def test_matches_reference_values_and_gradients(split, L, Hkv, T, S, hd, scale):
    q, k, v = make_qkv(2, L, Hkv, T, S, hd)
    out = fractal_attention(q, k, v, split=split, scale=scale)
    ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = reference_fractal_attention(*ref_inputs, split=split, scale=scale)
    assert out.shape == (2, L, T, hd)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    ref_grads = torch.autograd.grad(ref, ref_inputs, upstream)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("split,L,Hkv,T,S,hd", [(2, 3, 1, 64, 64, 64), (3, 3, 3, 32, 40, 36)])
def test_float32_fast_kernels_match_reference(split, L, Hkv, T, S, hd):
    q, k, v = make_qkv(3, L, Hkv, T, S, hd, dtype=torch.float32)
    out = fractal_attention(q, k, v, split=split)
    ref = reference_fractal_attention(q.double(), k.double(), v.double(), split=split)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


def test_one_level_equals_sdpa():
    q, k, v = make_qkv(2, 1, 1, 9, 9, 16)
    torch.testing.assert_close(
        fractal_attention(q, k, v, split=2), F.scaled_dot_product_attention(q, k, v, is_causal=True)
    )


def test_split_one_and_grouped_attention_equal_sdpa_with_repeated_kv():
    q, k, v = make_qkv(2, 4, 2, 8, 8, 16)
    expected = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), is_causal=True
    )
    torch.testing.assert_close(grouped_attention(q, k, v), expected)
    torch.testing.assert_close(fractal_attention(q, k, v, split=1), expected)


def test_non_causal_sees_every_key():
    q, k, v = make_qkv(1, 1, 1, 3, 5, 8)
    expected = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(fractal_attention(q, k, v, is_causal=False), expected)


@pytest.mark.fast_path
def test_one_fused_call_per_level(sdpa_query_shapes):
    q, k, v = make_qkv(2, 3, 1, 8, 8, 16, dtype=torch.float32)
    fractal_attention(q, k, v, split=2, head_multiple=1)  # unpadded, to see each level's sub-heads
    assert sdpa_query_shapes == [(2, 1, 8, 16), (2, 2, 8, 8), (2, 4, 8, 4)]


@pytest.mark.fast_path
def test_a_decoding_step_takes_every_level_at_once(monkeypatch):
    def no_sdpa(*args, **kwargs):
        raise AssertionError("the single-query path should not call SDPA")

    q, k, v = make_qkv(2, 3, 1, 1, 8, 16, dtype=torch.float32)
    expected = fractal_attention(q, k, v, split=2)
    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", no_sdpa)
    torch.testing.assert_close(fractal_attention(q, k, v, split=2), expected)


@pytest.mark.parametrize("split,L,Hkv", [(2, 3, 1), (2, 4, 2), (3, 2, 2)])
def test_masked_decoding_step_equals_attention_over_the_visible_keys(split, L, Hkv):
    q, k, v = make_qkv(2, L, Hkv, 1, 7, 18 if split == 3 else 16)
    visible = torch.tensor([[1, 1, 0, 1, 0, 1, 1], [0, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)  # (B, S)
    out = fractal_attention(q, k, v, split=split, attn_mask=visible[:, None, None, :])
    for row in range(2):
        keep = visible[row]
        ref = reference_fractal_attention(
            q[row : row + 1], k[row : row + 1, :, keep], v[row : row + 1, :, keep], split=split
        )
        torch.testing.assert_close(out[row : row + 1], ref, rtol=1e-10, atol=1e-10)


@pytest.mark.fast_path
def test_a_decoding_step_too_large_for_the_single_query_path_calls_sdpa_per_level(sdpa_query_shapes):
    S = decode_attention.SINGLE_QUERY_MAX_SCORES // (3 * 4) + 1  # B * L * N * S just over the limit
    q, k, v = make_qkv(1, 3, 1, 1, S, 8)
    out = fractal_attention(q, k, v, split=2)
    assert sdpa_query_shapes == [(1, 1, 1, 8), (1, 2, 1, 4), (1, 4, 1, 2)]
    torch.testing.assert_close(out, reference_fractal_attention(q, k, v, split=2), rtol=1e-10, atol=1e-10)


def test_a_key_mask_shared_by_the_batch_works_on_the_decoding_path():
    q, k, v = make_qkv(2, 3, 1, 1, 6, 16)
    visible = torch.tensor([[1, 0, 1, 1, 0, 1]], dtype=torch.bool)  # (T=1, S)
    out = fractal_attention(q, k, v, split=2, attn_mask=visible)
    keep = visible[0]
    torch.testing.assert_close(
        out, reference_fractal_attention(q, k[:, :, keep], v[:, :, keep], split=2), rtol=1e-10, atol=1e-10
    )


def test_masks_must_be_boolean():
    q, k, v = make_qkv(1, 2, 1, 1, 4, 8)
    with pytest.raises(ValueError, match="attn_mask must be boolean"):
        fractal_attention(q, k, v, attn_mask=torch.zeros(1, 4))


@pytest.mark.fast_path
def test_decoding_matrices_cached_in_inference_mode_still_support_autograd():
    decode_attention._cached_subhead_owners.cache_clear()
    q, k, v = make_qkv(1, 3, 1, 1, 5, 16, dtype=torch.float32)
    with torch.inference_mode():
        fractal_attention(q.detach(), k.detach(), v.detach(), split=2)
    grads = torch.autograd.grad(fractal_attention(q, k, v, split=2).sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("masked", [False, True])
def test_grouped_decoding_step_equals_sdpa_with_repeated_kv(masked):
    q, k, v = make_qkv(2, 4, 2, 1, 6, 16)
    mask = torch.tensor([[1, 0, 1, 1, 1, 1], [0, 1, 1, 0, 1, 1]], dtype=torch.bool)[:, None, None] if masked else None
    expected = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), attn_mask=mask
    )
    torch.testing.assert_close(grouped_attention(q, k, v, attn_mask=mask), expected)


def test_dropout_only_when_asked():
    q, k, v = make_qkv(2, 2, 1, 16, 16, 8, dtype=torch.float32)
    plain = fractal_attention(q, k, v)
    torch.testing.assert_close(fractal_attention(q, k, v, dropout_p=0.0), plain)
    torch.manual_seed(0)
    dropped = fractal_attention(q, k, v, dropout_p=0.5)
    assert not torch.allclose(dropped, plain)


def test_causal_mask_is_bottom_right_aligned():
    mask = causal_mask(2, 4, torch.device("cpu"))
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(1, 4, torch.device("cpu")) is None


@pytest.mark.parametrize(
    "shapes,message",
    [
        (((1, 3, 4, 8), (1, 2, 4, 8)), "multiple of key/value heads"),
        (((1, 2, 5, 8), (1, 1, 4, 8)), "cover at least the queries"),
        (((1, 3, 4, 6), (1, 1, 4, 6)), "not divisible"),
        (((2, 4, 8), (1, 1, 4, 8)), "expected q"),
    ],
)
def test_bad_shapes_are_rejected(shapes, message):
    q = torch.randn(*shapes[0])
    k = torch.randn(*shapes[1])
    with pytest.raises(ValueError, match=message):
        fractal_attention(q, k, k.clone(), split=2)


@pytest.mark.parametrize("split", [2, 3])
def test_rope_keeps_relative_positions_inside_every_subhead(split):
    levels, max_len = 3, 64
    hd = 4 * split ** (levels - 1)  # smallest sub-head: 4 dimensions, two RoPE pairs
    rotation = rope_rotation(*rope_frequencies(hd, max_len, theta=100.0))
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(hd, generator=gen, dtype=torch.float64)
    k = torch.randn(hd, generator=gen, dtype=torch.float64)

    def rotated(x, pos):
        return apply_rope(x.float()[None, None, None], rotation[pos : pos + 1])[0, 0, 0]

    for level in range(levels):
        n = split**level
        d = hd // n
        for j in range(n):
            dims = slice(j * d, (j + 1) * d)
            scores = [(rotated(q, m)[dims] * rotated(k, m - 3)[dims]).sum().item() for m in (3, 10, 40)]
            assert scores[0] == pytest.approx(scores[1], abs=1e-4)
            assert scores[0] == pytest.approx(scores[2], abs=1e-4)


def test_rope_rotates_adjacent_pairs():
    rotation = rope_rotation(*rope_frequencies(4, 8, theta=10000.0))
    x = torch.tensor([1.0, 0.0, 0.0, 1.0])[None, None, None]  # (B=1, T=1, H=1, hd=4)
    pos = 2
    out = apply_rope(x, rotation[pos : pos + 1])[0, 0, 0]
    angle0, angle1 = pos * 1.0, pos * 10000.0 ** (-2 / 4)
    expected = torch.tensor(
        [
            torch.cos(torch.tensor(angle0)),
            torch.sin(torch.tensor(angle0)),
            -torch.sin(torch.tensor(angle1)),
            torch.cos(torch.tensor(angle1)),
        ]
    )
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_row", [False, True])
def test_compiled_rope_pairs_rotate_like_the_complex_rotation(monkeypatch, dtype, per_row):
    cos, sin = rope_frequencies(16, 12, theta=10000.0)  # (12, 8) each
    if per_row:  # positions per row, as with left padding: (B, T, hd/2)
        positions = torch.tensor([[0, 0, 1, 2, 3], [0, 1, 2, 3, 4]])
        cos, sin = cos[positions], sin[positions]
    else:
        cos, sin = cos[3:8], sin[3:8]
    x = torch.randn(2, 5, 3, 16).to(dtype)  # (B, T, H, hd)
    expected = apply_rope(x, rope_rotation(cos, sin))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    pairs = rope_rotation(cos, sin)
    assert not pairs.is_complex() and pairs.shape[-1] == 2
    out = apply_rope(x, pairs)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-2)
