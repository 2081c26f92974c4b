"""Generation speed with and without the KV cache, at batch 1 and 8.

With the cache (`fha.generation.generate`) the prompt is run once and each step feeds one
new token per row. Without it, each step runs the model over the whole sequence so far
(cropped to the context), as nanoGPT's `generate` does; our model's forward computes the
logits of every position, which nanoGPT's inference path skips.

    python benchmarks/bench_generate.py [--new-tokens 256] [--repeats 3] [--device auto]

Prints a Markdown table of new tokens per second (all rows together), median of the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from fha import GPT, ModelConfig
from fha.device import setup_device
from fha.generation import generate, sample_next

# The seed-1m shape: about 1M parameters, most of them in the 8192 x 64 embedding.
MODEL_SHAPE = {
    "dim": 64, "num_layers": 4, "mlp_hidden_mult": 8.0, "mlp_gated": True, "mlp_nonlinearity": "SiLU",
    "num_q_heads": 3, "num_kv_heads": 1, "head_dim": 64, "vocab_size": 8192, "max_seq_len": 512,
    "attention": "fha",
}
PROMPT_TOKENS = 16
BATCH_SIZES = (1, 8)


def generate_without_cache(model: GPT, idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding that recomputes the whole (cropped) sequence at every step."""
    window = model.config.max_seq_len
    for _ in range(new_tokens):
        logits, _ = model(idx[:, -window:])  # (B, T, V)
        idx = torch.cat([idx, sample_next(logits[:, -1], temperature=0.0)[:, None]], dim=1)
    return idx


def generate_with_cache(model: GPT, idx: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return generate(model, idx, new_tokens, temperature=0.0)


def tokens_per_second(run: Callable[[], torch.Tensor], new_tokens: int, batch: int, repeats: int,
                      device: torch.device) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = run()
        _sync(device)
        times.append(time.perf_counter() - start)
        assert out.shape[1] == PROMPT_TOKENS + new_tokens
    return batch * new_tokens / statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = setup_device(args.device)
    torch.manual_seed(0)
    model = GPT(ModelConfig(**MODEL_SHAPE)).to(device).eval()
    print(f"model: {model.num_parameters():,} parameters, device {device}, {torch.get_num_threads()} threads, "
          f"prompt {PROMPT_TOKENS} tokens, {args.new_tokens} new tokens, greedy\n")
    print("| batch | with KV cache (tok/s) | without cache (tok/s) | speed-up |")
    print("| ---: | ---: | ---: | ---: |")
    with torch.inference_mode():
        for batch in BATCH_SIZES:
            prompt = torch.randint(4, MODEL_SHAPE["vocab_size"], (batch, PROMPT_TOKENS), device=device)
            cached = tokens_per_second(partial(generate_with_cache, model, prompt, args.new_tokens),
                                       args.new_tokens, batch, args.repeats, device)
            full = tokens_per_second(partial(generate_without_cache, model, prompt, args.new_tokens),
                                     args.new_tokens, batch, args.repeats, device)
            print(f"| {batch} | {cached:,.0f} | {full:,.0f} | {cached / full:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
