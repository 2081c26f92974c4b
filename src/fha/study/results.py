"""Reading a study folder back: one `RunResult` per main run, checked to be poolable, and results.csv.

Runs are pooled only when they were trained with the study's tokenizer, on the study's data
and with the study's token budget; anything else is refused with the difference named, since
losses measured with different tokenizers or texts are not comparable.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fha.compare.runs import TrainingLog, read_log
from fha.config import ModelConfig
from fha.errors import FhaError
from fha.model.gpt import GPT
from fha.run import LOG_FILE, MODEL_CONFIG_FILE, TRAIN_CONFIG_FILE
from fha.run_info import read_run_info
from fha.study.layout import chosen_learning_rates, load_record, read_eval, run_dir, spec_of
from fha.study.spec import RunPlan, StudySpec
from fha.train.config import TrainConfig

RESULTS_FILE = "results.csv"
RESULT_COLUMNS = (
    "run",
    "variant",
    "seed",
    "learning_rate",
    "parameters",
    "tokens",
    "test_bits_per_byte",
    "test_loss",
    "test_top1_accuracy",
    "valid_bits_per_byte",
    "test_tokens",
)


@dataclass
class RunResult:
    plan: RunPlan
    path: Path
    model_config: ModelConfig
    train_config: dict[str, Any]
    log: TrainingLog
    evaluation: dict[str, Any]
    info: dict[str, Any]
    parameters: int

    @property
    def tokens_per_step(self) -> int:
        config = self.train_config
        return int(config["batch_size"]) * int(config.get("grad_accum_steps", 1)) * self.model_config.max_seq_len

    @property
    def tokens(self) -> int:
        return int(self.train_config["max_steps"]) * self.tokens_per_step

    @property
    def tokens_seen(self) -> np.ndarray:
        return self.log.step * self.tokens_per_step

    @property
    def wall_time_s(self) -> float:
        return float(self.log.time_s[-1])

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_time_s if self.wall_time_s > 0 else math.nan

    def test(self, metric: str) -> float:
        return float(self.evaluation["test"][metric])

    def row(self) -> dict[str, Any]:
        return {
            "run": self.plan.run_id,
            "variant": self.plan.variant,
            "seed": self.plan.seed,
            "learning_rate": self.plan.lr_max,
            "parameters": self.parameters,
            "tokens": self.tokens,
            "test_bits_per_byte": self.test("bits_per_byte"),
            "test_loss": self.test("loss"),
            "test_top1_accuracy": self.test("top1_accuracy"),
            "valid_bits_per_byte": float(self.evaluation["valid"]["bits_per_byte"]),
            "test_tokens": int(self.evaluation["test"]["num_tokens"]),
        }


@dataclass
class StudyResults:
    spec: StudySpec
    record: dict[str, Any]
    chosen_lr: dict[str, float]
    runs: list[RunResult]
    sweep: dict[str, dict[float, float]]  # variant -> lr_max -> validation bits per byte (inf: diverged)

    def of(self, variant: str) -> list[RunResult]:
        return [run for run in self.runs if run.plan.variant == variant]

    def by_seed(self, variant: str, metric: str = "bits_per_byte") -> dict[int, float]:
        return {run.plan.seed: run.test(metric) for run in self.of(variant)}


def load_results(out_dir: Path) -> StudyResults:
    """Every main run of the study in `out_dir`; an FhaError lists unfinished runs or unpoolable ones."""
    record = load_record(out_dir)
    spec = spec_of(out_dir, record)
    chosen = chosen_learning_rates(spec, out_dir)
    if chosen is None:
        unfinished = [run.run_id for run in spec.sweep_runs() if read_eval(out_dir, run) is None]
        raise FhaError(
            f"{out_dir}: the learning-rate sweep is not finished ({len(unfinished)} runs left: "
            f"{', '.join(unfinished)}); run fha study run on the spec again"
        )
    plans = spec.main_runs(chosen)
    unfinished = [plan.run_id for plan in plans if read_eval(out_dir, plan) is None]
    if unfinished:
        raise FhaError(
            f"{out_dir}: {len(unfinished)} of {len(plans)} runs are not finished ({', '.join(unfinished)}); "
            "run fha study run on the spec again (every shard)"
        )
    runs = [_load_run(out_dir, plan) for plan in plans]
    check_poolable(runs, record)
    sweep = {}
    if spec.sweep is not None:
        sweep = {
            variant.name: {
                lr: float(read_eval(out_dir, RunPlan(variant.name, spec.sweep.seed, lr))["valid"]["bits_per_byte"])
                for lr in spec.sweep.lr_max
            }
            for variant in spec.variants
        }
    return StudyResults(spec, record, chosen, runs, sweep)


def _load_run(out_dir: Path, plan: RunPlan) -> RunResult:
    path = run_dir(out_dir, plan)
    evaluation = read_eval(out_dir, plan)
    if "diverged" in evaluation:
        raise FhaError(
            f"{plan.run_id}: training diverged ({evaluation['diverged']}); "
            "no learning rate of the sweep trained this variant"
        )
    info = read_run_info(path)
    if info is None:
        raise FhaError(f"{path}: no readable run_info.json, so its tokenizer and data cannot be checked")
    model_config = ModelConfig.from_json(path / MODEL_CONFIG_FILE)
    try:
        train_config = TrainConfig.with_current_names(json.loads((path / TRAIN_CONFIG_FILE).read_text()))
    except (OSError, json.JSONDecodeError, AttributeError, ValueError) as err:  # AttributeError: not an object
        raise FhaError(f"{path / TRAIN_CONFIG_FILE}: unreadable ({err})") from None
    with torch.device("meta"):  # counts parameters without allocating them
        parameters = GPT(model_config).num_parameters()
    return RunResult(plan, path, model_config, train_config, read_log(path / LOG_FILE), evaluation, info, parameters)


def _fingerprints(run: RunResult) -> dict[str, str]:
    """What must agree between pooled runs: the tokenizer, the data files' digests, the token budget."""
    data = run.info.get("data", {})
    found = {"tokenizer": str(run.info.get("tokenizer_fingerprint")), "budget": f"{run.tokens} tokens"}
    for split in ("train", "val"):
        entry = data.get(split, {})
        found[f"{split} data"] = str(entry.get("sha256", entry))
    return found


def check_poolable(runs: list[RunResult], record: dict[str, Any]) -> None:
    """Refuse runs that differ from the first (and from the study's record) in tokenizer, data or budget."""
    expected = _fingerprints(runs[0])
    if expected["tokenizer"] != record.get("tokenizer_fingerprint"):
        raise FhaError(
            f"cannot pool runs: {runs[0].plan.run_id} used tokenizer {expected['tokenizer']}, the "
            f"study's is {record.get('tokenizer_fingerprint')}"
        )
    if expected["train data"] != record["data"]["train"]:
        raise FhaError(
            f"cannot pool runs: {runs[0].plan.run_id} trained on data {expected['train data']}, the "
            f"study's training file is {record['data']['train']}"
        )
    for run in runs[1:]:
        for key, value in _fingerprints(run).items():
            if value != expected[key]:
                raise FhaError(
                    f"cannot pool runs: {runs[0].plan.run_id} and {run.plan.run_id} differ in their {key} "
                    f"({expected[key]} vs {value})"
                )


def write_results_csv(path: Path, results: StudyResults) -> None:
    """One row per run; floats at full precision, so equal studies give byte-equal files."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for run in results.runs:
            row = run.row()
            writer.writerow({key: repr(value) if isinstance(value, float) else value for key, value in row.items()})
