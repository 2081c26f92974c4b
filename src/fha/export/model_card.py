"""The model card (README.md) of an exported run: what the model is, what it was trained on and for
how long, and how well it does on held-out text, from what the run folder records.

Read, when present: train_config.json (the budget), run_info.json (data files and their digests,
device, world size), log_data.csv (the last sampled validation loss, training time) and eval.json
(whole-text held-out scores, written by ``fha study run``). What a folder does not record is
written as unknown, never guessed; a damaged log or eval.json is left out with a warning (the
export is about the weights).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fha import metric_names as names
from fha.config import ModelConfig
from fha.errors import FhaError
from fha.export.stock import ARCHITECTURE_CLASSES
from fha.files import read_json
from fha.model.gpt import GPT
from fha.progress import format_duration
from fha.runs.folder import CHECKPOINT_NAME, LOG_FILE
from fha.runs.info import read_run_info
from fha.runs.logbook import read_evaluations
from fha.study.layout import EVAL_FILE
from fha.tokenizer import Tokenizer
from fha.train_config import TrainConfig
from fha.variants import describe_attention

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
DATA_SPLITS = (("train", "training"), ("val", "validation"))
TRANSFORMERS_REQUIREMENT = "transformers>=4.46,<6"  # the hf extra of pyproject.toml
EVAL_SPLIT_NAMES = {"test": "test text", "valid": "validation text"}


@dataclass
class RunFacts:
    """What the card states about one run."""

    name: str
    config: ModelConfig
    num_parameters: int
    num_non_embedding: int
    tokenizer: str  # Tokenizer.summary()
    train: TrainConfig | None = None
    step: int | None = None  # optimiser steps behind the exported weights
    checkpoint: bool = False  # True when the weights are a checkpoint of an unfinished run
    world_size: int = 1
    device: str | None = None
    data: dict[str, str] = field(default_factory=dict)  # "training" -> "train.txt (sha256 ...)"
    val_loss: float | None = None  # last sampled validation loss at or before `step`
    train_seconds: float | None = None
    held_out: dict[str, dict[str, Any]] = field(default_factory=dict)  # eval.json: split -> metrics

    @property
    def tokens(self) -> int | None:
        """Training tokens behind the weights: steps x global batch x context."""
        if self.train is None or self.step is None:
            return None
        return (
            self.step * self.train.batch_size * self.train.grad_accum_steps * self.world_size * self.config.max_seq_len
        )


def gather(run_dir: Path, weights_dir: Path, model: GPT, tokenizer: Tokenizer, train: TrainConfig | None) -> RunFacts:
    """The facts of the run in `run_dir` whose weights were read from `weights_dir` (the run folder, or
    the checkpoint an unfinished run's weights come from)."""
    facts = RunFacts(
        name=run_dir.resolve().name,
        config=model.config,
        num_parameters=model.num_parameters(),
        num_non_embedding=model.num_parameters(non_embedding=True),
        tokenizer=tokenizer.summary(),
        train=train,
    )
    checkpoint = CHECKPOINT_NAME.match(weights_dir.name)
    if checkpoint and weights_dir.resolve() != run_dir.resolve():
        facts.step, facts.checkpoint = int(checkpoint.group(1)), True
    elif checkpoint:
        facts.step = int(checkpoint.group(1))  # a checkpoint folder exported as it is
    elif train is not None:
        facts.step = train.max_steps  # the final weights are written after the last step
    info = read_run_info(run_dir) or {}
    facts.world_size = int(info.get("world_size") or 1)
    facts.device = info.get("device")
    facts.data = _data_lines(info.get("data") or {})
    _read_log(run_dir / LOG_FILE, facts)
    facts.held_out = _read_eval(run_dir / EVAL_FILE) if not facts.checkpoint else {}
    return facts


def _data_lines(data: dict[str, Any]) -> dict[str, str]:
    """run_info.json's data record as one phrase per split: a file's name and digest (never the
    local path), a named source, or the rule that split validation text off the training file."""
    lines = {}
    for key, label in DATA_SPLITS:
        entry = data.get(key)
        if not isinstance(entry, dict):
            continue
        if "path" in entry:
            lines[label] = f"`{Path(entry['path']).name}` (sha256 {entry.get('sha256', UNKNOWN)})"
        elif "source" in entry:
            lines[label] = f"`{entry['source']}`"
        elif "split_of_train" in entry:
            split = entry["split_of_train"]
            lines[label] = (
                f"a {split.get('val_fraction')} share of the training file (split seed {split.get('split_seed')})"
            )
    return lines


def _read_log(path: Path, facts: RunFacts) -> None:
    """The last validation loss and training time at or before the exported step, from log_data.csv."""
    if not path.is_file():
        return
    try:
        logged = read_evaluations(path)
    except FhaError as err:
        log.warning("%s; the model card leaves the training log out", err)
        return
    rows = [row for row in logged if facts.step is None or row.step <= facts.step]
    if not rows:
        return
    last = rows[-1]
    if facts.step is None:
        facts.step = last.step
    facts.val_loss = None if math.isnan(last.val_loss) else last.val_loss
    facts.train_seconds = None if math.isnan(last.time_elapsed) else last.time_elapsed


def _read_eval(path: Path) -> dict[str, dict[str, Any]]:
    """eval.json's whole-text scores by split (empty when the run was never evaluated so)."""
    try:
        data = read_json(path, "evaluation record")
    except FhaError as err:
        log.warning("%s; the model card leaves the held-out scores out", err)
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        log.warning("%s: damaged (not a JSON object); the model card leaves the held-out scores out", path)
        return {}
    return {
        split: names.current_names(scores)  # eval.json written before fha.metric_names says num_bytes
        for split, scores in data.items()
        if split in EVAL_SPLIT_NAMES and isinstance(scores, dict) and names.BITS_PER_BYTE in scores
    }


def render(facts: RunFacts, architecture: str | None) -> str:
    """The card as Markdown, with the Hub's metadata block; `architecture` is the stock transformers
    architecture the export was written as (`fha.export.stock`), or None for fha's own code."""
    config = facts.config
    rows = [
        ("attention", describe_attention(config)),
        ("parameters", f"{facts.num_parameters:,} ({facts.num_non_embedding:,} without the tied embedding)"),
        (
            "shape",
            f"{config.num_layers} layers, width {config.dim}, {config.num_q_heads} query heads of {config.head_dim} "
            f"({config.num_kv_heads} key/value), context {config.max_seq_len} tokens",
        ),
        ("tokenizer", f"character-level BPE: {facts.tokenizer}"),
        *((f"{label} data", phrase) for label, phrase in facts.data.items()),
        ("training budget", _budget(facts)),
        ("held-out bits per byte", _held_out(facts)),
    ]
    if facts.val_loss is not None:
        rows.append(("last validation loss", f"{facts.val_loss:.4f} nats per token (sampled during training)"))
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags:
- fha
- fractal-head-attention
---

# {facts.name}

A small GPT language model trained with fha (Fractal-Head Attention research code), attention
variant `{config.attention}`.{_checkpoint_note(facts)}

| | |
|---|---|
{table}

## Use

{_code_note(architecture)}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("PATH")
model = AutoModelForCausalLM.from_pretrained("PATH"{"" if architecture else ", trust_remote_code=True"})
inputs = tokenizer("Once upon a time", return_tensors="pt")  # <bos> is put first, as fha does
output = model.generate(**inputs, max_new_tokens=50, do_sample=False)
print(tokenizer.decode(output[0], skip_special_tokens=True))
```

Greedy decoding writes what `fha generate RUN --temperature 0` writes. The model sees at most
{config.max_seq_len} tokens: prompt and continuation together must fit. The tokenizer adds `<bos>`
(`add_special_tokens=False` leaves it out); text containing `<bos>` or `<eos>` is encoded as plain
characters; `decode(..., skip_special_tokens=True)` drops `<pad>`, `<bos>` and `<eos>` and shows
characters outside the tokenizer's alphabet as U+FFFD.
"""


def _code_note(architecture: str | None) -> str:
    if architecture is None:
        return (
            "The folder holds the model's code (`modeling_fha.py`, `configuration_fha.py`): a thin layer over\n"
            "the `fha` package, whose GPT it runs. Install fha (the project that trained the model) and\n"
            f"`{TRANSFORMERS_REQUIREMENT}`."
        )
    return (
        f"With whole attention heads this model is exactly transformers' `{ARCHITECTURE_CLASSES[architecture]}`\n"
        f"(weights renamed, query and key rows reordered for its RoPE layout): `{TRANSFORMERS_REQUIREMENT}`\n"
        "loads it; fha is not needed."
    )


def _budget(facts: RunFacts) -> str:
    if facts.train is None or facts.step is None:
        return UNKNOWN
    train = facts.train
    parts = [
        f"{facts.step:,} steps of {train.batch_size * train.grad_accum_steps * facts.world_size} sequences "
        f"of {facts.config.max_seq_len} tokens = {facts.tokens:,} tokens",
        f"peak learning rate {train.lr_max:g}",
    ]
    if facts.train_seconds is not None:
        parts.append(f"wall time {format_duration(facts.train_seconds)}")
    if facts.device:
        parts.append(f"on {facts.device}")
    return ", ".join(parts)


def _held_out(facts: RunFacts) -> str:
    if not facts.held_out:
        return f"{UNKNOWN} (measure it with `fha eval RUN --data TEXT`)"
    return "; ".join(
        f"{scores[names.BITS_PER_BYTE]:.4f} on the {EVAL_SPLIT_NAMES[split]}"
        + (f" ({int(scores[names.BYTES_SCORED]):,} bytes)" if names.BYTES_SCORED in scores else "")
        for split, scores in sorted(facts.held_out.items(), key=lambda item: list(EVAL_SPLIT_NAMES).index(item[0]))
    )


def _checkpoint_note(facts: RunFacts) -> str:
    if not facts.checkpoint:
        return ""
    return f"\nThe run had not finished: these are the weights of its checkpoint at step {facts.step:,}."
