"""run_info.json in every run folder, and a train/validation split that does not follow the seed."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from train_helpers import run_tiny

from fha import Tokenizer
from fha.runs.checkpoint import load_checkpoint
from fha.runs.folder import TOKENIZER_FILE
from fha.runs.info import DIGEST_HEX_CHARS, RUN_INFO_FILE, read_run_info
from fha.train import TrainRequest, train


@pytest.mark.slow
def test_run_info_records_environment_tokenizer_and_data(corpus, tmp_path):
    run = tmp_path / "run"
    run_tiny(corpus, run)
    info = read_run_info(run)
    tokenizer = Tokenizer.load(run / TOKENIZER_FILE)
    assert info["tokenizer_fingerprint"] == tokenizer.fingerprint
    assert info["torch_version"] == torch.__version__
    assert info["device"] == "cpu (float32)" and info["world_size"] == 1
    assert info["threads"] == torch.get_num_threads()
    assert info["data"]["train"] == {
        "path": str(corpus.resolve()),
        "sha256": hashlib.sha256(corpus.read_bytes()).hexdigest()[:DIGEST_HEX_CHARS],
    }
    assert info["data"]["val"] == {"split_of_train": {"val_fraction": 0.05, "split_seed": 0}}
    assert info["date"].endswith("+00:00") and info["command"] and info["resumes"] == []


@pytest.mark.slow
def test_resume_keeps_the_first_record_and_appends_its_session(corpus, tmp_path):
    run = tmp_path / "run"
    run_tiny(corpus, run, max_steps=6)
    first = read_run_info(run)
    checkpoint = load_checkpoint(run / "checkpoints" / "step-3")
    config = checkpoint.train_config
    train(
        TrainRequest(checkpoint.model_config, config, str(corpus), run, device="cpu", overwrite=True, resume=checkpoint)
    )
    info = json.loads((run / RUN_INFO_FILE).read_text())
    assert info["date"] == first["date"] and len(info["resumes"]) == 1
    assert set(info["resumes"][0]) == {"date", "command", "device", "threads", "world_size"}


@pytest.mark.slow
def test_seed_changes_neither_the_split_nor_the_tokenizer(corpus, tmp_path):
    fingerprints = {}
    for name, changes in (("seed0", {"seed": 0}), ("seed1", {"seed": 1}), ("split1", {"split_seed": 1})):
        run_tiny(corpus, tmp_path / name, max_steps=2, **changes)
        fingerprints[name] = Tokenizer.load(tmp_path / name / TOKENIZER_FILE).fingerprint
    assert fingerprints["seed0"] == fingerprints["seed1"]
    assert fingerprints["split1"] != fingerprints["seed0"]  # other held-out documents, other tokenizer


def test_command_line_reads_like_the_shell_line(monkeypatch):
    from fha.runs.info import command_line

    monkeypatch.setattr("sys.argv", ["/x/fha/__main__.py", "study", "run", "my spec.toml"])
    assert command_line() == "python -m fha study run 'my spec.toml'"
    monkeypatch.setattr("sys.argv", ["/venv/bin/fha", "train", "--preset", "tiny"])
    assert command_line() == "fha train --preset tiny"
