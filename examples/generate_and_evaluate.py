"""Load a run, measure it on a text and let it write: the Python side of `fha eval` / `fha generate`.

    python examples/generate_and_evaluate.py [RUN_DIR [DATA_FILE]]

Without arguments it first builds a throwaway run (a small tokenizer and an untrained
model) in a temporary folder, so the example works anywhere; its numbers are those of a
model that has learnt nothing (perplexity near the vocabulary size).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from fha import GPT, ModelConfig, Tokenizer, load_run
from fha.completion import complete
from fha.data import load_documents
from fha.evaluation import evaluate
from fha.runs.folder import TOKENIZER_FILE, save_weights
from fha.sampling import Sampling

STORIES = [
    "Once upon a time there was a little cat. The cat liked to sleep in the sun.",
    "Tom had a red ball. He threw the ball to his dog, and the dog ran after it.",
    "Lily saw a big tree. She climbed up and looked at the sky. It was blue and bright.",
]


def build_throwaway_run(directory: Path) -> Path:
    tokenizer = Tokenizer.train(STORIES, vocab_size=96)
    torch.manual_seed(0)
    model = GPT(
        ModelConfig(
            vocab_size=tokenizer.vocab_size,
            pad_id=tokenizer.pad_id,
            dim=32,
            num_layers=2,
            num_q_heads=2,
            head_dim=16,
            max_seq_len=64,
        )
    )
    save_weights(model, directory)
    tokenizer.save(directory / TOKENIZER_FILE)
    return directory


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(argv[0]) if argv else build_throwaway_run(Path(scratch) / "run")
        documents = load_documents(argv[1]) if len(argv) > 1 else STORIES
        model, tokenizer, _ = load_run(run_dir)

        result = evaluate(model, documents, tokenizer=tokenizer, top_k=5)
        for name, value in result.to_dict().items():
            print(f"{name:>15}: {value:.4g}" if isinstance(value, float) else f"{name:>15}: {value}")

        for completion in complete(
            model,
            tokenizer,
            ["Once upon a time", "Tom had"],
            max_new_tokens=24,
            sampling=Sampling(temperature=0.8, top_k=50),
            seed=0,
        ):
            print(f"\n{completion.prompt}{completion.text}")


if __name__ == "__main__":
    main(sys.argv[1:])
