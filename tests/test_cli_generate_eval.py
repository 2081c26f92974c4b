"""`fha generate` and `fha eval` end to end, in process and once as a real subprocess."""

import json
import logging
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_run import LINES, make_run

from fha import Tokenizer
from fha.cli import main
from fha.runs.folder import MODEL_CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "tiny")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "valid.txt"
    path.write_text("\n<|endoftext|>\n".join(LINES) + "\n", encoding="utf-8")
    return path


def fha(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- generate
@pytest.mark.slow
def test_generate_prints_prompt_then_continuation(capsys, caplog, run_dir):
    caplog.set_level(logging.INFO)
    code, out, _ = fha(
        capsys, "generate", run_dir, "--prompt", "Tom said", "--temperature", "0", "--max-new-tokens", "12"
    )
    assert code == 0
    assert out.startswith("Tom said") and len(out) > len("Tom said\n")
    assert "device:" in caplog.text and "device:" not in out


@pytest.mark.slow
def test_generate_greedy_and_seeded_are_reproducible(capsys, run_dir):
    for options in (["--temperature", "0"], ["--temperature", "1.2", "--seed", "7", "--top-p", "0.9"]):
        outputs = {
            fha(capsys, "generate", run_dir, "--prompt", "Once", "--max-new-tokens", "20", *options)[1]
            for _ in range(2)
        }
        assert len(outputs) == 1


@pytest.mark.slow
@pytest.mark.parametrize("temperature", ["0", "1.0"])
def test_generate_batched_prompt_file_equals_one_prompt_at_a_time(capsys, run_dir, tmp_path, temperature):
    prompts = ["Once upon a time", "Tom", "She liked to play in the"]
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(prompts[:2]) + "\n\n" + prompts[2] + "\n", encoding="utf-8")
    common = ["--max-new-tokens", "16", "--temperature", temperature, "--seed", "3"]
    code, out, _ = fha(capsys, "generate", run_dir, "--prompt-file", prompt_file, *common)
    assert code == 0
    blocks = [block.rstrip("\n") for block in out.split("=== prompt ")[1:]]
    assert len(blocks) == len(prompts)
    for number, (prompt, block) in enumerate(zip(prompts, blocks, strict=True), start=1):
        header, text = block.split("\n", 1)
        assert header == f"{number} ==="
        alone = fha(capsys, "generate", run_dir, "--prompt", prompt, *common)[1].rstrip("\n")
        assert text == alone and text.startswith(prompt)


@pytest.mark.slow
def test_generate_compiled_writes_what_eager_writes(capsys, run_dir):
    common = ["--prompt", "Once upon a time", "--prompt", "Tom", "--max-new-tokens", "12", "--temperature", "0"]
    code, eager, _ = fha(capsys, "generate", run_dir, *common)
    assert code == 0
    assert fha(capsys, "generate", run_dir, *common, "--compile")[:2] == (0, eager)


def test_generate_num_samples_prints_every_sample(capsys, run_dir):
    code, out, _ = fha(
        capsys, "generate", run_dir, "--prompt", "Once", "--num-samples", "3", "--seed", "1", "--max-new-tokens", "8"
    )
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("===")] == [
        f"=== prompt 1, sample {k} ===" for k in (1, 2, 3)
    ]


