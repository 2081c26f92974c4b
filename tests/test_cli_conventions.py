"""CLI conventions: --version, --device and --precision parsing, -v/-q after the command,
--print-config, and what a resume of a finished run or with a changed budget says."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import torch
from test_train_cli import TINY_SETS
from tiny_run import LINES

import fha
from fha.cli import main
from fha.device import autocast_dtype, describe, pick_device
from fha.errors import FhaError
from fha.experiments import build_configs, load_experiment, merge, parse_overrides
from fha.runs.checkpoint import list_checkpoints
from fha.runs.logbook import read_evaluations

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"fha {fha.__version__} (torch {torch.__version__}, Python ")


@pytest.mark.parametrize(
    "name, message",
    [
        ("gpu", "`device` 'gpu': unknown device (use auto, cpu, cuda, cuda:N, mps)"),
        ("cuda:x", "`device` 'cuda:x': unknown device"),
        ("cuda:", "`device` 'cuda:': unknown device"),
    ],
)
def test_unknown_device_names(name, message):
    with pytest.raises(FhaError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        pick_device(name)


def test_the_command_line_names_the_flag_where_the_library_names_the_parameter(tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--prompt", "Once", "--device", "gpu"]) == 2
    assert capsys.readouterr().err == (
        "fha: error: --device 'gpu': unknown device (use auto, cpu, cuda, cuda:N, mps)\n"
    )


def test_cuda_index_is_accepted_and_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cuda") == torch.device("cuda")
    with pytest.raises(FhaError, match=r"^`device` cuda:2: this machine has 2 CUDA devices \(cuda:0 to cuda:1\)$"):
        pick_device("cuda:2")


def test_cuda_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FhaError, match="^`device` cuda:1: CUDA is not available on this machine$"):
        pick_device("cuda:1")


def test_precision_on_cpu():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert describe(cpu, "bf16") == "cpu (bf16 autocast)" and describe(cpu, "fp32") == "cpu (float32)"
    with pytest.raises(FhaError, match=r"^`precision` fp16: float16 autocast needs a GPU \(cuda or mps\), not cpu$"):
        autocast_dtype(cpu, "fp16")
    with pytest.raises(FhaError, match=r"^`precision` 'fp8': unknown precision \(use one of auto, fp32, bf16, fp16\)$"):
        autocast_dtype(cpu, "fp8")


def test_precision_choice_is_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "run", "--data", "x.txt", "--precision", "fp8"])
    assert "argument --precision: invalid choice: 'fp8'" in capsys.readouterr().err


def test_eval_in_bf16_on_cpu_is_close_to_float32(capsys, caplog, tmp_path, tiny_run_dir):
    caplog.set_level(logging.INFO)
    run_dir = tiny_run_dir
    data = tmp_path / "valid.txt"
    data.write_text("\n<|endoftext|>\n".join(LINES) + "\n")
    results = {}
    for precision in ("fp32", "bf16"):
        assert main(["eval", str(run_dir), "--data", str(data), "--json", "--precision", precision]) == 0
        results[precision] = json.loads(capsys.readouterr().out)
    assert "device: cpu (bf16 autocast)" in caplog.text and "device: cpu (float32)" in caplog.text
    assert results["bf16"]["loss_nats"] != results["fp32"]["loss_nats"]  # it did compute in bf16
    assert results["bf16"]["loss_nats"] == pytest.approx(results["fp32"]["loss_nats"], rel=0.02)


def test_generate_accepts_precision(capsys, tiny_run_dir):
    assert (
        main(
            [
                "generate",
                str(tiny_run_dir),
                "--prompt",
                "Once",
                "--max-new-tokens",
                "5",
                "--temperature",
                "0",
                "--precision",
                "bf16",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("Once")


def test_training_refuses_fp16_and_runs_in_bf16_on_cpu(corpus, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    base = ["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "a"), "--precision", "fp16"]) == 2
    assert capsys.readouterr().err == (
        "fha: error: --precision fp16 is not offered for training (it needs loss scaling); use bf16 or fp32\n"
    )
    assert main([*base, "--out", str(tmp_path / "b"), "--precision", "bf16"]) == 0
    assert "device: cpu (bf16 autocast)" in caplog.text
    assert len(read_evaluations(tmp_path / "b" / "log_data.csv")) == 3


@pytest.mark.parametrize(
    "argv", [["-v", "train"], ["train", "-v"], ["train", "--verbose"], ["-q", "train"], ["train", "-q"]]
)
def test_output_options_before_or_after_the_command(capsys, argv):
    assert main([*argv, "--preset", "tiny", "--print-config"]) == 0
    assert capsys.readouterr().out.startswith("[model]\n")


def test_verbose_and_quiet_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["train", "-v", "-q", "--preset", "tiny"])
    assert "argument -q/--quiet: not allowed with argument -v/--verbose" in capsys.readouterr().err


@pytest.mark.parametrize(
    "sets", [["attention=mha", "max_steps=77"], ["attention=split", "layer_head_splits=1,2/4,4", "max_steps=77"]]
)
def test_print_config_is_an_experiment_file_that_reads_back(capsys, tmp_path, sets):
    assert (
        main(["train", "--preset", "tiny", *(arg for item in sets for arg in ("--set", item)), "--print-config"]) == 0
    )
    text = capsys.readouterr().out
    tables = tomllib.loads(text)
    assert tables["model"]["attention"] == sets[0].partition("=")[2] and tables["train"]["max_steps"] == 77
    assert "# warmup_steps = (not set)" in text
    expected = build_configs(merge(load_experiment("tiny"), parse_overrides(sets)))
    saved = tmp_path / "resolved.toml"
    saved.write_text(text)
    assert build_configs(load_experiment(config_file=saved)) == expected


def test_resume_of_a_finished_run_says_so_and_touches_nothing(corpus, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(out)]) == 0
    before = (out / "log_data.csv").read_text(), list_checkpoints(out)
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert main(["train", "--resume", str(out)]) == 0
    assert (
        f"{out / 'checkpoints' / 'step-4'}: the run is complete (step 4 of max_steps=4); nothing to do" in caplog.text
    )
    assert "resuming" not in caplog.text
    assert ((out / "log_data.csv").read_text(), list_checkpoints(out)) == before


def test_resume_with_a_larger_budget_says_how_the_schedule_changes(corpus, tmp_path, caplog):
    out = tmp_path / "run"
    sets = [*TINY_SETS, "--set", "max_steps=20", "--set", "checkpoint_interval=10"]
    assert main(["train", "--preset", "tiny", *sets, "--data", str(corpus), "--out", str(out)]) == 0
    caplog.clear()
    assert (
        main(
            [
                "train",
                "--resume",
                str(out / "checkpoints" / "step-10"),
                "--set",
                "max_steps=40",
                "--out",
                str(tmp_path / "longer"),
            ]
        )
        == 0
    )
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.startswith(
        "resuming at step 10 with a changed schedule (max_steps 20 -> 40): the rates differ from step 10 on "
    )
    assert "Before: warmup 1 step (" in warning and "Now: warmup 2 steps (" in warning
    assert "2 cos cycles to 0.001 starting at steps 2, 11" in warning


def test_an_output_path_under_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    data = tmp_path / "stories.txt"
    data.write_text("Once upon a time there was a cat. The cat sat on a mat.\n" * 20)
    out = blocker / "tokenizer.json"
    assert main(["tokenizer", "train", "--data", str(data), "--vocab-size", "64", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fha: error: {out}: cannot write here (File exists)")
    assert err.count("\n") == 1


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only FhaError becomes one line; anything else is a bug and is not hidden."""
    import fha.cli.schedule as schedule_command

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(schedule_command, "run_schedule", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["schedule", "--preset", "tiny"])


def test_verbose_shows_the_traceback_of_an_error(tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="fha")
    assert main(["-v", "generate", str(tmp_path), "--prompt", "Once", "--device", "gpu"]) == 2
    assert capsys.readouterr().err.startswith("fha: error: --device 'gpu'")
    traced = [record for record in caplog.records if record.exc_info]
    assert len(traced) == 1 and traced[0].exc_info[0] is FhaError


def test_a_named_file_that_is_missing_or_unreadable_is_one_fha_error(tmp_path):
    from fha.errors import read_text

    with pytest.raises(FhaError, match=r"^.*missing\.toml: study spec not found$"):
        read_text(tmp_path / "missing.toml", "study spec")
    with pytest.raises(FhaError, match=r": cannot read prompt file \(\[Errno 21\] Is a directory: "):
        read_text(tmp_path, "prompt file")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(FhaError, match=r"latin1\.txt: cannot read config file \('utf-8' codec can't decode"):
        read_text(tmp_path / "latin1.txt", "config file")
