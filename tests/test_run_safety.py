"""Runs are never lost or mixed up: --overwrite, locking, crashes at any moment, resume data, the end of a run.

Each numbered case of the issue that filed these has a test here (or, for the token cache and
the messages, in the files named beside them). The CLI cases run `fha` in a subprocess, as a
user would; setup that is not under test runs in-process for speed.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_run import make_tokenizer
from train_helpers import run_tiny, tiny_model_config, write_corpus

from fha.cli import in_flags, main
from fha.errors import FhaError
from fha.model.gpt import GPT
from fha.runs import checkpoint as ckpt
from fha.runs.checkpoint import list_checkpoints, load_checkpoint
from fha.runs.folder import MODEL_FILE, TOKENIZER_FILE, read_weights_into, save_weights
from fha.runs.lock import LOCK_FILE
from fha.runs.logbook import read_evaluations
from fha.runs.writer import PREVIOUS_RUN_DIR, RunFolder
from fha.train.divergence import healthy_loss_limit

TESTS = Path(__file__).resolve().parent
HARNESS = TESTS / "crash_harness.py"
SRC = TESTS.parent / "src"
TINY = [
    "--preset",
    "tiny",
    "--set",
    "dim=32",
    "--set",
    "num_layers=1",
    "--set",
    "max_seq_len=16",
    "--set",
    "vocab_size=64",
    "--set",
    "batch_size=4",
    "--set",
    "eval_samples=1",
    "--device",
    "cpu",
]
SIX_STEPS = ["--set", "max_steps=6", "--set", "eval_interval=2", "--set", "checkpoint_interval=2"]
KILLED = -signal.SIGKILL
UNTIMED_COLUMNS = ("step", "learning_rate", "train_loss_nats", "val_loss_nats", "val_perplexity")
SUBPROCESS_TIMEOUT_S = 180
POLL_S = 0.05


@pytest.fixture
def env(tmp_path):
    """The environment of `fha` subprocesses: this checkout's code, a private cache, one thread
    (so that runs in different processes make bit-identical updates)."""
    return {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}",
        "FHA_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }


def fha(env, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fha", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def fha_signalled_at(env, point: str, *args) -> subprocess.CompletedProcess:
    """`fha ARGS` that receives a signal at a chosen call (see crash_harness.py)."""
    return subprocess.run(
        [sys.executable, str(HARNESS), point, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def start_fha(env, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fha", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a failed command (logs may come before it), checked for the format."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("fha: error: ")]
    assert len(lines) == 1 and result.stderr.strip().endswith(lines[0]), result.stderr[-3000:]
    return lines[0]


def cli(*args) -> int:
    """`fha ARGS` in this process (paths welcome)."""
    return main([str(arg) for arg in args])


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below folder (relative path -> SHA-256)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def untimed_log(folder: Path) -> list[list[str]]:
    with open(folder / "log_data.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [[row[key] for key in UNTIMED_COLUMNS] for row in rows]


def train_seed(folder: Path) -> int:
    return load_checkpoint(folder).train_config.seed


# ---------------------------------------------------------------------------- 1. --overwrite


@pytest.mark.slow
def test_failed_overwrite_leaves_the_previous_run_untouched(corpus, tmp_path, env):
    out = tmp_path / "run"
    assert cli("train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out) == 0
    before = snapshot(out)
    three_tokens = tmp_path / "tiny1.txt"
    three_tokens.write_text("a\n\nb\n")
    line = error_line(fha(env, "train", *TINY, "--data", three_tokens, "--out", out, "--overwrite"))
    assert "the corpus has" in line and "fewer than seq_len + 1" in line
    assert snapshot(out) == before
    line = error_line(fha(env, "train", *TINY, "--set", "dim=100000000", "--data", corpus, "--out", out, "--overwrite"))
    assert "parameters and training it needs at least" in line and "GiB" in line
    assert snapshot(out) == before


@pytest.mark.slow
def test_overwrite_replaces_the_run_only_after_the_new_first_checkpoint(corpus, tmp_path):
    out = tmp_path / "run"
    run_tiny(corpus, out, max_steps=4, checkpoint_interval=2, seed=0)
    interrupted = {}

    def stop_at_first_checkpoint(*args, **kwargs):
        # At the new run's first checkpoint the previous run is still kept aside.
        if "aside" not in interrupted:
            interrupted["aside"] = sorted(p.name for p in (out / PREVIOUS_RUN_DIR).iterdir())
        return save_checkpoint(*args, **kwargs)

    save_checkpoint = ckpt.save_checkpoint
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("fha.train.loop.save_checkpoint", stop_at_first_checkpoint)
        assert (
            cli(
                "train",
                *TINY,
                "--set",
                "max_steps=4",
                "--set",
                "checkpoint_interval=2",
                "--set",
                "seed=1",
                "--data",
                corpus,
                "--out",
                out,
                "--overwrite",
            )
            == 0
        )
    assert interrupted["aside"] == [
        ".moved",
        "checkpoints",
        "log_data.csv",
        "metrics.csv",
        "model.safetensors",
        "model_config.json",
        "run_info.json",
        "tokenizer.json",
        "train_config.json",
    ]
    assert not (out / PREVIOUS_RUN_DIR).exists() and train_seed(out) == 1
    assert [step for step, _ in list_checkpoints(out)] == [2, 4]


# ---------------------------------------------------------------------------- 2. one writer per folder


@pytest.mark.slow
def test_two_writers_started_together_leave_exactly_one_run(corpus, tmp_path, env):
    out = tmp_path / "run"
    steps = ["--set", "max_steps=8", "--set", "eval_interval=4", "--set", "checkpoint_interval=4"]
    writers = [
        start_fha(env, "train", *TINY, *steps, "--set", f"seed={seed}", "--data", corpus, "--out", out)
        for seed in (1, 2)
    ]
    results = [(writer.pid, writer.wait(SUBPROCESS_TIMEOUT_S), writer.communicate()[1]) for writer in writers]
    assert sorted(code for _, code, _ in results) == [0, 2], results
    ((winner, _, _),) = [r for r in results if r[1] == 0]
    ((_, _, loser_err),) = [r for r in results if r[1] == 2]
    assert f"in use by pid {winner} on host" in loser_err or "folder is not empty" in loser_err, loser_err
    seed = train_seed(out)
    assert [row.step for row in read_evaluations(out / "log_data.csv")] == [0, 4, 8]
    assert all(load_checkpoint(path).train_config.seed == seed for _, path in list_checkpoints(out))
    assert f'"seed": {seed}' in (out / "train_config.json").read_text()
    assert not (out / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_folder_in_use_refuses_a_second_writer_and_a_resume(corpus, tmp_path, env):
    out = tmp_path / "run"
    steps = ["--set", "max_steps=16", "--set", "eval_interval=4", "--set", "checkpoint_interval=2"]
    writer = start_fha(env, "train", *TINY, *steps, "--data", corpus, "--out", out)
    try:
        while not list_checkpoints(out) and writer.poll() is None:
            time.sleep(POLL_S)
        writer.send_signal(signal.SIGSTOP)  # holds the lock, as a long step would
        owner = f"in use by pid {writer.pid} on host"
        assert owner in error_line(fha(env, "train", *TINY, *steps, "--set", "seed=3", "--data", corpus, "--out", out))
        assert owner in error_line(fha(env, "train", *TINY, *steps, "--data", corpus, "--out", out, "--overwrite"))
        assert owner in error_line(fha(env, "train", "--resume", out))
    finally:
        writer.send_signal(signal.SIGCONT)
    assert writer.wait(SUBPROCESS_TIMEOUT_S) == 0
    assert [row.step for row in read_evaluations(out / "log_data.csv")] == [0, 4, 8, 12, 16]
    assert [step for step, _ in list_checkpoints(out)] == list(range(2, 17, 2))


@pytest.mark.slow
def test_a_stale_lock_of_a_killed_run_is_taken_over(corpus, tmp_path, env):
    out = tmp_path / "run"
    killed = fha_signalled_at(env, "save_model:1:KILL", "train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out)
    assert killed.returncode == KILLED
    assert '"pid"' in (out / LOCK_FILE).read_text()  # left behind, but no live process holds it
    assert cli("train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out) == 0
    assert not (out / LOCK_FILE).exists()


# ---------------------------------------------------------------------------- 4. resume uses what it says


@pytest.mark.slow
def test_resume_from_another_folder_with_relative_paths(tmp_path, env):
    work = tmp_path / "work"
    work.mkdir()
    write_corpus(work / "stories.txt")
    assert (
        fha(
            env,
            "train",
            *TINY,
            "--set",
            "max_steps=4",
            "--set",
            "checkpoint_interval=2",
            "--data",
            "stories.txt",
            "--out",
            "run",
            cwd=work,
        ).returncode
        == 0
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = fha(env, "train", "--resume", work / "run", "--set", "max_steps=6", cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(work / "run").state.data["source"] == str(work / "stories.txt")


@pytest.mark.slow
def test_resume_refuses_other_training_documents_and_applies_new_validation_ones(tmp_path, capsys, caplog):
    data, val, other_val = (
        write_corpus(tmp_path / f"{name}.txt", seed=seed) for name, seed in (("train", 0), ("val", 1), ("other-val", 2))
    )
    out = tmp_path / "run"
    assert cli("train", *TINY, *SIX_STEPS, "--set", "max_steps=4", "--data", data, "--val-data", val, "--out", out) == 0
    capsys.readouterr()
    # Other training documents: the sampler's position would mean nothing.
    assert cli("train", "--resume", out, "--set", "max_steps=6", "--data", other_val) == 2
    assert "differ from the ones the run was trained on" in capsys.readouterr().err
    # Dropping --val-data changes the training split (val_fraction is held out of --data instead).
    moved = tmp_path / "moved.txt"
    moved.write_bytes(data.read_bytes())
    data.unlink()
    assert cli("train", "--resume", out, "--set", "max_steps=6") == 2
    err = capsys.readouterr().err
    assert f"the run's --data {data} is not there any more; pass --data with the same documents" in err
    # The same documents from a new place are fine, and --val-data alone is applied, and said so.
    assert cli("train", "--resume", out, "--set", "max_steps=6", "--data", moved, "--val-data", other_val) == 0
    assert "validation data changed on resume" in caplog.text and str(other_val) in caplog.text
    data_state = load_checkpoint(out).state.data
    assert data_state["source"] == str(moved) and data_state["val_source"] == str(other_val)


def test_resume_without_val_data_after_a_separate_validation_file_refuses(tmp_path, capsys):
    data, val = write_corpus(tmp_path / "train.txt"), write_corpus(tmp_path / "val.txt", seed=1)
    out = tmp_path / "run"
    assert cli("train", *TINY, "--set", "max_steps=4", "--data", data, "--val-data", val, "--out", out) == 0
    capsys.readouterr()
    val.unlink()
    assert cli("train", "--resume", out, "--set", "max_steps=6") == 2
    err = capsys.readouterr().err
    assert f"the run's --val-data {val} is not there any more; pass --val-data" in err


# ---------------------------------------------------------------------------- 5. no stale final weights


@pytest.mark.slow
def test_resumed_run_never_shows_older_final_weights(corpus, tmp_path, env):
    out = tmp_path / "run"
    assert cli("train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out) == 0
    assert (out / MODEL_FILE).read_bytes() == (out / "checkpoints" / "step-6" / MODEL_FILE).read_bytes()
    killed = fha_signalled_at(
        env,
        "save_model:1:KILL",
        "train",
        "--resume",
        out / "checkpoints" / "step-2",
        "--overwrite",
        "--set",
        "max_steps=8",
        "--set",
        "lr_max=0.005",
    )
    assert killed.returncode == KILLED
    assert not (out / MODEL_FILE).exists()  # the old 6-step weights went with the old settings
    assert '"max_steps": 8' in (out / "train_config.json").read_text()
    evaluated = fha(env, "eval", out, "--data", corpus)  # the new run's latest checkpoint, never the old weights
    assert (
        evaluated.returncode == 0
        and "no final weights (the run is unfinished); using its latest checkpoint, step 2" in evaluated.stderr
    )
    assert (
        fha(
            env,
            "train",
            "--resume",
            out / "checkpoints" / "step-2",
            "--overwrite",
            "--set",
            "max_steps=8",
            "--set",
            "lr_max=0.005",
        ).returncode
        == 0
    )
    assert (out / MODEL_FILE).read_bytes() == (out / "checkpoints" / "step-8" / MODEL_FILE).read_bytes()


# ---------------------------------------------------------------------------- 6. leftovers of an early stop


@pytest.mark.slow
def test_a_start_killed_before_its_first_checkpoint_is_rerun_cleanly(corpus, tmp_path, env):
    out = tmp_path / "run"
    command = ["train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out]
    assert fha_signalled_at(env, "save_model:1:KILL", *command).returncode == KILLED
    assert (out / "log_data.csv").exists() and not list_checkpoints(out)
    assert "stopped before its first checkpoint; run the same fha train command again" in error_line(
        fha(env, "train", "--resume", out)
    )
    result = fha(env, *command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [step for step, _ in list_checkpoints(out)] == [2, 4, 6]


@pytest.mark.slow
def test_temporary_files_of_a_killed_writer_do_not_block_a_rerun(corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log_data.csv.tmp").write_text("Step,Learn")  # killed while starting the log
    (out / ".model.safetensors.tmp-12345").write_bytes(b"\x00")  # killed while publishing the final weights
    assert cli("train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints",
        "log_data.csv",
        "metrics.csv",
        "model.safetensors",
        "model_config.json",
        "run_info.json",
        "tokenizer.json",
        "train_config.json",
    ]


def test_a_folder_with_foreign_files_is_not_cleared(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli("train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out) == 2
    assert "holds files that are not a run's (notes.txt)" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- 7. divergence


@pytest.mark.slow
def test_divergence_names_a_checkpoint_that_can_be_resumed(corpus, tmp_path, monkeypatch, capsys):
    """Weights that blow up at step 3 (checkpointed at 3 and 4) and a NaN at step 5: the last good
    checkpoint is step-2, and a resume from it with a saner learning rate trains on."""
    forward = GPT.forward
    calls = {"n": 0}

    def exploding(self, idx, targets=None, **kwargs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3:
                with torch.no_grad():
                    self.embedding.weight.mul_(1e3)  # logits in the thousands: a finite but hopeless loss
        logits, loss = forward(self, idx, targets, **kwargs)
        if self.training and calls["n"] >= 5:
            loss = loss * math.nan
        return logits, loss

    monkeypatch.setattr(GPT, "forward", exploding)
    out = tmp_path / "run"
    with pytest.raises(FhaError) as raised:
        run_tiny(corpus, out, checkpoint_interval=1, max_steps=8)
    message = str(raised.value)
    assert message.startswith("loss became nan at step 5; the last good checkpoint is ")
    assert f"{out / 'checkpoints' / 'step-2'} (finite weights, validation loss" in message
    assert f"<= 1.5 x ln(vocab_size) = {healthy_loss_limit(64):.3g}" in message
    assert "step-4 is not: " in message and "step-3 is not: " in message
    assert f"`resume` {out / 'checkpoints' / 'step-2'} with `overwrite` and `overrides` lr_max=..." in message
    step_2 = out / "checkpoints" / "step-2"
    assert in_flags(message).endswith(f"--resume {step_2} with --overwrite and --set lr_max=...")
    monkeypatch.undo()
    assert cli("train", "--resume", out / "checkpoints" / "step-2", "--overwrite", "--set", "lr_max=0.005") == 0
    assert all(math.isfinite(row.val_loss) for row in read_evaluations(out / "log_data.csv"))


# ---------------------------------------------------------------------------- 8. the very end


@pytest.mark.slow
@pytest.mark.parametrize("point", ["publish:1:INT", "save_model:3:INT"])
def test_ctrl_c_during_the_final_save_still_finishes(corpus, tmp_path, env, point):
    out = tmp_path / "run"
    result = fha_signalled_at(env, point, "train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "interrupted" not in result.stderr and "Traceback" not in result.stderr
    assert "finished 6 steps" in result.stderr
    assert (out / MODEL_FILE).read_bytes() == (out / "checkpoints" / "step-6" / MODEL_FILE).read_bytes()


def test_late_interrupts_of_a_finished_command_are_ignored(monkeypatch):
    """After `fha` (argv None: the real program) has done its work, interpreter shutdown ignores Ctrl-C;
    SIGUSR1, which only `fha study run` listens to, never ends the program."""
    monkeypatch.setattr(sys, "argv", ["fha", "schedule", "--preset", "tiny"])
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        assert main() == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------- the kill loop


@pytest.mark.slow
def test_kill_loop_ends_with_the_run_an_uninterrupted_one_makes(corpus, tmp_path, env):
    """SIGKILL a replacing run again and again (while moving the old run aside, writing checkpoints,
    deleting the old run, publishing the final weights), continuing each time as a user would:
    the result is the uninterrupted run, and the old run is whole whenever the new one has no checkpoint."""
    reference, out = tmp_path / "reference", tmp_path / "run"
    new_run = ["train", *TINY, *SIX_STEPS, "--set", "seed=1", "--data", corpus]
    assert fha(env, *new_run, "--out", reference).returncode == 0
    assert cli("train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out) == 0
    old_run = snapshot(out)
    # Replacing: before the list of moved files, halfway through moving, at the first checkpoint, before
    # deleting the old run; then resuming: while writing the last checkpoint, at the final save.
    kills = [
        "replace:1:KILL",
        "replace:4:KILL",
        "save_model:1:KILL",
        "rmtree:2:KILL",
        "save_model:2:KILL",
        "publish:1:KILL",
    ]
    outcomes = []
    for point in kills:
        started = bool(list_checkpoints(out)) and train_seed(out) == 1
        command = ["train", "--resume", out] if started else [*new_run, "--out", out, "--overwrite"]
        outcomes.append(fha_signalled_at(env, point, *command).returncode)
        if not (bool(list_checkpoints(out)) and train_seed(out) == 1) and (out / PREVIOUS_RUN_DIR).exists():
            # The next process to take the folder undoes the interrupted --overwrite (this one then
            # refuses to go on, as the folder holds a run again).
            with pytest.raises(FhaError, match="folder is not empty"):
                RunFolder(out, overwrite=False).__enter__()
            assert snapshot(out) == old_run
    assert outcomes == [KILLED] * len(kills)
    result = fha(env, "train", "--resume", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert untimed_log(out) == untimed_log(reference)
    assert (out / MODEL_FILE).read_bytes() == (reference / MODEL_FILE).read_bytes()
    for name in ("train_config.json", "model_config.json", "tokenizer.json"):
        assert (out / name).read_text() == (reference / name).read_text()
    assert [step for step, _ in list_checkpoints(out)] == [2, 4, 6]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())


# ---------------------------------------------------------------------------- 9 and 10: one line each


def test_disk_full_during_training_is_one_line_and_keeps_the_checkpoints(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    saves = {"n": 0}
    real = torch.save

    def full_disk_at_the_second_checkpoint(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", full_disk_at_the_second_checkpoint)
    assert cli("train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"fha: error: {out / 'checkpoints' / 'step-4'}: cannot write the checkpoint")
    assert [step for step, _ in list_checkpoints(out)] == [2]
    monkeypatch.undo()
    assert cli("train", "--resume", out) == 0


@pytest.mark.slow
def test_non_finite_weights_are_refused_on_load(tmp_path, env, run_dir_factory):
    run_dir = run_dir_factory(tmp_path / "run")
    weights = load_file(run_dir / MODEL_FILE)
    name = sorted(weights)[0]
    weights[name][0] = math.nan
    save_file(weights, run_dir / MODEL_FILE)
    data = write_corpus(tmp_path / "stories.txt", num_docs=10)
    for command in (["generate", run_dir, "--max-new-tokens", "2"], ["eval", run_dir, "--data", data]):
        line = error_line(fha(env, *command))
        assert line.startswith(f"fha: error: {run_dir / MODEL_FILE}: the weights hold NaN or infinite values (")
        assert name in line and line.endswith("the run diverged before they were saved")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny run folder (an untrained model suffices here), made once per module; tests copy it."""
    directory = tmp_path_factory.mktemp("trained") / "run"
    tokenizer = make_tokenizer()
    save_weights(GPT(tiny_model_config(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)), directory)
    tokenizer.save(directory / TOKENIZER_FILE)
    return directory


