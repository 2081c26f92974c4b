"""Speed of fractal-head attention and of whole-model training, measured in one run.

    python benchmarks/bench_attention.py            # the table in docs/benchmarks.md
    python benchmarks/bench_attention.py --profile  # where a training step spends its time
    python benchmarks/bench_attention.py --decode   # one decoding step: all levels at once vs per level
    OMP_NUM_THREADS=1 python benchmarks/bench_attention.py --cpu-padding  # sub-heads padded on the CPU or not

Part 1 times forward + backward of `fractal_attention` against (a) a per-level version that
materialises the masked T x S scores, as the original FHA code did, (b) the bare per-level
SDPA kernels on ready-made contiguous sub-head tensors (the floor for one call per level),
and (c) one SDPA call of ordinary attention with the same number of full-size heads.
Part 2 measures training tokens/s (forward, backward, AdamW step) of the GPT with FHA and
with ordinary attention at the original's largest configuration, with the chunked output
loss that training uses (`return_logits=False`) and with full logits.
--decode times one decoding step (T = 1) of `fractal_attention` both ways it can run: all
levels at once (its single-query path) and one SDPA call per level (the path it takes above
`SINGLE_QUERY_MAX_SCORES`), over batch sizes and key lengths, to show where they cross.
--cpu-padding times, in CPU seconds of this process, SDPA calls on sub-heads smaller than 16
as fha makes them on the CPU in float32 (padded to 16, `fha.model.attention.HEAD_PADDING`) and
unpadded, forward and forward + backward; then training steps of the seed-0.3m model with FHA,
uniform-finest and MHA (whose heads are never padded: the control), padded and unpadded, all in
the same interleaved rounds. With more than one thread, set OMP_WAIT_POLICY=PASSIVE, or the
CPU time counts the threads' spinning while they wait for each other.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timing import time_interleaved
from workloads import training_step

from fha import ModelConfig, fractal_attention, grouped_attention
from fha.experiments import build_configs, load_experiment
from fha.model import attention as attention_module
from fha.model import decode_attention
from fha.variants import subhead_sizes

LEVELS, HEAD_DIM, KV_HEADS, SEQ_LEN, SPLIT = 3, 64, 1, 512, 2


def materialised_fractal_attention(q, k, v, split=SPLIT):
    """Per level: all sub-heads batched, scores materialised and masked, then softmax."""
    B, L, T, hd = q.shape
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    levels = []
    for level in range(L):
        n = split**level
        d = hd // n
        g = level // (L // k.shape[1])
        q_l = q[:, level].reshape(B, T, n, d).transpose(1, 2)  # (B, n, T, d)
        k_l = k[:, g].reshape(B, T, n, d).transpose(1, 2)  # (B, n, T, d)
        v_l = v[:, g].reshape(B, T, n, d).transpose(1, 2)  # (B, n, T, d)
        scores = (q_l @ k_l.transpose(-1, -2)) * d**-0.5  # (B, n, T, T)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        levels.append((weights @ v_l).transpose(1, 2).reshape(B, T, hd))  # (B, T, hd)
    return torch.stack(levels, dim=1)  # (B, L, T, hd)


def bare_level_kernels(subheads):
    """Only the SDPA calls, on contiguous (B, n, T, d) inputs prepared outside the timer."""
    return [F.scaled_dot_product_attention(q, k, v, is_causal=True) for q, k, v in subheads]


def forward_backward(fn, inputs):
    def run():
        for t in inputs:
            t.grad = None
        out = fn()
        outs = out if isinstance(out, list) else [out]
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    return run


def attention_table(batch_sizes: list[int], repeats: int) -> list[str]:
    rows = [
        "| B | fractal_attention (ms) | materialised per level (ms) | speed-up | bare per-level kernels (ms) "
        "| overhead | one SDPA, 3 full heads (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for B in batch_sizes:
        gen = torch.Generator().manual_seed(0)
        q = torch.randn(B, LEVELS, SEQ_LEN, HEAD_DIM, generator=gen, requires_grad=True)
        k = torch.randn(B, KV_HEADS, SEQ_LEN, HEAD_DIM, generator=gen, requires_grad=True)
        v = torch.randn(B, KV_HEADS, SEQ_LEN, HEAD_DIM, generator=gen, requires_grad=True)
        subheads = []
        for level in range(LEVELS):
            n = SPLIT**level
            shape = (B, n, SEQ_LEN, HEAD_DIM // n)
            subheads.append([torch.randn(shape, generator=gen, requires_grad=True) for _ in range(3)])
        flat = [t for triple in subheads for t in triple]
        full_q = torch.randn(B, LEVELS, SEQ_LEN, HEAD_DIM, generator=gen, requires_grad=True)
        full_k = torch.randn(B, LEVELS, SEQ_LEN, HEAD_DIM, generator=gen, requires_grad=True)
        full_v = torch.randn(B, LEVELS, SEQ_LEN, HEAD_DIM, generator=gen, requires_grad=True)

        timed = time_interleaved(
            {
                "ours": forward_backward(lambda: fractal_attention(q, k, v, split=SPLIT), [q, k, v]),
                "slow": forward_backward(lambda: materialised_fractal_attention(q, k, v), [q, k, v]),
                "bare": forward_backward(lambda: bare_level_kernels(subheads), flat),
                "sdpa": forward_backward(
                    lambda: F.scaled_dot_product_attention(full_q, full_k, full_v, is_causal=True),
                    [full_q, full_k, full_v],
                ),
            },
            repeats,
        )
        ours, slow, bare, sdpa = (timed[name] for name in ("ours", "slow", "bare", "sdpa"))
        rows.append(
            f"| {B} | {ours * 1e3:.1f} | {slow * 1e3:.1f} | {slow / ours:.2f}x | {bare * 1e3:.1f} "
            f"| {ours / bare:.2f}x | {sdpa * 1e3:.1f} |"
        )
    return rows


def seed_1m_config(attention: str) -> ModelConfig:
    return ModelConfig(
        dim=64,
        num_layers=4,
        mlp_hidden_mult=8.0,
        mlp_gated=True,
        mlp_nonlinearity="SiLU",
        num_q_heads=3,
        num_kv_heads=1,
        head_dim=64,
        max_seq_len=SEQ_LEN,
        vocab_size=8192,
        attention=attention,
    )


def model_table(batch_size: int, repeats: int) -> list[str]:
    rows = [
        "| attention | loss | parameters | step (s) | training tokens/s |",
        "|---|---|---|---|---|",
    ]
    variants = {
        (attention, loss_name): training_step(seed_1m_config(attention), batch_size, return_logits=return_logits)
        for attention in ("fha", "mha")
        for return_logits, loss_name in ((False, "chunked (training default)"), (True, "full logits"))
    }
    timed = time_interleaved({key: step for key, (_, step) in variants.items()}, repeats)
    for (attention, loss_name), (model, _) in variants.items():
        seconds = timed[(attention, loss_name)]
        rows.append(
            f"| {attention} | {loss_name} | {model.num_parameters():,} | {seconds:.2f} "
            f"| {batch_size * SEQ_LEN / seconds:,.0f} |"
        )
    return rows


def profile(batch_size: int) -> None:
    _, step = training_step(seed_1m_config("fha"), batch_size)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


DECODE_SHAPES = [  # (levels, kv heads, split, head_dim)
    (3, 1, 2, 64),
    (4, 2, 2, 64),
    (4, 1, 2, 32),
]
DECODE_BATCHES, DECODE_KEYS = (1, 8, 32), (64, 256, 1024)
DECODE_CALLS = 50  # calls per timed sample: one call takes tens of microseconds


def decode_table(repeats: int) -> list[str]:
    """Microseconds of one decoding step, all levels at once vs one SDPA call per level."""
    rows = [
        "| levels, kv heads, split, hd | B | S | scores (B L N S) | all levels at once (us) "
        "| per level (us) | faster |",
        "|---|---|---|---|---|---|---|",
    ]
    limit = decode_attention.SINGLE_QUERY_MAX_SCORES
    for L, Hkv, split, hd in DECODE_SHAPES:
        for B in DECODE_BATCHES:
            for S in DECODE_KEYS:
                q, k, v = torch.randn(B, L, 1, hd), torch.randn(B, Hkv, S, hd), torch.randn(B, Hkv, S, hd)

                def run(max_scores: int) -> None:
                    decode_attention.SINGLE_QUERY_MAX_SCORES = max_scores
                    for _ in range(DECODE_CALLS):
                        fractal_attention(q, k, v, split=split)

                try:
                    timed = time_interleaved({"once": lambda: run(2**62), "per level": lambda: run(0)}, repeats)
                finally:
                    decode_attention.SINGLE_QUERY_MAX_SCORES = limit
                once, per_level = (timed[key] / DECODE_CALLS * 1e6 for key in ("once", "per level"))
                rows.append(
                    f"| {L}, {Hkv}, {split}, {hd} | {B} | {S} | {B * L * split ** (L - 1) * S:,} "
                    f"| {once:.0f} | {per_level:.0f} | {'at once' if once < per_level else 'per level'} |"
                )
    return rows


PADDED_SIZES = (2, 4, 8, 12)  # the sizes the CPU pads to 16 (16 and up reach SDPA as they are)
PADDING_SEQ_LENS = (128, 256, 512)
PADDING_BATCH, PADDING_HEADS = 32, 8
PADDING_VARIANTS = ("fha", "uniform-finest", "mha")


def unpadded(fn: Callable[[], object]) -> Callable[[], None]:
    """fn with the device's padding of sub-heads switched off (what the CPU did before)."""

    def run() -> None:
        saved = attention_module.HEAD_PADDING
        attention_module.HEAD_PADDING = {}
        try:
            fn()
        finally:
            attention_module.HEAD_PADDING = saved

    return run


