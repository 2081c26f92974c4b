"""Progress as a bar on a terminal, plain lines elsewhere, nothing with --quiet."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_cli import TINY_SETS

from fha import progress
from fha.progress import Progress, format_duration, short_count, track

PLAIN_LINE = re.compile(
    r"^step \d+/6 \| loss \d+\.\d{4} \| lr \d\.\d\de-\d\d \| \d+(\.\d)?k? tok/s \| (eta|elapsed) "
    r"\d+:\d\d$"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def auto_mode():
    progress.set_mode("auto")
    yield
    progress.set_mode("auto")


def test_plain_lines_every_tenth_and_at_the_end():
    stream = io.StringIO()
    with Progress(100, "step", stream=stream) as bar:
        for step in range(95):
            bar.set_fields(loss=f"{step:.2f}", **{"tok/s": short_count(61_000)})
            bar.update()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(" | ")[0] for line in lines] == [
        f"step {n}/100" for n in (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
    ]
    assert lines[0].startswith("step 10/100 | loss 9.00 | 61k tok/s | eta ")


def test_a_terminal_gets_a_bar_and_quiet_gets_nothing():
    terminal = Terminal()
    with Progress(10, "step", stream=terminal) as bar:
        bar.update(10)
    assert "\r" in terminal.getvalue() and "10/10" in terminal.getvalue()

    progress.set_mode("off")
    silent = io.StringIO()
    with Progress(10, "step", stream=silent) as bar:
        bar.update(10)
    assert silent.getvalue() == ""


def test_track_counts_every_item(capsys):
    assert list(track(range(5), 5, "evaluating batch")) == [0, 1, 2, 3, 4]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" | ")[0] for line in lines] == [f"evaluating batch {n}/5" for n in range(1, 6)]


def test_bad_mode_names_the_choices():
    with pytest.raises(ValueError, match="^progress mode must be one of auto, bar, lines, off, got 'loud'$"):
        progress.set_mode("loud")


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (41.4, "0:41"), (725, "12:05"), (3723, "1:02:03")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("value, text", [(950, "950"), (61_234, "61k"), (1_234, "1.2k"), (2_500_000, "2.5M")])
def test_counts(value, text):
    assert short_count(value) == text


EVALUATION_LINE = re.compile(r"^step (\d+): train loss \d+\.\d{4}, val loss \d+\.\d{4}, perplexity \d+\.\d\d")
LR = re.compile(r"\blr[ =](\S+?)[,|\s]")
TOKENIZERS_BARS = ("Pre-processing sequences", "Tokenize words", "Count pairs", "Compute merges")
TERMINAL_SIZE = (40, 120)  # rows, columns


def _train_command(corpus: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fha",
        *extra,
        "train",
        "--preset",
        "tiny",
        *TINY_SETS,
        "--set",
        "max_steps=6",
        "--data",
        str(corpus),
        "--out",
        str(tmp_path / "run"),
    ]


def _train_to_a_file(corpus, tmp_path, *extra: str) -> str:
    """``fha train ... > log.txt 2>&1``, as a cluster job runs it."""
    log_file = tmp_path / "log.txt"
    env = {**os.environ, "FHA_CACHE_DIR": str(tmp_path / "cache")}
    with open(log_file, "w") as handle:
        subprocess.run(
            _train_command(corpus, tmp_path, *extra),
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            check=True,
            timeout=300,
        )
    return log_file.read_text()


def _train_on_a_terminal(corpus: Path, tmp_path: Path) -> str:
    """Everything ``fha train`` writes to a terminal (a pseudo-terminal here), escape codes and all."""
    pty = pytest.importorskip("pty")
    fcntl, termios, struct = (pytest.importorskip(name) for name in ("fcntl", "termios", "struct"))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", *TERMINAL_SIZE, 0, 0))
    env = {**os.environ, "FHA_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen(
        _train_command(corpus, tmp_path), stdin=follower, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    output = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0, output.decode("utf-8", "replace")
    return output.decode("utf-8", "replace")


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows at the end: a carriage return goes back to the line's start,
    ``ESC[2K`` erases the line, anything else overwrites."""
    lines: list[list[str]] = [[]]
    column = 0
    for part in re.split(r"(\x1b\[2K|\r|\n)", raw.replace("\r\n", "\n")):
        if part == "\x1b[2K":
            lines[-1] = []
        elif part == "\r":
            column = 0
        elif part == "\n":
            lines.append([])
            column = 0
        else:
            line = lines[-1]
            line[column : column + len(part)] = part
            column += len(part)
    return ["".join(line).rstrip() for line in lines if "".join(line).strip()]


