import math

import pytest
import torch
import torch.nn.functional as F
from tiny_model import make_tiny_model, tiny_config

from fha import GPT, KVCache, ModelConfig
from fha.generation import decode_step, generate, prefill
from fha.model.attention import Attention, apply_rope, rope_frequencies, rope_rotation
from fha.model.layers import MLP, NORMS
from fha.model.loss import IGNORE_INDEX, counted_targets
from fha.model.modes import eval_mode
from fha.sampling import GREEDY, Sampling


def random_ids(B, T, vocab=97, seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
@pytest.mark.parametrize("scale_first_resid", [True, False])
def test_untrained_loss_is_close_to_log_vocab(scale_first_resid):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=8192, dim=64, max_seq_len=64, scale_first_resid=scale_first_resid)
    model = GPT(config)
    idx, targets = random_ids(4, 64, 8192), random_ids(4, 64, 8192, seed=2)
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(8192)) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["fha", "mha"])
def test_logits_shape_and_causality(attention):
    model = make_tiny_model(attention=attention)
    idx = random_ids(2, 20)
    changed = idx.clone()
    changed[:, 12:] = (changed[:, 12:] + 5) % 97
    logits, loss = model(idx)
    assert logits.shape == (2, 20, 97) and loss is None
    torch.testing.assert_close(model(changed)[0][:, :12], logits[:, :12])
    assert not torch.allclose(model(changed)[0][:, 12:], logits[:, 12:])


def test_fha_and_mha_are_parameter_matched():
    assert make_tiny_model(attention="fha").num_parameters() == make_tiny_model(attention="mha").num_parameters()


def test_parameter_counts(tiny_model):
    model = tiny_model
    total = sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == total
    assert model.num_parameters(non_embedding=True) == total - 97 * 32
    assert model.embedding.weight is not None and "lm_head" not in dict(model.named_parameters())