@pytest.mark.slow
def test_generate_handles_prompts_longer_than_the_context(capsys, caplog, run_dir):
    prompt = " ".join(LINES) + " Once upon a"
    code, out, _ = fha(capsys, "generate", run_dir, "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "8")
    assert code == 0 and out.startswith(prompt)
    assert "sees only the last" in caplog.text


@pytest.mark.parametrize(
    "option",
    [
        ["--top-k", "0"],
        ["--top-p", "1.5"],
        ["--temperature", "-1"],
        ["--num-samples", "0"],
        ["--max-new-tokens", "-2"],
        ["--temperature", "nan"],
        ["--temperature", "inf"],
    ],
)
def test_generate_rejects_bad_options(capsys, run_dir, option):
    code, out, err = fha(capsys, "generate", run_dir, "--prompt", "x", *option)
    assert code == 2 and out == ""
    assert err.startswith("fha: error: " + option[0])


# ----------------------------------------------------------------------------- eval
def test_eval_json_is_exactly_one_object(capsys, run_dir, data_file):
    code, out, _ = fha(capsys, "eval", run_dir, "--data", data_file, "--json", "--top-k", "3")
    assert code == 0
    metrics = json.loads(out)
    assert set(metrics) == {
        "loss_nats",
        "perplexity",
        "bits_per_byte",
        "top1_accuracy",
        "top3_accuracy",
        "tokens_scored",
        "bytes_scored",
    }
    assert metrics["bytes_scored"] == sum(len(line.encode("utf-8")) for line in LINES)
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["loss_nats"])
    assert 0 <= metrics["top1_accuracy"] <= metrics["top3_accuracy"] <= 1


def test_eval_table_and_guess_view(capsys, run_dir, data_file):
    code, out, _ = fha(capsys, "eval", run_dir, "--data", data_file, "--max-documents", "2")
    assert code == 0
    for label in (
        "loss_nats",
        "perplexity",
        "bits_per_byte",
        "top1_accuracy",
        "top5_accuracy",
        "top-5 guesses",
        "2 documents",
    ):
        assert label in out
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    first_piece = tokenizer.id_to_token(tokenizer.encode(LINES[0])[0])
    assert f"   1  {first_piece!r}" in out  # the first true token of the first document


# ----------------------------------------------------------------------------- bad run folders
def _bad_run_dirs(tmp_path, run_dir):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a run")
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in (MODEL_CONFIG_FILE, TOKENIZER_FILE):
        (corrupt / name).write_bytes((run_dir / name).read_bytes())
    (corrupt / MODEL_FILE).write_bytes(b"\x00garbage" * 10)
    return {"missing": tmp_path / "nope", "file": a_file, "empty": empty, "corrupt": corrupt}


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "corrupt"])
@pytest.mark.parametrize("command", ["generate", "eval"])
def test_bad_run_folders_give_one_line_errors(capsys, tmp_path, run_dir, data_file, kind, command):
    bad = _bad_run_dirs(tmp_path, run_dir)[kind]
    extra = ["--prompt", "x"] if command == "generate" else ["--data", data_file]
    code, out, err = fha(capsys, command, bad, *extra)
    assert code == 2 and out == ""
    error_lines = [line for line in err.splitlines() if line.startswith("fha: error: ")]
    assert len(error_lines) == 1 and str(bad) in error_lines[0]
    assert "Traceback" not in err


def test_missing_data_file_is_a_clear_error(capsys, run_dir, tmp_path):
    code, _, err = fha(capsys, "eval", run_dir, "--data", tmp_path / "none.txt")
    assert code == 2 and "fha: error:" in err and "none.txt" in err


@pytest.mark.slow
def test_subprocess_bad_run_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fha", "generate", str(tmp_path / "nope"), "--prompt", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == f"fha: error: {tmp_path / 'nope'}: no such run folder"
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_subprocess_eval_json_keeps_logs_off_stdout(run_dir, data_file):
    result = subprocess.run(
        [sys.executable, "-m", "fha", "eval", str(run_dir), "--data", str(data_file), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0
    assert isinstance(json.loads(result.stdout), dict) and result.stdout.count("\n") == 1
    assert "device:" in result.stderr


def test_example_script_runs(capsys):
    example = runpy.run_path(str(EXAMPLES_DIR / "generate_and_evaluate.py"))
    example["main"]([])
    out = capsys.readouterr().out
    assert "perplexity" in out and "bits_per_byte" in out
    assert "\nOnce upon a time" in out and "\nTom had" in out


def test_eval_rejects_top_k_beyond_the_vocabulary(capsys, run_dir, data_file):
    code, out, err = fha(capsys, "eval", run_dir, "--data", data_file, "--top-k", "100000")
    assert code == 2 and out == ""
    assert err.startswith("fha: error: --top-k 100000 exceeds the vocabulary") and len(err.strip().splitlines()) == 1
