"""The training loop: run folder, log, exact resume, gradient accumulation, NaN stop, Ctrl-C."""

from __future__ import annotations

import csv
import dataclasses
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import (
    SEQ_LEN,
    run_tiny,
    tiny_model_config,
    tiny_train_config,
)

from fha import GPT, Tokenizer
from fha.data import PackedBatches
from fha.errors import FhaError
from fha.runs.checkpoint import list_checkpoints, load_checkpoint
from fha.runs.folder import load_run
from fha.runs.logbook import COLUMNS, LogRow, read_evaluations
from fha.train import loop
from fha.train.loop import TrainRequest, train
from fha.train.optim import make_optimizer, parameter_groups


@pytest.mark.slow
def test_run_folder_log_and_checkpoints(corpus, tmp_path):
    out = tmp_path / "run"
    result = run_tiny(corpus, out)
    assert result.step == 6
    with open(out / "log_data.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == COLUMNS
    assert [int(row[0]) for row in rows[1:]] == [0, 2, 4, 6]
    for row in rows[1:]:
        assert all(float(cell) == float(cell) for cell in row)  # plain numbers, no tensor(...) or nan
    assert [step for step, _ in list_checkpoints(out)] == [3, 6]
    run = load_run(out)
    assert run.tokenizer.vocab_size == run.model.config.vocab_size
    assert run.model.config.pad_id == run.tokenizer.pad_id
    assert run.configs.train == tiny_train_config()
    final = load_file(out / "model.safetensors")
    assert torch.equal(
        final["embedding.weight"], load_file(out / "checkpoints/step-6/model.safetensors")["embedding.weight"]
    )


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run_exactly(corpus, tmp_path):
    model = tiny_model_config(dropout=0.1)  # dropout: the RNG state must be restored too
    full = run_tiny(corpus, tmp_path / "full", model, eval_interval=1, checkpoint_interval=3)
    checkpoint = load_checkpoint(tmp_path / "full" / "checkpoints" / "step-3")
    resumed = train(
        TrainRequest(
            checkpoint.model_config,
            checkpoint.train_config,
            str(corpus),
            tmp_path / "resumed",
            device="cpu",
            resume=checkpoint,
        )
    )
    after = [untimed(row) for row in full.history if row.step > 3]
    assert [untimed(row) for row in resumed.history] == after
    logged = read_evaluations(tmp_path / "resumed" / "log_data.csv")  # rows 0-3 copied, 4-6 new
    assert [untimed(row) for row in logged] == [untimed(row) for row in full.history]
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(torch.equal(a[name], b[name]) for name in a)


def untimed(row: LogRow) -> tuple[float, ...]:
    return row.step, row.learning_rate, row.train_loss, row.val_loss


@pytest.mark.slow
def test_grad_accumulation_equals_one_big_batch(corpus, tmp_path):
    common = {"max_steps": 1, "eval_samples": 1, "grad_clip": None, "weight_decay": 0.1}
    run_tiny(corpus, tmp_path / "accum", batch_size=8, grad_accum_steps=4, **common)
    run_tiny(corpus, tmp_path / "big", batch_size=32, grad_accum_steps=1, **common)
    a, b = load_file(tmp_path / "accum" / "model.safetensors"), load_file(tmp_path / "big" / "model.safetensors")
    torch.manual_seed(0)  # the runs' seed: the same initial weights
    initial = GPT(load_run(tmp_path / "big").model.config).state_dict()
    for name in a:
        assert not torch.equal(a[name], initial[name])  # the step changed every tensor
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_grad_accumulation_equals_one_big_batch_with_padding(corpus, tmp_path):
    # Rows of 64 positions hold whole stories of varying length, so the micro-batches have different
    # numbers of real targets: each must count in proportion to them, as in the big batch's mean.
    model = tiny_model_config(max_seq_len=64)
    common = {"max_steps": 1, "eval_samples": 1, "grad_clip": None, "batching": "padded"}
    run_tiny(corpus, tmp_path / "accum", model, batch_size=8, grad_accum_steps=4, **common)
    run_tiny(corpus, tmp_path / "big", model, batch_size=32, grad_accum_steps=1, **common)
    a, b = load_file(tmp_path / "accum" / "model.safetensors"), load_file(tmp_path / "big" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_four_micro_batches_of_8_are_the_windows_of_one_batch_of_32():
    tokens = np.arange(2000, dtype=np.uint16)
    small, big = PackedBatches(tokens, 8, SEQ_LEN, seed=3), PackedBatches(tokens, 32, SEQ_LEN, seed=3)
    x_small = torch.cat([small.next_batch()[0] for _ in range(4)])
    assert torch.equal(x_small, big.next_batch()[0])


def test_weight_decay_only_on_matrices():
    model = GPT(tiny_model_config())
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {n for n, p in model.named_parameters() if p.ndim == 2}
    assert all(names[id(p)].endswith("norm.weight") for p in no_decay["params"])
    assert "embedding.weight" in {names[id(p)] for p in decay["params"]}
    optimizer = make_optimizer(model, tiny_train_config(weight_decay=0.05), torch.device("cpu"))
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
    norm = model.norm.weight
    before = norm.detach().clone()
    norm.grad = torch.zeros_like(norm)
    optimizer.step()
    assert torch.equal(norm, before)  # no gradient and no decay: a norm gain does not move


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(corpus, tmp_path, monkeypatch):
    forward = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None, **kwargs):
        logits, loss = forward(self, idx, targets, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] >= 5:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)
    out = tmp_path / "run"
    with pytest.raises(FhaError, match=r"loss became nan at step 5; the last good checkpoint is .*step-4"):
        run_tiny(corpus, out, checkpoint_interval=2, max_steps=8)
    assert [step for step, _ in list_checkpoints(out)] == [2, 4]
    assert load_checkpoint(out).step == 4
    assert not (out / "model.safetensors").exists()


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_then_stops(corpus, tmp_path, monkeypatch):
    forward = GPT.forward
    calls = {"n": 0}

    def interrupting(self, idx, targets=None, **kwargs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 2:
                os.kill(os.getpid(), signal.SIGINT)
        return forward(self, idx, targets, **kwargs)

    monkeypatch.setattr(GPT, "forward", interrupting)
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite runs as a background job
    with pytest.raises(KeyboardInterrupt):
        run_tiny(corpus, out, checkpoint_interval=100, max_steps=8)
    assert [step for step, _ in list_checkpoints(out)] == [2]
    assert signal.getsignal(signal.SIGINT) is before  # the loop's handler is gone again


@pytest.mark.slow
def test_existing_run_is_never_overwritten_silently(corpus, tmp_path):
    out = tmp_path / "run"
    run_tiny(corpus, out, max_steps=2)
    with pytest.raises(FhaError, match="not empty.*`resume`.*`overwrite`"):
        run_tiny(corpus, out, max_steps=2)
    assert [step for step, _ in list_checkpoints(out)] == [2]
    request = TrainRequest(
        tiny_model_config(), tiny_train_config(max_steps=4), str(corpus), out, device="cpu", overwrite=True
    )
    train(request)
    assert [step for step, _ in list_checkpoints(out)] == [3, 4]


@pytest.mark.slow
def test_given_tokenizer_sets_vocab_size(corpus, tmp_path):
    tokenizer = Tokenizer.train([corpus.read_text()], 48)
    request = TrainRequest(
        tiny_model_config(vocab_size=1000),
        tiny_train_config(max_steps=2),
        str(corpus),
        tmp_path / "run",
        device="cpu",
        tokenizer=tokenizer,
    )
    train(request)
    run = load_run(tmp_path / "run")
    assert run.model.config.vocab_size == tokenizer.vocab_size == run.tokenizer.vocab_size


@pytest.mark.slow
def test_padded_batching_runs(corpus, tmp_path):
    result = run_tiny(corpus, tmp_path / "run", batching="padded", max_steps=2)
    assert result.val_loss == result.val_loss  # finite, not nan


@pytest.mark.slow
def test_train_tokens_are_cached_once(corpus, tmp_path):
    run_tiny(corpus, tmp_path / "a", max_steps=1, eval_samples=1)
    cached = sorted(p.name for p in (tmp_path / "cache" / "tokens").iterdir())
    run_tiny(corpus, tmp_path / "b", max_steps=1, eval_samples=1)
    assert sorted(p.name for p in (tmp_path / "cache" / "tokens").iterdir()) == cached
    assert len([name for name in cached if name.endswith(".json")]) == 2  # train and val


@pytest.mark.slow
def test_ctrl_c_during_the_last_step_still_finishes_the_run(corpus, tmp_path, monkeypatch):
    forward = GPT.forward
    calls = {"n": 0}

    def interrupting(self, idx, targets=None, **kwargs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 4:
                os.kill(os.getpid(), signal.SIGINT)
        return forward(self, idx, targets, **kwargs)

    monkeypatch.setattr(GPT, "forward", interrupting)
    out = tmp_path / "run"
    result = run_tiny(corpus, out, checkpoint_interval=100, max_steps=4)
    assert result.step == 4
    assert (out / "model.safetensors").is_file()
    assert [step for step, _ in list_checkpoints(out)] == [4]


@pytest.mark.slow
def test_the_setup_is_one_frozen_value_the_loop_reads(corpus, tmp_path, monkeypatch):
    """`train` builds the fixed parts first (set_up), then runs the loop over them."""
    built = []
    set_up = loop.set_up

    def recording_set_up(*args, **kwargs):
        built.append(set_up(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(loop, "set_up", recording_set_up)
    result = run_tiny(corpus, tmp_path / "full", checkpoint_interval=3)
    (setup,) = built
    with pytest.raises(dataclasses.FrozenInstanceError):
        setup.model = None
    assert setup.start_step == 0 and setup.train_model is setup.model  # one process: no DDP wrapper
    assert setup.model_config.vocab_size == setup.tokenizer.vocab_size == result.load()[0].config.vocab_size
    assert setup.config == tiny_train_config(checkpoint_interval=3) and setup.run_dir == tmp_path / "full"

    checkpoint = load_checkpoint(tmp_path / "full" / "checkpoints" / "step-3")
    train(
        TrainRequest(
            checkpoint.model_config,
            checkpoint.train_config,
            str(corpus),
            tmp_path / "resumed",
            device="cpu",
            resume=checkpoint,
        )
    )
    resumed = built[-1]
    assert resumed.start_step == 3 and resumed.start_elapsed == checkpoint.state.elapsed
    assert resumed.tokenizer is checkpoint.tokenizer
