"""fha on a CUDA GPU, checked and measured in one command (a few minutes on one GPU).

    python benchmarks/gpu_check.py --out gpu_check.json        # on a machine with an NVIDIA GPU
    python benchmarks/gpu_check.py --smoke --out smoke.json    # anywhere: tiny shapes, correctness only

1. correctness: the kernel of every attention variant (as the model builds it: `grouped_attention`
   for mha) over each of its cuts, float32 and bfloat16, forward and backward, with 1, 2 and L
   kv heads, a key head per query head over one value head where sub-head RoPE needs it,
   queries shorter than keys (a KV cache) and a single query, a padding mask and the head
   score scale, against the slow float64 reference of tests/reference_attention.py on the
   CPU; and, per variant and RoPE layout, cached greedy generation equal to full
   recomputation on the device.
2. backends: which SDPA backends (each tried alone with `torch.nn.attention.sdpa_kernel`)
   accept each sub-head size of the shapes below, as fha hands it to SDPA (after its padding
   by `head_padding`) and as it would be raw, in float32 and bfloat16.
3. training: tokens/s and peak memory of FHA and its MHA twin at the seed-1m shape and a
   ~20M-parameter shape, bf16 autocast on CUDA, eager and compiled, interleaved rounds,
   median; the FHA/MHA ratio of each pair is measured in the same rounds.
4. decoding: new tokens/s with and without the KV cache at batch 1 and 8, eager and compiled.

--smoke runs 1 and 2 with tiny shapes on whatever device there is (the CPU in CI), with CUDA's
padding of sub-heads to multiples of 8 forced in some cases, so a change that breaks the GPU
path's code fails a test even where no GPU is lent. Tables are printed as
Markdown and everything is written as JSON. The exit status is 1 when a correctness check
fails. Tolerances (|got - want| <= atol + rtol * |want|): float32 1e-4 (TF32 off), bfloat16
3e-2 against the float64 reference of the bf16-rounded inputs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from bench_generate import generate_with_cache, generate_without_cache
from timing import synchronize, time_interleaved
from workloads import training_step

from fha import GPT, ModelConfig
from fha.experiments import build_configs, load_experiment
from fha.model.attention import KERNELS, head_padding
from fha.model.kv_cache import KVCache
from fha.variants import ATTENTION_VARIANTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_attention import reference_fractal_attention

TOLERANCES = {torch.float32: 1e-4, torch.bfloat16: 3e-2}
WRITTEN_PATTERN = [2, 1, 8, 2]  # a cut no named variant has: non-monotone, a size shared by two heads
PATTERN_SHAPE = dict(num_q_heads=4, head_dim=32, num_layers=2)  # the seed-0.3m attention shape
BACKEND_SIZES = (2, 4, 8, 16, 32, 64)  # every sub-head size of seed-0.3m, seed-1m and the 20M shape, and 2
TWENTY_M_SHAPE = dict(
    dim=384,
    num_layers=6,
    num_q_heads=4,
    num_kv_heads=1,
    head_dim=64,
    vocab_size=8192,
    max_seq_len=512,
    mlp_hidden_mult=8.0,
)  # about 19M parameters


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def variant_cases() -> list[tuple[str, ModelConfig]]:
    """(variant, config) with every distinct per-layer cut of every variant at the seed-0.3m
    attention shape, with sub-head RoPE (which may give each query head its own key head)."""
    cases = []
    for name, variant in ATTENTION_VARIANTS.items():
        config = ModelConfig(
            attention=name,
            head_splits=WRITTEN_PATTERN if variant.reads_pattern else None,
            rope_layout="subhead",
            **PATTERN_SHAPE,
            num_kv_heads=1,
        )
        cases.append((name, config))
    return cases


def padding_mask(B: int, T: int, S: int, gen: torch.Generator) -> torch.Tensor:
    """Causal, with random keys hidden and every query keeping its own position: (B, 1, T, S)."""
    causal = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    own = torch.zeros(T, S, dtype=torch.bool)
    own[torch.arange(T), torch.arange(S - T, S)] = True
    return (causal & (torch.rand(B, 1, T, S, generator=gen) > 0.3)) | own


def kernel_case(
    config: ModelConfig,
    splits,
    Hk,
    Hv,
    T,
    S,
    dtype,
    device,
    smoke: bool,
    *,
    scale_setting="subhead",
    masked=False,
    head_multiple=None,
    seed: int = 0,
) -> dict:
    """One check of the variant's own kernel (as the model builds it): values and gradients
    against the float64 reference on the CPU."""
    L, hd, B = len(splits), config.head_dim, 2 if smoke else 4
    config = config.replace(fractal_scale=scale_setting)
    scale = config.variant.score_scale(config)
    kernel = KERNELS[config.variant.kernel_name](splits, hd, scale)
    gen = torch.Generator().manual_seed(seed)
    cpu = [
        torch.randn(B, heads, length, hd, generator=gen, dtype=torch.float64).to(dtype).double()
        for heads, length in ((L, T), (Hk, S), (Hv, S))
    ]
    mask = padding_mask(B, T, S, gen) if masked else None
    ours = [t.to(device=device, dtype=dtype).requires_grad_() for t in cpu]
    ref_inputs = [t.clone().requires_grad_() for t in cpu]
    out = kernel(*ours, attn_mask=None if mask is None else mask.to(device), head_multiple=head_multiple)
    ref = reference_fractal_attention(*ref_inputs, splits=list(splits), scale=scale, attn_mask=mask)
    upstream = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(out, ours, upstream.to(device=device, dtype=dtype))
    ref_grads = torch.autograd.grad(ref, ref_inputs, upstream)
    tol = TOLERANCES[dtype]
    errors = [_excess(out, ref, tol)] + [_excess(g, r, tol) for g, r in zip(grads, ref_grads)]
    return {
        "splits": list(splits),
        "key_heads": Hk,
        "value_heads": Hv,
        "T": T,
        "S": S,
        "dtype": dtype_name(dtype),
        "scale": scale_setting,
        "masked": masked,
        "head_multiple": head_multiple,
        "max_error_over_tolerance": max(errors),
        "ok": max(errors) <= 1.0,
    }


def _excess(got: torch.Tensor, want: torch.Tensor, tol: float) -> float:
    """max |got - want| / (tol + tol * |want|): at most 1 where the tolerance holds."""
    diff = (got.detach().double().cpu() - want.detach()).abs()
    return float((diff / (tol + tol * want.detach().abs())).max())


def correctness(device: torch.device, dtypes: list[torch.dtype], smoke: bool) -> list[dict]:
    """Every variant's kernel over its cuts: kv sharing 1, 2 and L (and a key head per query
    head over one value head where sub-head RoPE needs it), training, KV-cache and
    single-query shapes; then a padding mask, the head scale and, in smoke mode, the padding
    to multiples of 8 that CUDA gets, forced here."""
    rows = []
    shapes = [(6, 6), (1, 9)] if smoke else [(64, 64), (17, 80), (1, 80)]
    for name, config in variant_cases():
        L = config.num_q_heads
        sharing = [(1, 1), (2, 2), (L, L)] + ([(L, 1)] if config.key_heads != config.num_kv_heads else [])
        for splits in sorted(set(config.layer_splits)):
            for dtype in dtypes:

                def check(Hk, Hv, T, S, **extra):
                    rows.append(
                        {"variant": name, **kernel_case(config, splits, Hk, Hv, T, S, dtype, device, smoke, **extra)}
                    )

                for Hk, Hv in sharing:
                    for T, S in shapes:
                        check(Hk, Hv, T, S)
                T, S = shapes[0][0], shapes[0][1] + 3
                check(2, 2, T, S, masked=True)
                check(1, 1, T, S, scale_setting="head")
                if smoke:
                    check(1, 1, T, S, masked=True, head_multiple=8)
    return rows


def generation_checks(device: torch.device, dtypes: list[torch.dtype], smoke: bool) -> list[dict]:
    """Per variant: cached greedy tokens equal full recomputation (float32); cached logits
    follow recomputed logits within the dtype's tolerance."""
    new_tokens = 6 if smoke else 24
    rows = []
    for name, variant in ATTENTION_VARIANTS.items():
        for rope_layout in ("head", "subhead"):
            config = ModelConfig(
                attention=name,
                head_splits=WRITTEN_PATTERN if variant.reads_pattern else None,
                rope_layout=rope_layout,
                dim=64,
                vocab_size=97,
                max_seq_len=40,
                num_kv_heads=2,
                **PATTERN_SHAPE,
            )
            torch.manual_seed(0)
            model = GPT(config).to(device).eval()
            prompt = torch.randint(0, 97, (3, 7), generator=torch.Generator().manual_seed(1)).to(device)
            cached = generate_with_cache(model, prompt, new_tokens)
            recomputed = generate_without_cache(model, prompt, new_tokens)
            row = {
                "variant": name,
                "rope_layout": rope_layout,
                "tokens_equal_fp32": bool(torch.equal(cached, recomputed)),
            }
            for dtype in dtypes:
                half = GPT(config).to(device=device, dtype=dtype).eval()
                half.load_state_dict(model.state_dict())
                with torch.no_grad():
                    full, _ = half(cached)
                    cache_logits = _cached_logits(half, cached)
                row[f"logits_error_{dtype_name(dtype)}"] = _excess(cache_logits, full.double().cpu(), TOLERANCES[dtype])
            row["ok"] = row["tokens_equal_fp32"] and all(
                v <= 1.0 for k, v in row.items() if k.startswith("logits_error")
            )
            rows.append(row)
    return rows


