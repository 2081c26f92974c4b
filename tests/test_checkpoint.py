"""Checkpoints: atomic writes, discovery, and one-line errors for missing or corrupt ones."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors import SafetensorError
from train_helpers import tiny_model_config, tiny_train_config

from fha import GPT, Tokenizer
from fha.errors import FhaError
from fha.runs import checkpoint as ckpt
from fha.runs.folder import MODEL_CONFIG_FILE, MODEL_FILE, load_run, save_weights


@pytest.fixture(scope="module")
def parts():
    tokenizer = Tokenizer.train(["Once upon a time there was a cat.", "The dog ran."], 32)
    model = GPT(tiny_model_config(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id))
    return model, tokenizer


def save(run_dir, step, parts, **data):
    model, tokenizer = parts
    state = ckpt.TrainingState(step, optimizer={}, sampler={}, rng={}, elapsed=1.5, data=data)
    return ckpt.save_checkpoint(
        run_dir, model=model, train_config=tiny_train_config(), tokenizer=tokenizer, state=state
    )


def test_save_and_load_round_trip(tmp_path, parts):
    path = save(tmp_path, 3, parts, note="x")
    assert path == tmp_path / "checkpoints" / "step-3"
    loaded = ckpt.load_checkpoint(tmp_path)
    assert (loaded.step, loaded.state.data["note"], loaded.run_dir) == (3, "x", tmp_path)
    assert (loaded.state.elapsed, loaded.state.metrics_window, loaded.state.world_size) == (1.5, {}, None)
    model = GPT(loaded.model_config)
    loaded.load_weights_into(model)
    for a, b in zip(model.parameters(), parts[0].parameters(), strict=True):
        assert torch.equal(a, b)
    assert load_run(path).model.config == parts[0].config  # a checkpoint is also a run folder


def test_weights_get_the_permissions_of_any_new_file(tmp_path, parts):
    old_umask = os.umask(0o027)
    try:
        checkpoint = save(tmp_path, 1, parts)
        save_weights(parts[0], tmp_path / "export")
    finally:
        os.umask(old_umask)
    for weights in (checkpoint / MODEL_FILE, tmp_path / "export" / MODEL_FILE):
        assert stat.S_IMODE(weights.stat().st_mode) == 0o640
    assert stat.S_IMODE((checkpoint / MODEL_CONFIG_FILE).stat().st_mode) == 0o640


def test_latest_checkpoint_is_found_and_same_step_is_replaced(tmp_path, parts):
    save(tmp_path, 2, parts)
    save(tmp_path, 10, parts)
    save(tmp_path, 10, parts, note="again")
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [2, 10]
    assert ckpt.load_checkpoint(tmp_path).state.data["note"] == "again"
    assert ckpt.load_checkpoint(tmp_path / "checkpoints" / "step-2").step == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-10", "step-2"]


# What the two writers raise when the disk is full (seen on a full tmpfs): safetensors its own
# error, torch.save a RuntimeError from its zip writer.
FULL_DISK_ERRORS = {
    "safetensors": (
        "fha.runs.folder.save_model",
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ),
    "torch": (
        "fha.runs.checkpoint.torch.save",
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
    ),
}


@pytest.mark.parametrize("writer", sorted(FULL_DISK_ERRORS))
def test_full_disk_while_writing_leaves_no_checkpoint_and_loses_none(tmp_path, parts, monkeypatch, writer):
    save(tmp_path, 2, parts)
    before = (tmp_path / "checkpoints" / "step-2" / "model.safetensors").read_bytes()
    target, error = FULL_DISK_ERRORS[writer]

    def crash(*args, **kwargs):
        raise error

    monkeypatch.setattr(target, crash)
    with pytest.raises(
        FhaError,
        match=r"step-4: cannot write the checkpoint \(.*MiB free on that disk\); the "
        "earlier checkpoints are untouched",
    ):
        save(tmp_path, 4, parts)
    with pytest.raises(FhaError, match="step-2: cannot write the checkpoint"):
        save(tmp_path, 2, parts)  # replacing an existing step must not damage it either
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "step-2" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2"]  # no temporary folder left
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [2]
    assert ckpt.load_checkpoint(tmp_path).step == 2
    save(tmp_path, 6, parts)  # the next save clears the leftovers of the crash
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2", "step-6"]


def test_missing_checkpoints(tmp_path):
    with pytest.raises(FhaError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "nothing")
    with pytest.raises(FhaError, match="no checkpoint to resume from"):
        ckpt.load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "victim, message",
    [
        (ckpt.STATE_FILE, "corrupt checkpoint"),
        ("model.safetensors", "corrupt checkpoint weights"),
        ("train_config.json", "not valid JSON"),
    ],
)
def test_corrupt_files_give_one_line_errors(tmp_path, parts, victim, message):
    path = save(tmp_path, 1, parts)
    (path / victim).write_bytes(b"\x00garbage" * 5)
    with pytest.raises(FhaError, match=message) as info:
        loaded = ckpt.load_checkpoint(path)
        loaded.load_weights_into(GPT(loaded.model_config))
    assert "\n" not in str(info.value)


def test_incomplete_checkpoint(tmp_path, parts):
    path = save(tmp_path, 1, parts)
    (path / ckpt.STATE_FILE).unlink()
    with pytest.raises(FhaError, match="incomplete checkpoint"):
        ckpt.load_checkpoint(path)


def test_a_checkpoint_written_before_the_metrics_window_and_world_size_still_loads(tmp_path, parts):
    path = save(tmp_path, 2, parts, source="a.txt")
    state_file = path / ckpt.STATE_FILE
    written = torch.load(state_file, weights_only=True)
    assert list(written) == ["optimizer", "sampler", "rng", "elapsed", "metrics_window", "world_size", "data", "step"]
    torch.save({key: written[key] for key in ("optimizer", "sampler", "rng", "elapsed", "data", "step")}, state_file)
    state = ckpt.load_checkpoint(path).state
    assert state == ckpt.TrainingState(2, {}, {}, {}, 1.5, {"source": "a.txt"}, metrics_window={}, world_size=None)
