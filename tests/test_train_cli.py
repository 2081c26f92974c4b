"""``fha train`` from the command line: bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fha.cli import main
from fha.runs.checkpoint import STATE_FILE, list_checkpoints
from fha.runs.folder import load_run
from fha.runs.logbook import read_evaluations
from fha.tokenizer import Tokenizer

TINY_SETS = [
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
    "max_steps=4",
    "--set",
    "eval_interval=2",
    "--set",
    "eval_samples=1",
    "--set",
    "checkpoint_interval=2",
]


def fails_with_one_line(capsys, argv: list[str], expected: str) -> str:
    capsys.readouterr()  # what earlier commands of the test printed
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fha: error: "), err
    assert expected in lines[0] and "Traceback" not in err
    return lines[0]


@pytest.mark.slow
def test_train_and_resume_through_the_cli(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(out), "--device", "cpu"])
        == 0
    )
    assert [step for step, _ in list_checkpoints(out)] == [2, 4]
    assert main(["train", "--resume", str(out), "--set", "max_steps=6"]) == 0
    assert [step for step, _ in list_checkpoints(out)] == [2, 4, 6]
    assert [row.step for row in read_evaluations(out / "log_data.csv")] == [0, 2, 4, 6]


@pytest.mark.slow
def test_a_run_written_with_the_old_step_field_names_resumes(corpus, tmp_path):
    out = tmp_path / "run"
    assert (
        main(["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(out), "--device", "cpu"])
        == 0
    )
    for path in out.rglob("train_config.json"):  # the run's and its checkpoints', as written before the rename
        config = json.loads(path.read_text())
        for old, new in (
            ("max_iters", "max_steps"),
            ("warmup_iters", "warmup_steps"),
            ("final_flat_iters", "final_flat_steps"),
        ):
            config[old] = config.pop(new)
        path.write_text(json.dumps(config))
    assert main(["train", "--resume", str(out), "--set", "max_iters=6"]) == 0
    assert [step for step, _ in list_checkpoints(out)] == [2, 4, 6]
    assert [row.step for row in read_evaluations(out / "log_data.csv")] == [0, 2, 4, 6]
    assert json.loads((out / "train_config.json").read_text())["max_steps"] == 6


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--set", "dimm=3"], "unknown setting 'dimm' (did you mean dim?)"),
        (["--set", "dim=0"], "invalid configuration: dim must be positive"),
        (["--set", "anneal_type=exp"], "anneal_type must be one of cos, lin"),
        (["--set", "max_steps=ten"], "max_steps='ten': expected int"),
        (["--set", "T_mult=inf"], "T_mult must be a finite number"),
    ],
)
def test_bad_settings(corpus, tmp_path, capsys, extra, expected):
    out = tmp_path / "run"
    fails_with_one_line(
        capsys, ["train", "--preset", "tiny", *extra, "--data", str(corpus), "--out", str(out)], expected
    )
    assert not out.exists()


def test_missing_inputs(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    fails_with_one_line(
        capsys,
        ["train", "--preset", "tiny", "--data", str(tmp_path / "nope.txt"), "--out", str(out)],
        "nope.txt: data file not found",
    )
    assert not out.exists()
    fails_with_one_line(capsys, ["train", "--preset", "tiny", "--out", str(out)], "--data is required")
    fails_with_one_line(capsys, ["train", "--data", str(corpus), "--out", str(out)], "give --preset (a name), --config")
    fails_with_one_line(
        capsys, ["train", "--preset", "nano", "--data", str(corpus), "--out", str(out)], "unknown preset 'nano'"
    )


def test_bad_resume_paths(corpus, tmp_path, capsys):
    fails_with_one_line(capsys, ["train", "--resume", str(tmp_path / "missing")], "no such checkpoint")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails_with_one_line(capsys, ["train", "--resume", str(empty)], "no checkpoint to resume from")
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(out)]) == 0
    capsys.readouterr()
    fails_with_one_line(capsys, ["train", "--resume", str(out), "--set", "dim=64"], "model of a run cannot change")
    (out / "checkpoints" / "step-4" / STATE_FILE).write_bytes(b"not a checkpoint")
    fails_with_one_line(capsys, ["train", "--resume", str(out)], "corrupt checkpoint")
    fails_with_one_line(
        capsys,
        ["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(out)],
        "folder is not empty",
    )


@pytest.mark.slow
def test_subprocess_error_is_one_line(tmp_path):
    env = {**os.environ, "FHA_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fha",
            "train",
            "--preset",
            "tiny",
            "--data",
            str(tmp_path / "absent.txt"),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"fha: error: {tmp_path / 'absent.txt'}: data file not found"]


def test_tiny_preset_on_the_tinystories_sample(sample_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--set",
                "max_steps=3",
                "--set",
                "batch_size=4",
                "--set",
                "eval_samples=1",
                "--data",
                str(sample_dir / "train.txt"),
                "--val-data",
                str(sample_dir / "valid.txt"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    run = load_run(out)
    assert run.model.config.vocab_size == run.tokenizer.vocab_size == 512
    assert [row.step for row in read_evaluations(out / "log_data.csv")] == [0, 3]


def test_tokenizer_size_conflicting_with_set_vocab_size(corpus, tmp_path, capsys):
    tokenizer_file = tmp_path / "tok.json"
    Tokenizer.train([corpus.read_text()], 48).save(tokenizer_file)
    fails_with_one_line(
        capsys,
        [
            "train",
            "--preset",
            "tiny",
            "--set",
            "vocab_size=999",
            "--tokenizer",
            str(tokenizer_file),
            "--data",
            str(corpus),
            "--out",
            str(tmp_path / "run"),
        ],
        f"--set vocab_size=999 but {tokenizer_file} has 48 tokens",
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, expected",
    [
        ({"data": 3}, "'data' is damaged"),
        ({"rng": 5}, "'rng' is damaged"),
        ({"sampler": None}, "'sampler' is damaged"),
        ({"optimizer": ...}, "no 'optimizer' recorded"),
    ],
)
def test_damaged_training_state_is_one_line(corpus, tmp_path, capsys, damage, expected):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(out)]) == 0
    capsys.readouterr()
    state_file = out / "checkpoints" / "step-4" / STATE_FILE
    state = torch.load(state_file, weights_only=True)
    for key, value in damage.items():
        if value is ...:
            del state[key]
        else:
            state[key] = value
    torch.save(state, state_file)
    fails_with_one_line(capsys, ["train", "--resume", str(out), "--set", "max_steps=6"], expected)


@pytest.mark.slow
def test_empty_state_file_names_the_problem(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "checkpoints" / "step-4" / STATE_FILE).write_bytes(b"")
    line = fails_with_one_line(capsys, ["train", "--resume", str(out)], "corrupt checkpoint")
    assert not line.endswith("()")


def test_resuming_an_older_checkpoint_in_place_keeps_later_ones_unless_overwrite(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(out), "--device", "cpu"])
        == 0
    )
    fails_with_one_line(
        capsys, ["train", "--resume", str(out / "checkpoints" / "step-2")], "holds checkpoints after step 2 (step-4)"
    )
    assert [step for step, _ in list_checkpoints(out)] == [2, 4]
    assert (
        main(
            [
                "train",
                "--resume",
                str(out / "checkpoints" / "step-2"),
                "--overwrite",
                "--set",
                "max_steps=3",
                "--set",
                "checkpoint_interval=3",
            ]
        )
        == 0
    )
    assert [step for step, _ in list_checkpoints(out)] == [2, 3]
    assert [row.step for row in read_evaluations(out / "log_data.csv")] == [0, 2, 3]


@pytest.mark.slow
def test_checkpoint_copied_out_of_its_run_needs_out(corpus, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    assert (
        main(["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(out), "--device", "cpu"])
        == 0
    )
    copied = tmp_path / "elsewhere" / "step-2"
    shutil.copytree(out / "checkpoints" / "step-2", copied)
    fails_with_one_line(capsys, ["train", "--resume", str(copied)], "pass --out (a folder)")
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["step-2"]
    assert main(["train", "--resume", str(copied), "--out", str(tmp_path / "resumed")]) == 0
    assert [step for step, _ in list_checkpoints(tmp_path / "resumed")] == [4]


def test_a_failed_start_leaves_a_folder_that_a_retry_may_reuse(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--preset", "tiny", *TINY_SETS, "--out", str(out), "--device", "cpu", "--data", str(corpus)]
    assert main([*base, "--set", "max_seq_len=100000"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("fha: error: the corpus has") and "Traceback" not in err
    assert out.is_dir() and not list_checkpoints(out)
    assert main(base) == 0
    assert [step for step, _ in list_checkpoints(out)] == [2, 4]


def test_malformed_log_is_one_line_on_resume(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(out), "--device", "cpu"])
        == 0
    )
    log_file = out / "log_data.csv"
    log_file.write_text(log_file.read_text() + "two,1,1,1,1,1,1\n")
    fails_with_one_line(capsys, ["train", "--resume", str(out), "--set", "max_steps=6"], "malformed row")