def test_loss_ignores_padding_and_ignore_index():
    model = make_tiny_model(pad_id=0)
    idx = random_ids(2, 10)
    targets = random_ids(2, 10, seed=3)
    targets[0, :4] = 0
    targets[1, 7:] = -100
    logits, loss = model(idx, targets)
    keep = (targets != 0) & (targets != -100)
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, expected)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["fha", "mha"])
def test_kv_cache_decoding_equals_full_recomputation(attention):
    model = make_tiny_model(attention=attention, num_q_heads=4, num_kv_heads=2)
    idx = random_ids(3, 24)
    full, _ = model(idx)
    cache = KVCache.for_model(model, batch_size=3)
    with torch.no_grad():
        steps = [prefill(model, idx[:, :10], cache)]
        steps += [decode_step(model, idx[:, t], cache) for t in range(10, 24)]
        chunk, _ = model(idx[:, :5], kv_cache=KVCache.for_model(model, 3))
    cached = torch.stack(steps[:-1], dim=1)  # predictions for positions 9..22
    torch.testing.assert_close(cached, full[:, 9:23], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(steps[-1], full[:, 23], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunk, full[:, :5], rtol=1e-5, atol=1e-5)


def test_cache_chunks_with_more_than_one_token(tiny_model):
    model = tiny_model
    idx = random_ids(2, 16)
    full, _ = model(idx)
    cache = KVCache.for_model(model, 2)
    with torch.no_grad():
        model(idx[:, :6], kv_cache=cache)
        second, _ = model(idx[:, 6:16], kv_cache=cache)
    torch.testing.assert_close(second, full[:, 6:16], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        {},
        dict(attention="split", layer_head_splits=[[1, 2, 4], [4, 4, 1]]),
        dict(attention="fha", rope_layout="subhead"),  # a key head per query head in the cache
        dict(attention="coarse-to-fine", rope_layout="subhead"),
    ],
)
def test_left_padded_rows_compute_what_they_compute_alone(changes):
    model = make_tiny_model(**changes)
    long, short = random_ids(1, 12)[0], random_ids(1, 7, seed=5)[0]
    padded = torch.stack([long, torch.cat([torch.zeros(5, dtype=torch.long), short])])
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, :5] = False
    logits, _ = model(padded, token_mask=mask)
    torch.testing.assert_close(logits[0], model(long[None])[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits[1, 5:], model(short[None])[0][0], rtol=1e-5, atol=1e-5)


def greedy_by_full_forward(model, idx, steps):
    window = model.config.max_seq_len
    for _ in range(steps):
        logits, _ = model(idx[:, -window:])
        idx = torch.cat([idx, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["fha", "mha"])
def test_greedy_generation_equals_argmax_of_full_passes_past_the_context(attention):
    model = make_tiny_model(attention=attention)
    prompt = random_ids(2, 6)
    out = generate(model, prompt, 40, sampling=GREEDY)  # 46 tokens > max_seq_len 32
    assert out.shape == (2, 46)
    assert torch.equal(out[:, :6], prompt)
    assert torch.equal(out, greedy_by_full_forward(model, prompt, 40))


@pytest.mark.slow
def test_generation_stops_once_every_row_has_eos(tiny_model):
    model = tiny_model
    prompt = random_ids(2, 4)
    greedy = generate(model, prompt, 10, sampling=GREEDY)
    eos = int(greedy[0, 6])  # row 0 produces this token at its third step
    out = generate(model, prompt, 10, sampling=GREEDY, eos_id=eos)
    row1_hits = (greedy[1, 4:] == eos).nonzero()
    last_needed = max(3, int(row1_hits[0]) + 1 if len(row1_hits) else 10)
    assert out.shape[1] == 4 + last_needed
    assert torch.equal(out[0, 4:7], greedy[0, 4:7])
    assert (out[0, 7:] == eos).all()


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(tiny_model):
    model = tiny_model
    prompt = random_ids(2, 4)
    a = generate(model, prompt, 12, sampling=Sampling(top_k=10, top_p=0.9), generator=torch.Generator().manual_seed(3))
    b = generate(model, prompt, 12, sampling=Sampling(top_k=10, top_p=0.9), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.slow
def test_generated_tokens_are_ordinary_tensors_to_train_on(tiny_model):
    model = tiny_model.train()
    out = generate(model, random_ids(2, 5), 6, sampling=GREEDY)
    assert not out.is_inference()
    _, loss = model(out[:, :-1], out[:, 1:])
    loss.backward()  # generated tokens used as training data
    out[:, 0] = 1  # and modified in place


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["fha", "mha"])
def test_kv_cache_decoding_in_bfloat16_follows_full_recomputation(attention):
    model = make_tiny_model(attention=attention, num_q_heads=4, num_kv_heads=2).to(torch.bfloat16)
    idx = random_ids(2, 12)
    full, _ = model(idx)
    cache = KVCache.for_model(model, batch_size=2)
    with torch.no_grad():
        prefill(model, idx[:, :8], cache)
        steps = [decode_step(model, idx[:, t], cache) for t in range(8, 12)]
    assert all(step.dtype == torch.bfloat16 for step in steps)
    torch.testing.assert_close(torch.stack(steps, dim=1).float(), full[:, 8:12].float(), rtol=0.05, atol=0.05)


@pytest.mark.slow
def test_dropout_acts_only_in_training_mode():
    reference = make_tiny_model(seed=4)
    model = make_tiny_model(seed=4, dropout=0.3, attn_dropout=0.3)
    idx = random_ids(2, 16)
    torch.testing.assert_close(model(idx)[0], reference(idx)[0])
    model.train()
    first, second = model(idx)[0], model(idx)[0]
    assert not torch.allclose(first, second)
    assert not torch.allclose(first, reference(idx)[0])


def test_attn_dropout_alone_changes_training_outputs():
    model = make_tiny_model(seed=4, attn_dropout=0.5).train()
    idx = random_ids(2, 16)
    assert not torch.allclose(model(idx)[0], model(idx)[0])


def test_mha_attention_module_equals_sdpa():
    torch.manual_seed(0)
    config = tiny_config(attention="mha", num_q_heads=4, num_kv_heads=2)
    attn = Attention(config)
    x = torch.randn(2, 10, config.dim)
    rotation = rope_rotation(*rope_frequencies(config.head_dim, 10, config.theta))
    q, k, v = attn.qkv(x).split((64, 32, 32), dim=-1)
    q = apply_rope(q.view(2, 10, 4, 16), rotation).transpose(1, 2)
    k = apply_rope(k.view(2, 10, 2, 16), rotation).transpose(1, 2).repeat_interleave(2, dim=1)
    v = v.view(2, 10, 2, 16).transpose(1, 2).repeat_interleave(2, dim=1)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 10, 64)
    torch.testing.assert_close(attn(x, rotation), attn.out(y))


def test_gated_mlp_keeps_the_parameter_count_of_the_ungated_one():
    gated = MLP(tiny_config(dim=48, mlp_hidden_mult=4.0, mlp_gated=True))
    plain = MLP(tiny_config(dim=48, mlp_hidden_mult=4.0, mlp_gated=False))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(gated) == count(plain)


@pytest.mark.parametrize("nonlinearity,fn", [("GeLU", F.gelu), ("SiLU", F.silu), ("ReLU", F.relu)])
def test_mlp_nonlinearities(nonlinearity, fn):
    torch.manual_seed(0)
    mlp = MLP(tiny_config(mlp_gated=False, mlp_nonlinearity=nonlinearity, mlp_bias=True))
    x = torch.randn(3, 32)
    torch.testing.assert_close(mlp(x), mlp.down(fn(mlp.up(x))))


def test_norms():
    x = torch.randn(4, 8) * 3 + 1
    rms = NORMS["RMSNorm"](8, 1e-6, affine=True, bias=False)
    torch.testing.assert_close(rms(x), x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt())
    layer = NORMS["LayerNorm"](8, 1e-6, affine=True, bias=True)
    torch.testing.assert_close(layer(x).mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    cosine = NORMS["CosineNorm"](8, 1e-6, affine=False, bias=False)
    torch.testing.assert_close(cosine(x).norm(dim=-1), torch.ones(4))
    assert list(dict(cosine.named_parameters())) == []
    assert set(dict(layer.named_parameters())) == {"weight", "bias"}


def test_rms_norm_keeps_half_precision_inputs_accurate():
    torch.manual_seed(0)
    x = torch.randn(4, 64) * 5
    norm = NORMS["RMSNorm"](64, 1e-5, affine=False, bias=False)
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.rms_norm(x.bfloat16().float(), (64,), eps=1e-5), rtol=8e-3, atol=8e-3)


@pytest.mark.parametrize("bias", [False, True])
def test_rms_norm_matches_pytorch_in_values_and_gradients(bias):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64) * 2
    x[0, 0] = 0.0  # a zero vector: output and gradients stay finite
    norm = NORMS["RMSNorm"](16, 1e-5, affine=True, bias=bias).double()
    with torch.no_grad():
        norm.weight.normal_()
        if bias:
            norm.bias.normal_()
    x_ref = x.clone().requires_grad_()
    expected = F.rms_norm(x_ref, (16,), norm.weight, eps=1e-5) + (norm.bias if bias else 0)
    x.requires_grad_()
    got = norm(x)
    torch.testing.assert_close(got, expected)
    upstream = torch.randn_like(got)
    (grad,), (expected_grad,) = torch.autograd.grad(got, x, upstream), torch.autograd.grad(expected, x_ref, upstream)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.slow