def padding_table(repeats: int) -> list[str]:
    """Milliseconds (CPU time) of one causal SDPA call on PADDING_HEADS heads of each size, as
    fha makes it (padded, `grouped_attention`'s default) and unpadded (`head_multiple=1`)."""
    rows = [
        "| T | sub-head size | padded to | forward, unpadded (ms) | forward, padded (ms) | time ratio "
        "| fwd+bwd, unpadded (ms) | fwd+bwd, padded (ms) | time ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    padding = attention_module.head_padding(torch.device("cpu"), torch.float32)
    for T in PADDING_SEQ_LENS:
        calls = {}
        for d in PADDED_SIZES:
            q, k, v = (torch.randn(PADDING_BATCH, PADDING_HEADS, T, d, requires_grad=True) for _ in range(3))
            for multiple in (1, None):
                call = functools.partial(grouped_attention, q, k, v, head_multiple=multiple)
                calls[(d, multiple, "fwd")] = torch.no_grad()(call)
                calls[(d, multiple, "fwd+bwd")] = forward_backward(call, [q, k, v])
        timed = time_interleaved(calls, repeats, clock=time.process_time)
        for d in PADDED_SIZES:
            cells = [f"{T}", f"{d}", f"{padding.size(d)}"]
            for mode in ("fwd", "fwd+bwd"):
                plain, padded = timed[(d, 1, mode)], timed[(d, None, mode)]
                cells += [f"{plain * 1e3:.1f}", f"{padded * 1e3:.1f}", f"{padded / plain:.2f}"]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def padding_model_table(batch_size: int, repeats: int) -> list[str]:
    """Training tokens/s of the seed-0.3m model per variant, padded (the default) and
    unpadded, and each variant's step time over MHA's, from the same interleaved rounds."""
    base = build_configs(load_experiment("seed-0.3m"))[0]
    models, steps = {}, {}
    for attention in PADDING_VARIANTS:
        models[attention], step = training_step(base.replace(attention=attention), batch_size)
        steps[(attention, "unpadded")], steps[(attention, "padded")] = unpadded(step), step
    timed = time_interleaved(steps, repeats, warmup=2, clock=time.process_time)
    tokens = batch_size * base.max_seq_len
    rows = [
        f"Training steps, seed-0.3m, batch {batch_size} x {base.max_seq_len} tokens\n",
        "| attention | sub-head sizes | step, unpadded (s) | step, padded (s) | tokens/s, unpadded "
        "| tokens/s, padded | speed-up | time / mha, unpadded | time / mha, padded |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for attention, model in models.items():
        plain, padded = timed[(attention, "unpadded")], timed[(attention, "padded")]
        rows.append(
            f"| {attention} | {subhead_sizes(model.config)} | {plain:.3f} | {padded:.3f} | {tokens / plain:,.0f} "
            f"| {tokens / padded:,.0f} | {plain / padded:.2f}x | {plain / timed[('mha', 'unpadded')]:.2f}x "
            f"| {padded / timed[('mha', 'padded')]:.2f}x |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--model-batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="profile one FHA training step instead")
    parser.add_argument("--decode", action="store_true", help="time decoding steps instead")
    parser.add_argument("--cpu-padding", action="store_true", help="time sub-heads padded on the CPU or not instead")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.cpu_padding:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU time of this process\n")
        print(f"One SDPA call, causal, float32, batch {PADDING_BATCH}, {PADDING_HEADS} heads\n")
        print("\n".join(padding_table(args.repeats)))
        print()
        print("\n".join(padding_model_table(args.model_batch_size, args.repeats)))
        return
    if args.profile:
        profile(args.model_batch_size)
        return
    if args.decode:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
        with torch.inference_mode():
            print("\n".join(decode_table(args.repeats)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"\nAttention forward+backward: T={SEQ_LEN}, {LEVELS} levels, head_dim {HEAD_DIM}, "
        f"{KV_HEADS} kv head, split {SPLIT}\n"
    )
    print("\n".join(attention_table(args.batch_sizes, args.repeats)))
    print(f"\nWhole-model training (seed-1m shape, seq {SEQ_LEN}, batch {args.model_batch_size}, vocab 8192)\n")
    print("\n".join(model_table(args.model_batch_size, max(3, args.repeats // 2))))


if __name__ == "__main__":
    main()
