"""Sub-head analysis speed (`fha analyze`) on a seed-0.3m model: the ablations' loss before and
after it was computed in cache-sized chunks, and the whole analysis of a text.

    python benchmarks/bench_analysis.py                        # the tables in docs/benchmarks.md
    python benchmarks/bench_analysis.py --run runs/analyze-run  # a trained run, its own tokenizer

Without --run the model is the seed-0.3m preset with random weights (the weights change no
cost) and the text is tokenised with --tokenizer. Times are CPU seconds of this process
(time.process_time), which load from other processes on a shared machine changes far less
than the wall time; the wall time is shown beside them.

1. The previous loss path (one cross-entropy over each ablated copy's whole logits), the
   current one (`fha.analysis.ablation.summed_losses`) and no loss at all (zeros: what the
   blocks alone cost, the floor for any loss path), in interleaved rounds, each round
   analysing the first --compare-tokens tokens of the text with every token ablated; the
   importance values of the first two are compared.
2. `analyze_subheads` once over the whole text (every token ablated) and once with the
   default number of ablated tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import time_interleaved

from fha import GPT, Tokenizer
from fha.analysis import SubheadTable, analyze_subheads
from fha.analysis import ablation as ablation_module
from fha.analysis import analyze as analyze_module
from fha.analysis.analyze import DEFAULT_ABLATION_TOKENS
from fha.evaluation import encode_documents, held_out_documents
from fha.experiments import build_configs, load_experiment
from fha.model.dtypes import at_least_float32
from fha.model.loss import IGNORE_INDEX, counted_targets
from fha.runs.folder import load_model_and_tokenizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinystories-3m" / "valid.txt"
DEFAULT_TOKENIZER = REPO / "docs" / "results" / "decisive" / "tokenizer.json"
DEFAULT_COMPARE_TOKENS = 4096  # 16 windows of 256: two batches of the analysis
IMPORTANCE = ("zero_ablation", "mean_ablation")


def previous_summed_losses(model: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss path before chunking: each copy's logits over all its rows at once, one summed
    cross-entropy per copy. hidden (copies * B, T, C), targets (B, T) -> (copies,) float64."""
    B = targets.shape[0]
    counted = counted_targets(targets, model.config.pad_id)
    flat_targets = targets.masked_fill(~counted, IGNORE_INDEX).flatten()  # (B*T,)
    sums = []
    for copy in range(hidden.shape[0] // B):
        logits = F.linear(model.norm(hidden[copy * B : (copy + 1) * B]), model.embedding.weight).flatten(0, 1)
        logits = logits.to(at_least_float32(logits.dtype))  # (B*T, V)
        sums.append(F.cross_entropy(logits, flat_targets, ignore_index=IGNORE_INDEX, reduction="sum").double())
    return torch.stack(sums)


def no_losses(model: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Zeros in place of the losses: the analysis without its output layer and loss."""
    return torch.zeros(hidden.shape[0] // targets.shape[0], dtype=torch.float64)


@contextlib.contextmanager
def loss_path(losses: Callable[..., torch.Tensor]) -> Iterator[None]:
    """Inside, the analysis computes its losses with `losses`."""
    current = ablation_module.summed_losses
    ablation_module.summed_losses = analyze_module.summed_losses = losses
    try:
        yield
    finally:
        ablation_module.summed_losses = analyze_module.summed_losses = current


def timed_once(fn: Callable[[], SubheadTable]) -> tuple[SubheadTable, float, float]:
    """fn's result, its CPU seconds and its wall seconds."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a trained run (default: seed-0.3m with random weights)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the text (default tinystories-3m/valid.txt)")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="without --run")
    parser.add_argument("--compare-tokens", type=int, default=DEFAULT_COMPARE_TOKENS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-whole", action="store_true", help="skip the analyses of the whole text")
    args = parser.parse_args()
    if args.run is not None:
        model, tokenizer = load_model_and_tokenizer(args.run)
    else:
        tokenizer = Tokenizer.load(args.tokenizer)
        config = build_configs(load_experiment("seed-0.3m"))[0].replace(vocab_size=tokenizer.vocab_size)
        torch.manual_seed(0)
        model = GPT(config).eval()
    tokens, _ = encode_documents(held_out_documents(str(args.data)), tokenizer)
    part = tokens[: args.compare_tokens + 1]
    print(
        f"seed-0.3m shape ({model.num_parameters():,} parameters), {args.data.name}: {len(tokens):,} tokens; "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}\n"
    )

    tables: dict[str, SubheadTable] = {}

    def analysis(name: str, losses: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            with loss_path(losses):
                tables[name] = analyze_subheads(model, part, ablation_tokens=None)

        return run

    paths = {
        "previous": analysis("previous", previous_summed_losses),
        "chunked": analysis("chunked", ablation_module.summed_losses),
        "none (the blocks alone)": analysis("none", no_losses),
    }
    cpu = time_interleaved(paths, args.repeats, warmup=0, clock=time.process_time)
    difference = max(
        abs(getattr(a, column) - getattr(b, column))
        for a, b in zip(tables["previous"], tables["chunked"])
        for column in IMPORTANCE
    )
    windows = -(-(len(part) - 1) // model.config.max_seq_len)
    print(
        f"analysis of the first {len(part) - 1:,} predicted tokens ({windows} windows, all ablated), "
        f"median of {args.repeats} interleaved rounds"
    )
    print()
    print("| loss path | CPU time (s) | time / previous |")
    print("|---|---|---|")
    for name, seconds in cpu.items():
        print(f"| {name} | {seconds:.2f} | {seconds / cpu['previous']:.2f}x |")
    print(f"\nlargest difference of an importance value between the paths: {difference:.1e} nats/token\n")
    if args.no_whole:
        return
    print("| analysis of the whole text | ablated tokens | CPU time (s) | wall time (s) |")
    print("|---|---|---|---|")
    for label, ablated in (("all (`--ablation-tokens all`)", None), ("default", DEFAULT_ABLATION_TOKENS)):
        table, seconds, wall = timed_once(
            lambda ablated=ablated: analyze_subheads(model, tokens, ablation_tokens=ablated)
        )
        print(f"| {label} | {table.rows[0].ablation_tokens:,} | {seconds:.1f} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