def _cached_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Logits of every position of idx computed one position at a time through a KV cache."""
    cache = KVCache.for_model(model, batch_size=idx.shape[0])
    steps = [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(idx.shape[1])]
    return torch.cat(steps, dim=1)


def backend_table(device: torch.device, dtypes: list[torch.dtype], smoke: bool) -> list[dict]:
    """Per dtype and sub-head size: the SDPA backends that run it raw, and as fha calls SDPA
    (padded by `head_padding`), each backend tried alone, forward and backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
    B, heads, T = (1, 2, 32) if smoke else (8, 8, 512)

    def accepting(size: int, dtype: torch.dtype) -> list[str]:
        q, k, v = (torch.randn(B, heads, T, size, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        names = []
        for backend in backends:
            try:
                with sdpa_kernel([backend]):
                    torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
            except RuntimeError:
                continue
            names.append(backend.name)
        return names

    rows = []
    for dtype in dtypes:
        for d in BACKEND_SIZES:
            size = head_padding(device, dtype).size(d)
            raw = accepting(d, dtype)
            as_called = raw if size == d else accepting(size, dtype)
            rows.append(
                {
                    "dtype": dtype_name(dtype),
                    "subhead_dim": d,
                    "raw_accepted": raw,
                    "fha_size": size,
                    "fha_accepted": as_called,
                    "fha_fused": any(name != "MATH" for name in as_called),
                }
            )
    return rows


def training_table(device: torch.device, repeats: int, batch_size: int, compile_models: bool) -> list[dict]:
    seed_1m = build_configs(load_experiment("seed-1m"))[0]
    shapes = {"seed-1m": seed_1m, "20M": seed_1m.replace(**TWENTY_M_SHAPE)}
    rows = []
    for shape, base in shapes.items():
        for compiled in (False, True) if compile_models else (False,):
            steps, models = {}, {}
            for attention in ("fha", "mha"):
                models[attention], steps[attention] = training_step(
                    base.replace(attention=attention),
                    batch_size,
                    device=device,
                    compiled=compiled,
                    bf16_autocast=device.type == "cuda",
                )
            peaks = {attention: _peak_memory(step, device) for attention, step in steps.items()}
            timed = time_interleaved(steps, repeats, warmup=2, device=device)
            tokens = batch_size * base.max_seq_len
            for attention in ("fha", "mha"):
                rows.append(
                    {
                        "shape": shape,
                        "attention": attention,
                        "compiled": compiled,
                        "parameters": models[attention].num_parameters(),
                        "batch_size": batch_size,
                        "step_s": timed[attention],
                        "tokens_per_s": tokens / timed[attention],
                        "peak_memory_mib": peaks[attention],
                        "fha_over_mha": timed["fha"] / timed["mha"],
                    }
                )
    return rows


def _peak_memory(step, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    step()
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def decoding_table(device: torch.device, repeats: int, new_tokens: int, compile_models: bool) -> list[dict]:
    base = build_configs(load_experiment("seed-1m"))[0]
    rows = []
    for attention in ("fha", "mha"):
        for compiled in (False, True) if compile_models else (False,):
            torch.manual_seed(0)
            model = GPT(base.replace(attention=attention)).to(device).eval()
            if compiled:
                model.compile(dynamic=True)
            for batch_size in (1, 8):
                prompt = torch.randint(0, base.vocab_size, (batch_size, 16), device=device)
                ways = {
                    "cache": lambda: generate_with_cache(model, prompt, new_tokens),
                    "no cache": lambda: generate_without_cache(model, prompt, new_tokens),
                }
                with torch.inference_mode():
                    timed = time_interleaved(ways, repeats, warmup=1, device=device)
                for way, seconds in timed.items():
                    rows.append(
                        {
                            "attention": attention,
                            "compiled": compiled,
                            "batch_size": batch_size,
                            "way": way,
                            "new_tokens_per_s": batch_size * new_tokens / seconds,
                        }
                    )
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        if isinstance(value, list):
            return ", ".join(str(item) for item in value) or "none"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, correctness and backends only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--repeats", type=int, default=10, help="interleaved rounds per speed figure")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch (sequences of max_seq_len)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per decoding run")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtypes = [torch.float32, torch.bfloat16]
    started = time.perf_counter()
    report = {
        "environment": environment(device),
        "smoke": args.smoke,
        "tolerances": {dtype_name(d): t for d, t in TOLERANCES.items()},
    }
    report["correctness"] = correctness(device, dtypes, args.smoke)
    report["generation"] = generation_checks(device, dtypes, args.smoke)
    report["backends"] = backend_table(device, dtypes, args.smoke)
    if not args.smoke:
        report["training"] = training_table(device, args.repeats, args.batch_size, not args.no_compile)
        report["decoding"] = decoding_table(device, args.repeats, args.new_tokens, not args.no_compile)
    failed = [row for row in report["correctness"] + report["generation"] if not row["ok"]]
    bf16_math = [row for row in report["backends"] if row["dtype"] == "bfloat16" and not row["fha_fused"]]
    report["summary"] = {
        "correctness_checks": len(report["correctness"]) + len(report["generation"]),
        "failed": len(failed),
        "bf16_sizes_on_math_kernel": [r["subhead_dim"] for r in bf16_math],
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    env = report["environment"]
    print(f"{env['device']}, torch {env['torch']}, CUDA {env['cuda']}, {env['threads']} threads\n")
    worst = {}
    for row in report["correctness"]:
        key = (row["variant"], row["dtype"])
        worst[key] = max(worst.get(key, 0.0), row["max_error_over_tolerance"])
    print(
        markdown(
            [
                {
                    "variant": v,
                    "dtype": d,
                    "cases": sum(1 for r in report["correctness"] if (r["variant"], r["dtype"]) == (v, d)),
                    "worst error / tolerance": e,
                }
                for (v, d), e in worst.items()
            ],
            ["variant", "dtype", "cases", "worst error / tolerance"],
        )
    )
    print()
    print(
        markdown(
            report["generation"],
            ["variant", "rope_layout", "tokens_equal_fp32", "logits_error_float32", "logits_error_bfloat16", "ok"],
        )
    )
    print()
    print(
        markdown(report["backends"], ["dtype", "subhead_dim", "raw_accepted", "fha_size", "fha_accepted", "fha_fused"])
    )
    if not args.smoke:
        print()
        print(
            markdown(
                report["training"],
                [
                    "shape",
                    "attention",
                    "compiled",
                    "parameters",
                    "batch_size",
                    "step_s",
                    "tokens_per_s",
                    "peak_memory_mib",
                    "fha_over_mha",
                ],
            )
        )
        print()
        print(markdown(report["decoding"], ["attention", "compiled", "batch_size", "way", "new_tokens_per_s"]))
    summary = report["summary"]
    print(
        f"\n{summary['correctness_checks']} correctness checks, {summary['failed']} failed; bf16 sub-head sizes "
        f"left on the math kernel: {summary['bf16_sizes_on_math_kernel'] or 'none'}; "
        f"{summary['seconds']:.0f} s; wrote {args.out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