@pytest.mark.parametrize("norm_type", ["RMSNorm", "LayerNorm", "CosineNorm"])
def test_every_variant_runs_and_learns(norm_type):
    torch.manual_seed(0)
    model = GPT(tiny_config(norm_type=norm_type, second_resid_norm=True, mlp_gated=False, norm_bias=True))
    idx = random_ids(4, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_sequence_longer_than_context_is_rejected(tiny_model):
    model = tiny_model
    with pytest.raises(ValueError, match="max_seq_len"):
        model(random_ids(1, 33))


@pytest.mark.parametrize("rows_per_chunk", [7, 4096])
def test_chunked_linear_cross_entropy_matches_full_logits(rows_per_chunk):
    from fha.model.loss import linear_cross_entropy

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 10, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (3, 10), generator=gen)
    targets[1, 3:] = -100
    loss = linear_cross_entropy(hidden, weight, targets, rows_per_chunk) * 2.5
    expected = F.cross_entropy((hidden @ weight.t()).flatten(0, 1), targets.flatten(), ignore_index=-100) * 2.5
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss, (hidden, weight))
    expected_grads = torch.autograd.grad(expected, (hidden, weight))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


def test_training_without_logits_gives_the_same_loss_and_gradients():
    model = make_tiny_model(pad_id=0).train()
    idx, targets = random_ids(2, 12), random_ids(2, 12, seed=9)
    targets[0, :3] = 0
    logits, loss = model(idx, targets)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    none, fused = model(idx, targets, return_logits=False)
    fused_grads = torch.autograd.grad(fused, list(model.parameters()))
    assert none is None
    torch.testing.assert_close(fused, loss)
    for got, want in zip(fused_grads, grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("changes", [{}, dict(rope_layout="subhead", attention="coarse-to-fine")])
def test_a_model_built_on_the_meta_device_emptied_and_loaded_computes_like_the_original(changes):
    original = make_tiny_model(**changes)
    with torch.device("meta"):
        shell = GPT(original.config)
    shell.to_empty(device="cpu")
    shell.load_state_dict(original.state_dict())
    idx = random_ids(2, 12)
    assert torch.equal(shell.eval()(idx)[0], original(idx)[0])
    assert torch.equal(
        generate(shell, idx[:, :4], 8, sampling=GREEDY), generate(original, idx[:, :4], 8, sampling=GREEDY)
    )


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_turns_dropout_off_inside_and_gives_the_mode_back(training):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)).train(training)
    with eval_mode(model) as inside:
        assert inside is model
        assert not any(module.training for module in model.modules())
    assert all(module.training == training for module in model.modules())


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_gives_the_mode_back_when_the_block_raises(training):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)).train(training)
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model):
            raise RuntimeError("inside")
    assert all(module.training == training for module in model.modules())


def test_counted_targets_skip_ignore_index_and_padding():
    targets = torch.tensor([[5, IGNORE_INDEX, 0, 7], [0, 0, 3, IGNORE_INDEX]])
    assert counted_targets(targets, pad_id=None).tolist() == [[True, False, True, True], [True, True, True, False]]
    assert counted_targets(targets, pad_id=0).tolist() == [[True, False, False, True], [False, False, True, False]]
