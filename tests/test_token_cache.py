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
from fha.data.cache_location import CACHE_ENV, token_cache_dir
from fha.tokenizer import Tokenizer
from fha.train.corpus import DataSpec, read_documents, tokenize_splits

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


@pytest.mark.slow
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


def test_one_file_at_two_paths_is_cached_once(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_corpus(tmp_path / "a" / "stories.txt")
    second = tmp_path / "b" / "copy.txt"
    second.write_bytes(first.read_bytes())
    tokenizer = Tokenizer.train(DOCS, 48)
    folder = token_cache_dir()
    arrays = []
    for path in (first, second):
        spec = DataSpec(str(path), None, val_fraction=0.2, split_seed=0)
        arrays.append(tokenize_splits(read_documents(spec), tokenizer, spec))
        monkeypatch.setattr(Tokenizer, "encode_batch", _no_encoding)  # the copy must find the first's entries
    entries = list_cache(folder)  # one entry per split, named by the first path that filled it
    rule = "val_fraction=0.2 split_seed=0"
    assert [entry.source for entry in entries] == [f"{first} [{split} of {rule}]" for split in ("train", "val")]
    for split in ("train", "val"):
        assert np.array_equal(arrays[0][split].tokens, arrays[1][split].tokens)


def _no_encoding(*args, **kwargs):
    raise AssertionError("the cache should have been reused")


SESSION_TESTS = """
import pytest

from fha.data.cache import prepare_tokens
from fha.data.cache_location import token_cache_dir
from fha.tokenizer import Tokenizer

DOCS = ["Once upon a time there was a cat.", "The dog ran to the park."]


@pytest.fixture(scope="session")
def shared_tokens():
    return prepare_tokens(DOCS, Tokenizer.train(DOCS, 40), token_cache_dir(), "shared", "session fixture")


@pytest.fixture(scope="module")
def module_tokens():
    return prepare_tokens(DOCS, Tokenizer.train(DOCS, 41), token_cache_dir(), "module", "module fixture")


def test_uses_both(shared_tokens, module_tokens):
    assert shared_tokens.num_documents == module_tokens.num_documents == 2
"""


def test_a_test_session_leaves_the_users_cache_alone(pytester, monkeypatch, tmp_path):
    """Session and module fixtures are set up before a test's own cache folder: they too must
    cache in a folder of the test session, never in the user's ~/.cache/fha."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(CACHE_ENV)
    pytester.syspathinsert(TESTS)
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(test_session=SESSION_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not (home / ".cache").exists()
