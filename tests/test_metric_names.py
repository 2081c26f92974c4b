"""One vocabulary for metrics: the training log, ``fha eval --json``, a study's results.csv and the
``fha compare`` table name every number with a name of `fha.metric_names`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from train_helpers import run_tiny

from fha import metric_names as names
from fha.cli import main
from fha.compare import compare_runs
from fha.runs.folder import LOG_FILE, METRICS_FILE
from fha.study.results import load_results, results_csv

REPO_ROOT = Path(__file__).resolve().parents[1]
DECISIVE = REPO_ROOT / "docs" / "results" / "decisive"  # a committed study: real runs' ledger entries
# Columns that name or describe a run rather than measure it: labels, and settings under their spec and
# config names.
LABELS = {"run", "attention", "role", "variant", "status", "fingerprint", "init_seed", "data_seed", "lr_max", "tokens"}
OLD_HEADERS = {"Step", "Validation Loss", "Time Elapsed", "Tokens/s", "loss", "num_tokens", "final val loss"}


def _header(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)))


def _markdown_header(markdown: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith("| run |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_four_outputs_speak_one_vocabulary(corpus, tmp_path, capsys):
    run = run_tiny(corpus, tmp_path / "run").run_dir
    outputs = {
        LOG_FILE: _header((run / LOG_FILE).read_text()),
        METRICS_FILE: _header((run / METRICS_FILE).read_text()),
    }
    assert main(["eval", str(run), "--data", str(corpus), "--json"]) == 0
    outputs["fha eval --json"] = list(json.loads(capsys.readouterr().out))
    outputs["results.csv"] = _header(results_csv(load_results([DECISIVE], partial=True)))
    comparison = compare_runs([run], tmp_path / "compare", data=str(corpus))
    outputs["fha compare"] = _markdown_header(comparison.markdown.read_text())
    for output, header in outputs.items():
        metrics = [name for name in header if name not in LABELS]
        assert metrics and all(names.is_metric_name(name) for name in metrics), (output, header)
        assert not OLD_HEADERS & set(header), output
    # the same quantity has the same name in each
    assert names.VAL_LOSS in outputs[LOG_FILE] and names.VAL_LOSS in outputs["fha compare"]
    assert names.BITS_PER_BYTE in outputs["fha eval --json"] and names.BITS_PER_BYTE in outputs["fha compare"]
    assert names.LOSS in outputs["fha eval --json"] and names.LOSS in outputs["fha compare"]
    assert {"test_bits_per_byte", "test_loss_nats", "val_bits_per_byte"} <= set(outputs["results.csv"])


def test_names_on_splits_and_the_old_names():
    assert names.on_split("val", names.LOSS) == names.VAL_LOSS == "val_loss_nats"
    assert names.on_split("train_sample", names.BITS_PER_BYTE) == "train_sample_bits_per_byte"
    for name in ("test_top5_accuracy", "train_sample_bits_per_byte", "tokens_per_s", "val_perplexity", "elapsed_s"):
        assert names.is_metric_name(name), name
    for name in ("loss", "Validation Loss", "valid_bits_per_byte", "test_loss", "bits per byte", "val_grad_norm"):
        assert not names.is_metric_name(name), name
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        names.on_split("valid", names.LOSS)
    old = {"loss": 2.0, "bits_per_byte": 1.5, "num_tokens": 10, "num_bytes": 40}
    assert names.current_names(old) == {"loss_nats": 2.0, "bits_per_byte": 1.5, "tokens_scored": 10, "bytes_scored": 40}
    assert all(names.is_metric_name(name) for name in names.OLD_NAMES.values())
