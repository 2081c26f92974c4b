"""How long will a study take here? Measures each variant's training and evaluation speed, then adds up.

For every variant of the spec (at its first learning rate) this times optimiser steps of the
real model on random tokens of the real shapes, and no-grad forward passes for evaluation,
in interleaved rounds (`timing.time_interleaved`), so that load from other processes hits
every variant alike. With `--reference-speed` (tokens/s of a reference model measured on an
idle machine) and `--reference-preset`, the speeds are also rescaled by the measured ratio
to the reference, which keeps the estimate meaningful on a busy machine. The estimate is

    runs x (training tokens / training speed + evaluated tokens / evaluation speed)

summed over the sweep and main runs, where evaluated tokens are the in-training evaluations
(2 splits x eval_samples batches per evaluation) plus the whole validation and test texts
(counted with the study's tokenizer, trained here on the training text).

    python benchmarks/bench_study_size.py studies/main.toml [--steps 5] [--repeats 3]
        [--reference-preset tiny --reference-speed 68000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import time_interleaved

from fha.config import ModelConfig
from fha.data import load_documents
from fha.model.gpt import GPT
from fha.study.runner import _splits
from fha.study.spec import RunPlan, StudySpec, load_spec
from fha.tokenizer import Tokenizer
from fha.train.config import TrainConfig
from fha.train.optim import make_optimizer
from fha.train.presets import build_configs, load_experiment

SECONDS_PER_MINUTE = 60
EVAL_SPLITS = 2  # train and validation, at every evaluation during training


class Workload:
    """A model with its optimizer and a fixed random batch: one training step or one eval pass per call."""

    def __init__(self, model_config: ModelConfig, train_config: TrainConfig) -> None:
        torch.manual_seed(0)
        self.model = GPT(model_config)
        self.optimizer = make_optimizer(self.model, train_config, torch.device("cpu"))
        shape = (train_config.batch_size, model_config.max_seq_len)
        self.x = torch.randint(0, model_config.vocab_size, shape)
        self.y = torch.randint(0, model_config.vocab_size, shape)
        self.tokens = shape[0] * shape[1]  # one micro-batch per call

    def train_step(self) -> None:
        self.model.train()
        _, loss = self.model(self.x, self.y, return_logits=False)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_pass(self) -> None:
        self.model.eval()
        self.model(self.x, self.y, return_logits=False)


def text_tokens(spec: StudySpec, vocab_size: int) -> int:
    """Tokens of the whole validation and test texts under a tokenizer trained like the study's."""
    splits = _splits(spec)
    tokenizer = Tokenizer.train(splits["train"], vocab_size)
    documents = splits["val"] + load_documents(spec.data.test)
    return sum(len(ids) + 2 for ids in tokenizer.encode_batch(documents))  # + <bos>, <eos>


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-preset", help="a preset whose idle speed is known, e.g. tiny")
    parser.add_argument("--reference-speed", type=float, help="its training tokens/s on an idle machine")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    workloads = {}
    for variant in spec.variants:
        workloads[variant.name] = Workload(
            *spec.configs(RunPlan(variant.name, spec.seeds[0], spec.learning_rates(variant.name)[0]))
        )
    if args.reference_preset:
        workloads["reference"] = Workload(*build_configs(load_experiment(args.reference_preset)))
    train_fns = {name: (lambda w=w: [w.train_step() for _ in range(args.steps)]) for name, w in workloads.items()}
    eval_fns = {name: (lambda w=w: [w.eval_pass() for _ in range(args.steps)]) for name, w in workloads.items()}
    train_s = time_interleaved(train_fns, args.repeats)
    eval_s = time_interleaved(eval_fns, args.repeats)
    train_speed = {name: workloads[name].tokens * args.steps / seconds for name, seconds in train_s.items()}
    eval_speed = {name: workloads[name].tokens * args.steps / seconds for name, seconds in eval_s.items()}
    scale = 1.0
    if args.reference_preset and args.reference_speed:
        scale = args.reference_speed / train_speed["reference"]
        print(
            f"reference {args.reference_preset}: {train_speed['reference']:,.0f} tokens/s here, "
            f"{args.reference_speed:,.0f} idle: speeds below x{scale:.2f}"
        )
    first = spec.configs(spec.first_run())
    vocab = first[0].vocab_size
    evaluated_text = text_tokens(spec, vocab)
    runs_per_variant = len(spec.sweep.lr_max) + len(spec.seeds) - 1 if spec.sweep else len(spec.seeds)
    total = 0.0
    print(
        f"{spec.tokens:,} training tokens per run, {runs_per_variant} runs per variant, "
        f"{evaluated_text:,} tokens of validation + test text\n"
    )
    print("| variant | train tokens/s | eval tokens/s | minutes per run | minutes, all its runs |")
    print("|---|---|---|---|---|")
    for variant in spec.variants:
        model_config, train_config = spec.configs(
            RunPlan(variant.name, spec.seeds[0], spec.learning_rates(variant.name)[0])
        )
        evaluations = train_config.max_steps // train_config.eval_interval + 2  # step 0, every interval, the end
        in_training = (
            evaluations * EVAL_SPLITS * train_config.eval_samples * train_config.batch_size * model_config.max_seq_len
        )
        seconds = spec.tokens / (train_speed[variant.name] * scale) + (in_training + evaluated_text) / (
            eval_speed[variant.name] * scale
        )
        total += runs_per_variant * seconds
        train, evaluation = train_speed[variant.name] * scale, eval_speed[variant.name] * scale
        print(
            f"| {variant.name} | {train:,.0f} | {evaluation:,.0f} | "
            f"{seconds / SECONDS_PER_MINUTE:.1f} | {runs_per_variant * seconds / SECONDS_PER_MINUTE:.1f} |"
        )
    print(f"\nestimated study time: {total / SECONDS_PER_MINUTE:.0f} minutes, plus tokenizer training and start-up")


if __name__ == "__main__":
    main()
