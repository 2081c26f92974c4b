"""Two CPU processes with Gloo (torchrun) follow the same loss curve as one with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import run_tiny, tiny_model_config, write_corpus

from fha.runs.logbook import read_evaluations

PER_RANK_BATCH = 4
WORLD_SIZE = 2


def experiment_toml() -> str:
    model = tiny_model_config()
    lines = ["[model]"]
    lines += [
        f"{key} = {value}"
        for key, value in (
            ("dim", model.dim),
            ("num_layers", model.num_layers),
            ("max_seq_len", model.max_seq_len),
            ("vocab_size", model.vocab_size),
            ("num_q_heads", model.num_q_heads),
            ("head_dim", model.head_dim),
        )
    ]
    lines += [
        "[train]",
        f"batch_size = {PER_RANK_BATCH}",
        "max_steps = 4",
        "eval_interval = 1",
        "eval_samples = 2",
        "checkpoint_interval = 2",
        "lr_init = 1e-3",
        "lr_max = 1e-2",
        "lr_min = 1e-3",
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "stories.txt")
    config = tmp_path / "tiny.toml"
    config.write_text(experiment_toml())
    env = {**os.environ, "FHA_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={WORLD_SIZE}",
            "-m",
            "fha",
            "train",
            "--config",
            str(config),
            "--data",
            str(corpus),
            "--out",
            str(tmp_path / "ddp"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    monkeypatch.setenv("FHA_CACHE_DIR", str(tmp_path / "cache"))
    run_tiny(
        corpus,
        tmp_path / "single",
        batch_size=PER_RANK_BATCH * WORLD_SIZE,
        max_steps=4,
        eval_interval=1,
        eval_samples=2,
        checkpoint_interval=2,
    )

    assert (tmp_path / "ddp" / "tokenizer.json").read_text() == (tmp_path / "single" / "tokenizer.json").read_text()
    ddp_log, single_log = (read_evaluations(tmp_path / name / "log_data.csv") for name in ("ddp", "single"))
    assert [row.step for row in ddp_log] == [row.step for row in single_log] == [0, 1, 2, 3, 4]
    for ddp_row, single_row in zip(ddp_log, single_log, strict=True):
        for key in ("learning_rate", "train_loss", "val_loss"):
            assert getattr(ddp_row, key) == pytest.approx(getattr(single_row, key), rel=1e-5)
    ddp_weights = load_file(tmp_path / "ddp" / "model.safetensors")
    single_weights = load_file(tmp_path / "single" / "model.safetensors")
    for name, tensor in single_weights.items():
        torch.testing.assert_close(ddp_weights[name], tensor, rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()) == ["step-2", "step-4"]
