"""``fha generate RUN_DIR``: continue prompts with a trained model, streaming to stdout.

With one prompt and one sample the text is printed token by token as it is generated.
With several prompts or samples all rows run in one batch (left-padded, so each row writes
what it would write alone) and each finished text is printed under a header line.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fha.cli.options import add_device_argument, add_precision_argument, add_run_dir_argument
from fha.errors import FhaError, read_text
from fha.sampling import Sampling

if TYPE_CHECKING:
    from fha.completion import Completion

log = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_TEMPERATURE = 1.0
SEED_BITS = 31  # seeds chosen at random stay short enough to retype
SEED_LIMIT = 2**32  # the largest seeds every generator involved accepts, with room for one per row
MIN_TEMPERATURE = 1e-6  # below this, logits / temperature overflow float32 while sampling is greedy anyway


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="continue prompts with a trained model",
        description="Print each prompt followed by the model's continuation (streamed for a single text).",
    )
    add_run_dir_argument(parser)
    parser.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="text to continue; repeat for several prompts (none: start from <bos> alone)",
    )
    parser.add_argument(
        "--prompt-file",
        type=Path,
        metavar="FILE",
        help="UTF-8 file with one prompt per line (blank lines skipped); adds to --prompt",
    )
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N")
    parser.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help=f"sampling temperature; 0 = greedy (default {DEFAULT_TEMPERATURE})",
    )
    parser.add_argument("--top-k", type=int, metavar="K", help="sample only from the K most likely tokens")
    parser.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        help="sample only from the most likely tokens that together hold probability P",
    )
    parser.add_argument("--seed", type=int, help="random seed (default: a random one, logged)")
    parser.add_argument("--num-samples", type=int, default=1, metavar="N", help="continuations per prompt")
    add_device_argument(parser)
    add_precision_argument(parser)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model first: each step gets faster, but compiling takes "
        "seconds to a minute, so it pays off for long or many texts",
    )
    parser.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    _check_options(args)
    prompts = _read_prompts(args.prompt, args.prompt_file)
    from fha.completion import complete
    from fha.device import autocast, setup_device
    from fha.runs.folder import load_run

    device = setup_device(args.device, args.precision)
    model, tokenizer, _ = load_run(args.run_dir, device)
    if args.compile:
        log.info("compiling the model; the first tokens wait for it")
        model.compile(dynamic=True)  # dynamic: the key length grows every step
    seed = args.seed if args.seed is not None else random.getrandbits(SEED_BITS)
    if args.seed is None and args.temperature > 0:
        log.info("seed: %d (pass --seed %d to repeat this output)", seed, seed)
    num_rows = len(prompts) * args.num_samples
    streaming = num_rows == 1
    if streaming:
        _write(prompts[0])
    with autocast(device, args.precision):
        completions = complete(
            model,
            tokenizer,
            prompts,
            max_new_tokens=args.max_new_tokens,
            num_samples=args.num_samples,
            sampling=Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p),
            seed=seed,
            on_text=(lambda _row, text: _write(text)) if streaming else None,
            show_progress=not streaming,
        )
    if streaming:
        _write("\n")
    else:
        _print_completions(completions, args.num_samples)
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Reject bad values before the model is loaded."""
    if args.max_new_tokens < 0:
        raise FhaError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise FhaError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    if 0 < args.temperature < MIN_TEMPERATURE:
        raise FhaError(
            f"--temperature {args.temperature:g} is below {MIN_TEMPERATURE:g}, where sampling is greedy "
            "in all but name (and the scaled logits overflow); pass --temperature 0 for greedy decoding"
        )
    if args.seed is not None and not 0 <= args.seed < SEED_LIMIT:
        raise FhaError(f"--seed must be a whole number in [0, 2**32), got {args.seed}")
    if args.top_k is not None and args.top_k < 1:
        raise FhaError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise FhaError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.num_samples < 1:
        raise FhaError(f"--num-samples must be at least 1, got {args.num_samples}")


def _read_prompts(prompts: list[str], prompt_file: Path | None) -> list[str]:
    prompts = list(prompts)
    if prompt_file is not None:
        lines = read_text(prompt_file, "prompt file").splitlines()
        file_prompts = [line for line in lines if line.strip()]
        if not file_prompts:
            raise FhaError(f"{prompt_file}: no prompts (every line is blank)")
        prompts.extend(file_prompts)
    return prompts or [""]


def _print_completions(completions: list[Completion], num_samples: int) -> None:
    for completion in completions:
        header = f"prompt {completion.prompt_index + 1}"
        if num_samples > 1:
            header += f", sample {completion.sample_index + 1}"
        _write(f"=== {header} ===\n{completion.prompt}{completion.text}\n")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
