"""Generation speed with and without the KV cache, at batch 1 and 8.

With the cache (`fha.generation.generate`) the prompt is run once and each step feeds one
new token per row. Without it, each step runs the model over the whole sequence so far
(cropped to the context), as nanoGPT's `generate` does; our model's forward computes the
logits of every position, which nanoGPT's inference path skips.

    python benchmarks/bench_generate.py [--new-tokens 256] [--prompt-tokens 16] [--repeats 5]
                                        [--device auto] [--compile]
    python benchmarks/bench_generate.py --breakdown   # where a cached batch-1 step spends its time

Prints a Markdown table of new tokens per second (all rows together): the median of the
repeats, the two ways taking turns. With --compile the same rows follow for the compiled
model (`model.compile(dynamic=True)`, as `fha generate --compile` does); the last column
gives the first call of each way, which compiles, and is not part of the median.

--breakdown times an eager cached step at batch 1 with one part at a time replaced by the
identity (the output is then meaningless, only the time counts): the time saved is what
that part costs in place, where caches and branch predictors are shared with everything else.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Callable, Iterator
from functools import partial

import torch
from timing import time_interleaved, time_once

from fha import GPT, ModelConfig
from fha.device import setup_device
from fha.generation import generate, sample_next
from fha.model import attention, kv_cache, layers
from fha.sampling import GREEDY

# The seed-1m shape: about 1M parameters, most of them in the 8192 x 64 embedding.
MODEL_SHAPE = {
    "dim": 64,
    "num_layers": 4,
    "mlp_hidden_mult": 8.0,
    "mlp_gated": True,
    "mlp_nonlinearity": "SiLU",
    "num_q_heads": 3,
    "num_kv_heads": 1,
    "head_dim": 64,
    "vocab_size": 8192,
    "max_seq_len": 512,
    "attention": "fha",
}
BATCH_SIZES = (1, 8)


def generate_without_cache(model: GPT, idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding that recomputes the whole (cropped) sequence at every step."""
    window = model.config.max_seq_len
    for _ in range(new_tokens):
        logits, _ = model(idx[:, -window:])  # (B, T, V)
        idx = torch.cat([idx, sample_next(logits[:, -1], GREEDY)[:, None]], dim=1)
    return idx


def generate_with_cache(model: GPT, idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return generate(model, idx, new_tokens, sampling=GREEDY)


def checked(
    run: Callable[[GPT, torch.Tensor, int], torch.Tensor], model: GPT, idx: torch.Tensor, new_tokens: int
) -> None:
    """Run one way of generating and make sure it produced every new token."""
    out = run(model, idx, new_tokens)
    if out.shape != (idx.shape[0], idx.shape[1] + new_tokens):
        raise SystemExit(f"{run.__name__} returned {tuple(out.shape)}")


def compare(model: GPT, prompt: torch.Tensor, args: argparse.Namespace, device: torch.device) -> str:
    """One table row: tokens/s with and without the cache, their ratio, first-call seconds."""
    runs = {
        "cached": partial(checked, generate_with_cache, model, prompt, args.new_tokens),
        "full": partial(checked, generate_without_cache, model, prompt, args.new_tokens),
    }
    first = {name: time_once(run, device) for name, run in runs.items()}
    seconds = time_interleaved(runs, args.repeats, warmup=0, device=device)
    new = prompt.shape[0] * args.new_tokens
    cached, full = new / seconds["cached"], new / seconds["full"]
    return (
        f"| {prompt.shape[0]} | {cached:,.0f} | {full:,.0f} | {cached / full:.1f}x "
        f"| {first['cached']:.2f} / {first['full']:.2f} |"
    )


# Part name -> (object, attribute, stand-in that returns its input); see --breakdown.
SKIPPABLE_PARTS = {
    "attention kernel": (attention, "fractal_attention", lambda q, k, v, **kwargs: q),
    "RoPE": (attention, "apply_rope", lambda x, rotation: x),
    "KV cache writes": (kv_cache.LayerCache, "append", lambda self, k, v: (k, v)),
    "RMSNorm": (layers.RMSNorm, "forward", lambda self, x: x),
    "MLP": (layers.MLP, "forward", lambda self, x: x),
    "whole attention module": (attention.Attention, "forward", lambda self, x, *args: x),
    "whole blocks": (layers.Block, "forward", lambda self, x, *args: x),
}


@contextlib.contextmanager
def skipped(part: str | None) -> Iterator[None]:
    if part is None:
        yield
        return
    owner, name, stand_in = SKIPPABLE_PARTS[part]
    original = getattr(owner, name)
    setattr(owner, name, stand_in)
    try:
        yield
    finally:
        setattr(owner, name, original)


def breakdown(model: GPT, args: argparse.Namespace, device: torch.device) -> None:
    """Print the in-place cost of each part of a cached batch-1 step (interleaved rounds)."""
    prompt = torch.randint(4, MODEL_SHAPE["vocab_size"], (1, args.prompt_tokens), device=device)
    variants = [None, *SKIPPABLE_PARTS]
    times: dict[str | None, list[float]] = {part: [] for part in variants}
    for part in variants:  # warm-up
        with skipped(part):
            generate_with_cache(model, prompt, args.new_tokens)
    for _ in range(args.repeats):
        for part in variants:
            with skipped(part):
                seconds = time_once(partial(generate_with_cache, model, prompt, args.new_tokens), device)
            times[part].append(seconds / args.new_tokens * 1e3)
    full = statistics.median(times[None])
    print(f"cached step at batch 1: {full:.3f} ms\n")
    print("| part replaced by the identity | step (ms) | the part costs (ms) |")
    print("| --- | ---: | ---: |")
    for part in SKIPPABLE_PARTS:
        step = statistics.median(times[part])
        print(f"| {part} | {step:.3f} | {full - step:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="also measure the compiled model")
    parser.add_argument("--breakdown", action="store_true", help="only the in-place cost of each part of a step")
    args = parser.parse_args()
    device = setup_device(args.device)
    torch.manual_seed(0)
    model = GPT(ModelConfig(**MODEL_SHAPE)).to(device).eval()
    print(
        f"model: {model.num_parameters():,} parameters, device {device}, {torch.get_num_threads()} threads, "
        f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, greedy\n"
    )
    modes = ("eager", "compiled") if args.compile else ("eager",)
    with torch.inference_mode():
        if args.breakdown:
            breakdown(model, args, device)
            return
        for mode in modes:
            if mode == "compiled":
                model.compile(dynamic=True)
            print(f"{mode}:\n")
            print("| batch | with KV cache (tok/s) | without cache (tok/s) | speed-up | first calls (s) |")
            print("| ---: | ---: | ---: | ---: | ---: |")
            for batch in BATCH_SIZES:
                prompt = torch.randint(4, MODEL_SHAPE["vocab_size"], (batch, args.prompt_tokens), device=device)
                print(compare(model, prompt, args, device), flush=True)
            print()


if __name__ == "__main__":
    main()