@pytest.fixture
def run_dir_factory(trained_run):
    def copy(directory: Path) -> Path:
        shutil.copytree(trained_run, directory)
        return directory

    return copy


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("eps=inf", "invalid configuration: eps must be a finite number, got inf"),
        ("dim=99999999999999999999999", "invalid configuration: dim must be at most 2147483647"),
        ("seed=-1", "invalid configuration: seed must be a whole number in [0, 2**32), got -1"),
        ("seed=99999999999999999999", "seed must be a whole number in [0, 2**32), got 99999999999999999999"),
        ("num_restarts=1000000000", "num_restarts (1000000000) must be below max_steps"),
    ],
)
def test_bad_settings_are_one_line_before_anything_is_written(corpus, tmp_path, capsys, setting, expected):
    out = tmp_path / "run"
    assert cli("train", *TINY, "--set", setting, "--data", corpus, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fha: error: ") and "\n" not in err and expected in err
    assert not out.exists()


@pytest.mark.slow
def test_an_infinite_setting_is_one_line_in_a_real_process(corpus, tmp_path, env):
    out = tmp_path / "run"
    assert error_line(fha(env, "train", *TINY, "--set", "mlp_hidden_mult=inf", "--data", corpus, "--out", out)) == (
        "fha: error: invalid configuration: mlp_hidden_mult must be a finite number, got inf"
    )
    assert not out.exists()


@pytest.mark.slow
def test_bad_inputs_are_one_line(corpus, tmp_path, env, capsys):
    surrogate = tmp_path / "odd.jsonl"
    surrogate.write_text('{"text": "fine"}\n{"text": "a\\ud800b"}\n', encoding="utf-8")
    expected = f"{surrogate}:2: the text holds a lone surrogate '\\ud800'"
    assert expected in error_line(fha(env, "train", *TINY, "--data", surrogate, "--out", tmp_path / "r1"))
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert cli("train", *TINY, "--data", corpus, "--out", a_file / "run") == 2
    assert capsys.readouterr().err.strip() == (
        f"fha: error: {a_file / 'run'}: --out must be a folder, and this lies below {a_file}, which is a file"
    )
    with pytest.raises(SystemExit) as usage_error:
        cli("train", *TINY, "--data", corpus, "--out", "")
    assert usage_error.value.code == 2
    assert "argument --out: expected a folder name, got an empty string" in capsys.readouterr().err
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert error_line(fha(env, "train", *TINY, "--data", fifo, "--out", tmp_path / "r2")) == (
        f"fha: error: {fifo}: not a regular file (a pipe or device would be read without end); "
        "save the text to a file first"
    )


@pytest.mark.slow
def test_generate_and_eval_refuse_bad_values_in_one_line(tmp_path, env, run_dir_factory):
    run_dir = run_dir_factory(tmp_path / "run")
    assert "--temperature 1e-40 is below 1e-06" in error_line(fha(env, "generate", run_dir, "--temperature", "1e-40"))
    assert error_line(fha(env, "generate", run_dir, "--seed", "-1")) == (
        "fha: error: --seed must be a whole number in [0, 2**32), got -1"
    )
    surrogate = tmp_path / "odd.jsonl"
    surrogate.write_text('{"text": "a\\ud800b"}\n', encoding="utf-8")
    assert f"{surrogate}:1: the text holds a lone surrogate" in error_line(
        fha(env, "eval", run_dir, "--data", surrogate)
    )


@pytest.mark.slow
def test_resume_below_the_checkpoints_step_and_a_binary_log(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("train", *TINY, *SIX_STEPS, "--data", corpus, "--out", out) == 0
    capsys.readouterr()
    assert cli("train", "--resume", out, "--set", "max_steps=3") == 2
    assert capsys.readouterr().err.strip() == (
        f"fha: error: {out / 'checkpoints' / 'step-6'}: max_steps=3 is below the checkpoint's step 6; a resume "
        "continues up to max_steps, so pass --set max_steps=6 or more (or resume an earlier checkpoint)"
    )
    (out / "log_data.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert cli("train", "--resume", out, "--set", "max_steps=8") == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith(f"fha: error: {out / 'log_data.csv'}: not a readable training log (")
    )


def test_unreadable_weights_are_not_called_corrupt(tmp_path):
    model = GPT(tiny_model_config())
    with pytest.raises(FhaError, match=r"missing\.safetensors: cannot read the weights \(No such file or directory\)"):
        read_weights_into(model, tmp_path / "missing.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(FhaError, match=r"garbage\.safetensors: corrupt weights"):
        read_weights_into(model, tmp_path / "garbage.safetensors")


def test_compare_refuses_a_negative_batch_size(tmp_path, capsys, run_dir_factory):
    run_dir = run_dir_factory(tmp_path / "run")
    (run_dir / "log_data.csv").write_text(
        "Step,Learning Rate,Train Loss,Validation Loss,Perplexity,Time Elapsed\n0,0.001,4.0,4.0,54.6,0.0\n"
    )
    (run_dir / "train_config.json").write_text('{"batch_size": -1}')
    assert cli("compare", run_dir, "--out", tmp_path / "compare") == 2
    assert capsys.readouterr().err.strip() == (
        f"fha: error: {run_dir / 'train_config.json'}: batch_size must be a positive whole number, got -1"
    )


def test_schedule_plot_of_a_billion_steps_evaluates_a_bounded_number_of_them():
    from fha.train.schedule import MAX_PLOT_POINTS, LRSchedule, plot_steps
    from fha.train_config import TrainConfig

    schedule = LRSchedule.from_config(TrainConfig(max_steps=10**9, num_restarts=2))
    steps = plot_steps(schedule)
    assert len(steps) <= MAX_PLOT_POINTS + 3 * (schedule.num_cycles + 2)
    assert steps[0] == 0 and steps[-1] == 10**9 - 1
    for bound in schedule.cycle_boundaries()[1:-1]:  # each restart is drawn as a jump, not smoothed over
        assert math.floor(bound) - 1 in steps and math.ceil(bound) in steps
    short = LRSchedule.from_config(TrainConfig(max_steps=50))
    assert plot_steps(short) == list(range(50))


# ---------------------------------------------------------------------------- 11. tokens/s without pads


@pytest.mark.slow
@pytest.mark.parametrize("batching", ["packed", "padded"])
def test_tokens_per_second_counts_only_real_tokens(corpus, tmp_path, monkeypatch, batching):
    """With a clock that advances one second per reading, Tokens/s is the real tokens per step."""
    clock = iter(range(10**6))
    monkeypatch.setattr("fha.train.loop.time.perf_counter", lambda: float(next(clock)))
    run_tiny(
        corpus, tmp_path / "run", tiny_model_config(max_seq_len=64), batching=batching, max_steps=4, eval_interval=2
    )
    rates = [row.tokens_per_s for row in read_evaluations(tmp_path / "run" / "log_data.csv")][1:]
    full = 4 * 64  # batch_size x max_seq_len; the stories are shorter, so padded rows hold pads
    if batching == "packed":
        assert rates == [full, full]
    else:
        assert all(0 < rate < full for rate in rates), rates


PEER_SCRIPT = """
import os, sys
import torch.distributed as dist
from fha.errors import FhaError
from fha.train import distributed as dist_util
rank = int(sys.argv[1])
try:
    # As dist_util.init_process_group does: rank 0 may be gone before rank 1 has finished joining.
    with dist_util.peers_alive(rank):
        dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
    if rank == 0:
        os._exit(2)  # fails during setup, after the process group formed
    dist_util.barrier()
except FhaError as err:
    print(f"fha: error: {err}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.slow
def test_a_process_whose_peer_failed_says_so_in_one_line(tmp_path, env):
    store = tmp_path / "store"
    peers = [
        subprocess.Popen(
            [sys.executable, "-c", PEER_SCRIPT, str(rank), str(store)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in (0, 1)
    ]
    outputs = [peer.communicate(timeout=SUBPROCESS_TIMEOUT_S) for peer in peers]
    assert peers[0].returncode == 2
    survivor = subprocess.CompletedProcess(peers[1].args, peers[1].returncode, *outputs[1])
    assert error_line(survivor).startswith("fha: error: process 1: another process of this run stopped (")
