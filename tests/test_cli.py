import subprocess
import sys

import pytest

from fha.cli import main


@pytest.mark.parametrize(
    "argv,expected",
    [
        ([], "the following arguments are required: COMMAND"),
        (["nope"], "invalid choice: 'nope'"),
        (["generate", "run", "--top-k", "abc"], "generate: argument --top-k: invalid int value: 'abc'"),
        (["tokenizer", "train", "--vocab-size", "64"], "tokenizer train: the following arguments are required"),
    ],
)
def test_usage_mistakes_are_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("fha: error: ") and expected in err and len(err.strip().splitlines()) == 1


def test_every_subcommand_has_help(capsys):
    for command in ("tokenizer", "train", "schedule", "generate", "eval", "compare", "inspect"):
        with pytest.raises(SystemExit) as stop:
            main([command, "--help"])
        assert stop.value.code == 0
        assert f"usage: fha {command}" in capsys.readouterr().out


@pytest.mark.slow
def test_python_dash_m_runs_the_same_entry_point():
    done = subprocess.run([sys.executable, "-m", "fha", "--help"], capture_output=True, text=True, check=True)
    assert "usage: fha" in done.stdout and "train" in done.stdout


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`fha inspect | head -1`: the closed pipe ends fha with the shell's SIGPIPE status, no traceback."""
    command = [sys.executable, "-m", "fha", "inspect", "--preset", "seed-0.3m"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        process.stdout.close()
        stderr = process.stderr.read()
    assert process.returncode == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