@pytest.mark.slow
def test_a_terminal_shows_one_bar_and_none_of_the_tokenizer_library(corpus, tmp_path):
    raw = _train_on_a_terminal(corpus, tmp_path)
    assert not [name for name in TOKENIZERS_BARS if name in raw]
    screen = _screen(raw)
    bars = [line for line in screen if line.startswith("step:")]
    assert len(bars) == 1 and "6/6" in bars[0], screen
    assert screen.index(bars[0]) == screen.index(next(line for line in screen if line.startswith("finished"))) - 1
    evaluations = [line for line in screen if EVALUATION_LINE.match(line)]
    assert len(evaluations) == 4 and "tokens/s" not in evaluations[0]
    assert all(re.fullmatch(r"\d\.\d\de-\d\d", rate) for rate in LR.findall(" ".join(screen) + " ")), screen


@pytest.mark.slow
def test_training_log_in_a_file_has_plain_lines_and_the_evaluations(corpus, tmp_path):
    text = _train_to_a_file(corpus, tmp_path)
    assert "\r" not in text
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("step ") and " | " in line] == [
        line for line in lines if PLAIN_LINE.match(line)
    ]
    assert [line.split(" | ")[0] for line in lines if PLAIN_LINE.match(line)] == [f"step {n}/6" for n in range(1, 7)]
    evals = [line for line in lines if EVALUATION_LINE.match(line)]
    assert [line.split(":")[0] for line in evals] == ["step 0", "step 2", "step 4", "step 6"]
    assert all("(over 4 random windows)" in line for line in evals)  # estimates, not a whole text
    assert "tokens/s" not in evals[0] and all(line.endswith(" tokens/s") for line in evals[1:])
    assert {rate for rate in LR.findall(text) if not re.fullmatch(r"\d\.\d\de-\d\d", rate)} == set()
    assert not [name for name in TOKENIZERS_BARS if name in text]
    assert lines.index(evals[-1]) > lines.index(next(line for line in lines if line.startswith("step 6/6")))
    assert lines[-1].startswith("finished 6 steps")


@pytest.mark.slow
def test_quiet_training_prints_nothing(corpus, tmp_path):
    assert _train_to_a_file(corpus, tmp_path, "--quiet") == ""


@pytest.mark.slow
def test_eval_and_batched_generate_report_plain_lines(capsys, tmp_path, tiny_run_dir):
    from tiny_run import LINES

    from fha.cli import main

    run_dir = tiny_run_dir
    data = tmp_path / "valid.txt"
    data.write_text("\n<|endoftext|>\n".join(LINES) + "\n")
    assert main(["eval", str(run_dir), "--data", str(data), "--json", "--batch-size", "1"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and re.search(r"^evaluating batch (\d+)/\1 \| elapsed \d+:\d\d$", err, re.MULTILINE)
    assert (
        main(
            [
                "generate",
                str(run_dir),
                "--prompt",
                "Lily",
                "--prompt",
                "Tom",
                "--max-new-tokens",
                "5",
                "--temperature",
                "0",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "\r" not in err and re.search(r"^generating token \d/5 \| elapsed", err, re.MULTILINE)
    assert main(["-q", "eval", str(run_dir), "--data", str(data), "--json"]) == 0
    assert "evaluating" not in capsys.readouterr().err
