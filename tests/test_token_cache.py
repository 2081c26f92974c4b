"""The token cache under races and silent damage, and `fha cache` to see and clear it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_helpers import write_corpus

from fha.cli import main
from fha.data.cache import clear_cache, list_cache, prepare_tokens
from fha.tokenizer import Tokenizer

TESTS = Path(__file__).resolve().parent
DOCS = ["Once upon a time there was a cat.", "The dog ran to the park.", "Lily and Tom found a red ball."]
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
    "--set",
    "max_steps=4",
    "--set",
    "eval_interval=2",
    "--set",
    "checkpoint_interval=2",
    "--device",
    "cpu",
]
RACE_DOCUMENTS = 4000  # enough text that both runs are still writing the cache when the other starts


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(DOCS, 48)


def test_two_runs_racing_on_an_empty_cache_both_finish(tmp_path):
    corpus = write_corpus(tmp_path / "stories.txt", num_docs=RACE_DOCUMENTS)
    env = {
        **os.environ,
        "PYTHONPATH": f"{TESTS.parent / 'src'}{os.pathsep}{TESTS}",
        "FHA_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fha",
                "train",
                *TINY,
                "--set",
                f"attention={attention}",
                "--data",
                str(corpus),
                "--out",
                str(tmp_path / attention),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for attention in ("fha", "mha")
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
    entries = list_cache(tmp_path / "cache" / "tokens")
    assert [entry.complete for entry in entries] == [True, True]  # train and val, no temporary leftovers
    assert (tmp_path / "fha" / "tokenizer.json").read_text() == (tmp_path / "mha" / "tokenizer.json").read_text()


def test_tokens_overwritten_with_valid_ids_are_caught_by_the_checksum(tokenizer, tmp_path, caplog):
    first = prepare_tokens(DOCS, tokenizer, tmp_path, "train", "src")
    expected = np.array(first.tokens)
    del first
    tokens_file = tmp_path / "train.tokens.bin"
    garbled = np.roll(expected, 1)  # valid ids, the same size: only the checksum can tell
    tokens_file.write_bytes(garbled.tobytes())
    again = prepare_tokens(DOCS, tokenizer, tmp_path, "train", "src")
    assert np.array_equal(again.tokens, expected)
    assert "train.tokens.bin does not match its checksum" in caplog.text and "rebuilding" in caplog.text


def test_cache_files_are_written_under_unique_temporary_names(tokenizer, tmp_path, monkeypatch):
    """Two writers of one entry never share a temporary file (the cause of '...tokens.bin.tmp not found')."""
    opened = []
    real_open = open

    def recording_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", recording_open)
    names = []
    for folder in (tmp_path / "first", tmp_path / "second"):
        opened.clear()
        prepare_tokens(DOCS, tokenizer, folder, "train", "src")
        names.append({name for name in opened if name.endswith(".tmp")})
    monkeypatch.undo()
    assert len(names[0]) == len(names[1]) == 2 and not names[0] & names[1]  # tokens and offsets, never reused
    assert all(name.startswith((".train.tokens.bin.", ".train.offsets.npy.")) for name in names[0] | names[1])


def test_list_and_clear(tokenizer, tmp_path):
    prepare_tokens(DOCS, tokenizer, tmp_path, "train-x", "some text")
    (tmp_path / ".val-x.tokens.bin.abc123.tmp").write_bytes(b"\x00" * 10)  # left by a killed writer
    entries = list_cache(tmp_path)
    assert [(e.name, e.complete, e.source) for e in entries] == [
        ("train-x", True, "some text"),
        (".val-x.tokens.bin.abc123.tmp", False, "(left by an interrupted write)"),
    ]
    assert entries[0].num_tokens == sum(len(tokenizer.encode(d, bos=True, eos=True)) for d in DOCS)
    sizes = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert sum(entry.num_bytes for entry in entries) == sizes
    assert clear_cache(tmp_path) == (4, sizes)
    assert list_cache(tmp_path) == [] and list_cache(tmp_path / "absent") == []


def test_fha_cache_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{TESTS.parent / 'src'}", "FHA_CACHE_DIR": str(tmp_path / "cache")}

    def fha_cache(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "fha", "cache", *args],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=120,
        )
        return result.stdout

    folder = tmp_path / "cache" / "tokens"
    tokenizer = Tokenizer.train(DOCS, 48)
    prepare_tokens(DOCS, tokenizer, folder, "train-x", "stories.txt [train]")
    meta = json.loads((folder / "train-x.json").read_text())
    listing = fha_cache("list").splitlines()
    assert listing[0] == f"token cache: {folder} (set FHA_CACHE_DIR to move it)"
    assert listing[1].split() == [
        "train-x",
        *listing[1].split()[1:3],
        f"{meta['num_tokens']:,}",
        "tokens",
        "stories.txt",
        "[train]",
    ]
    assert listing[2].startswith("1 entry, ") and listing[2].endswith("in all; 'fha cache clear' deletes them")
    assert fha_cache("clear").startswith("removed 3 files (")
    assert list_cache(folder) == []


def test_fha_cache_on_an_empty_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FHA_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["cache"]) == 0
    folder = tmp_path / "cache" / "tokens"
    assert capsys.readouterr().out == f"token cache: {folder} (set FHA_CACHE_DIR to move it)\nempty\n"


def test_fha_cache_rejects_an_unknown_action(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["cache", "purge"])
    assert raised.value.code == 2
    assert "argument action: invalid choice: 'purge'" in capsys.readouterr().err
