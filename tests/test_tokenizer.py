"""Tests for fha.Tokenizer and the `fha tokenizer` command."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from fha.cli import main
from fha.data import load_documents
from fha.errors import FhaError
from fha.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

SMALL_CORPUS = [
    "Once upon a time, there was a little cat.\nThe cat liked to play.",
    "Once upon a time, a dog ran to the park.  It was happy!",
    "The end.\n\nOnce upon a time\tthere was a tree.",
]
SMALL_ALPHABET = sorted(set("".join(SMALL_CORPUS)))
SAMPLE_VOCAB = 2048
SMALL_VOCAB = 80
MIN_CHARS_PER_TOKEN_2048 = 3.6


@pytest.fixture(scope="module")
def small_tokenizer() -> Tokenizer:
    return Tokenizer.train(SMALL_CORPUS * 4, SMALL_VOCAB)


@pytest.fixture(scope="module")
def sample_tokenizer(sample_dir: Path) -> Tokenizer:
    """The one tokenizer trained on the full sample train.txt."""
    return Tokenizer.train(load_documents(sample_dir / "train.txt"), SAMPLE_VOCAB)


def test_round_trip_every_sample_story(sample_tokenizer: Tokenizer, sample_dir: Path) -> None:
    stories = load_documents(sample_dir / "train.txt") + load_documents(sample_dir / "valid.txt")
    encoded = sample_tokenizer.encode_batch(stories, bos=True, eos=True)
    for story, ids in zip(stories, encoded, strict=True):
        assert ids == sample_tokenizer.encode(story, bos=True, eos=True)
        expected = "".join(c if c in sample_tokenizer.alphabet else "\ufffd" for c in story)
        assert sample_tokenizer.decode(ids) == expected
        assert ids.count(UNK_ID) == sample_tokenizer.count_unknown(story)


def test_random_alphabet_strings_round_trip(sample_tokenizer: Tokenizer) -> None:
    rng = random.Random(0)
    characters = [*sorted(sample_tokenizer.alphabet), " ", " ", "\n"]
    for _ in range(300):
        text = "".join(rng.choice(characters) for _ in range(rng.randrange(1, 60)))
        assert sample_tokenizer.decode(sample_tokenizer.encode(text)) == text


def test_sample_compression_and_vocab_size(sample_tokenizer: Tokenizer, sample_dir: Path) -> None:
    assert sample_tokenizer.vocab_size == SAMPLE_VOCAB
    valid = load_documents(sample_dir / "valid.txt")
    num_tokens = sum(len(ids) for ids in sample_tokenizer.encode_batch(valid))
    assert sum(len(doc) for doc in valid) / num_tokens >= MIN_CHARS_PER_TOKEN_2048


@pytest.mark.parametrize(
    "text",
    ["", " ", "  two  spaces  ", "\n\nleading newlines", "trailing newline\n", "cat\tand\n \n lit", "a.c,e!"],
)
def test_whitespace_round_trips_exactly(small_tokenizer: Tokenizer, text: str) -> None:
    assert small_tokenizer.decode(small_tokenizer.encode(text)) == text


def test_vocab_size_counts_specials_and_ids_are_fixed(small_tokenizer: Tokenizer) -> None:
    assert small_tokenizer.vocab_size == SMALL_VOCAB
    names = [small_tokenizer.id_to_token(i) for i in range(4)]
    assert names == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert (small_tokenizer.pad_id, small_tokenizer.unk_id, small_tokenizer.bos_id, small_tokenizer.eos_id) == (
        0,
        1,
        2,
        3,
    )
    with pytest.raises(ValueError):
        small_tokenizer.id_to_token(small_tokenizer.vocab_size)


def test_character_level_when_vocab_leaves_no_room_for_merges() -> None:
    vocab_size = len(SMALL_ALPHABET) + 4
    tokenizer = Tokenizer.train(SMALL_CORPUS, vocab_size)
    assert tokenizer.vocab_size == vocab_size
    assert sorted(tokenizer.alphabet) == SMALL_ALPHABET
    text = SMALL_CORPUS[0]
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)
    assert [tokenizer.id_to_token(i) for i in ids] == list(text)
    assert tokenizer.decode(ids) == text


def test_small_vocab_keeps_most_frequent_characters() -> None:
    tokenizer = Tokenizer.train(["aaaaaa bbbb c", "aaaa bb"], 6)
    assert tokenizer.alphabet == {"a", "b"}
    assert tokenizer.encode("ab c") == [tokenizer.encode("a")[0], tokenizer.encode("b")[0], UNK_ID, UNK_ID]


def test_unknown_characters_become_unk_and_are_counted(small_tokenizer: Tokenizer) -> None:
    text = "The cat saw a €uro and a ☃."
    ids = small_tokenizer.encode(text)
    assert ids.count(UNK_ID) == small_tokenizer.count_unknown(text) == 2
    assert small_tokenizer.unknown_characters(text) == {"€", "☃"}
    assert small_tokenizer.decode(ids) == text.replace("€", "\ufffd").replace("☃", "\ufffd")
    assert small_tokenizer.encode_batch([text])[0] == ids


def test_special_token_placement(small_tokenizer: Tokenizer) -> None:
    plain = small_tokenizer.encode("the cat")
    assert small_tokenizer.encode("the cat", bos=True) == [BOS_ID, *plain]
    assert small_tokenizer.encode("the cat", eos=True) == [*plain, EOS_ID]
    assert small_tokenizer.encode_batch(["the cat", "a dog"], bos=True, eos=True)[0] == [BOS_ID, *plain, EOS_ID]
    assert small_tokenizer.decode([BOS_ID, *plain, EOS_ID, PAD_ID, PAD_ID]) == "the cat"
    # Text spelling a special token's name is ordinary text, never the special id.
    literal = small_tokenizer.encode("a <bos> b <eos>")
    assert BOS_ID not in literal and EOS_ID not in literal


def test_decode_accepts_arrays_and_rejects_bad_ids(small_tokenizer: Tokenizer) -> None:
    ids = small_tokenizer.encode("the cat", bos=True)
    assert small_tokenizer.decode(torch.tensor(ids)) == small_tokenizer.decode(np.array(ids)) == "the cat"
    with pytest.raises(ValueError, match="token ids"):
        small_tokenizer.decode([*ids, -100])
    with pytest.raises(ValueError, match="token ids"):
        small_tokenizer.decode([small_tokenizer.vocab_size])


def test_display_shows_the_cut(small_tokenizer: Tokenizer) -> None:
    assert small_tokenizer.display("Once upon a time") == "Once| upon| a| time"
    shown = small_tokenizer.display("Once\nupon")
    assert shown.startswith("Once|\\n") and "\n" not in shown


def test_training_is_deterministic(sample_dir: Path) -> None:
    documents = load_documents(sample_dir / "valid.txt")
    first, second = Tokenizer.train(documents, 512), Tokenizer.train(documents, 512)
    assert first.fingerprint == second.fingerprint
    assert [first.id_to_token(i) for i in range(512)] == [second.id_to_token(i) for i in range(512)]


def test_save_load_keeps_fingerprint_and_encoding(small_tokenizer: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tok.json"
    small_tokenizer.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.fingerprint == small_tokenizer.fingerprint
    assert loaded.encode(SMALL_CORPUS[1]) == small_tokenizer.encode(SMALL_CORPUS[1])
    assert Tokenizer.train(SMALL_CORPUS, 60).fingerprint != small_tokenizer.fingerprint


def test_load_errors_are_one_line(small_tokenizer: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(FhaError, match="not found"):
        Tokenizer.load(tmp_path / "missing.json")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"model": ', encoding="utf-8")
    with pytest.raises(FhaError, match="not a valid tokenizer file") as info:
        Tokenizer.load(corrupt)
    assert "\n" not in str(info.value)
    swapped = tmp_path / "swapped.json"
    small_tokenizer.save(swapped)
    payload = json.loads(swapped.read_text(encoding="utf-8"))
    payload["added_tokens"][0]["content"], payload["added_tokens"][2]["content"] = "<bos>", "<pad>"
    vocab = payload["model"]["vocab"]
    vocab["<pad>"], vocab["<bos>"] = vocab["<bos>"], vocab["<pad>"]
    swapped.write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(FhaError, match="<pad> to id 0"):
        Tokenizer.load(swapped)


def test_warns_when_text_supports_fewer_tokens(caplog: pytest.LogCaptureFixture) -> None:
    tokenizer = Tokenizer.train(["ab ab"], 50)
    assert tokenizer.vocab_size < 50
    assert "supports only" in caplog.text


def test_train_rejects_bad_input() -> None:
    with pytest.raises(FhaError, match="vocab_size"):
        Tokenizer.train(SMALL_CORPUS, 4)
    with pytest.raises(FhaError, match="empty"):
        Tokenizer.train(["", ""], 100)


def test_cli_train_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "stories.txt"
    data.write_text("\n<|endoftext|>\n".join(SMALL_CORPUS * 3) + "\n", encoding="utf-8")
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", "--data", str(data), str(data), "--vocab-size", "100", "--out", str(out)]) == 0
    assert "vocab 100" in capsys.readouterr().out
    assert Tokenizer.load(out).vocab_size == 100
    assert main(["tokenizer", "show", str(out), "Once upon a time"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Once| upon| a| time"
    assert lines[1].startswith("4 tokens, 16 characters")
    assert main(["tokenizer", "show", str(out)]) == 0
    assert "fingerprint" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tokenizer", "show", "{tmp}/missing.json", "x"], "missing.json: tokenizer file not found"),
        (
            ["tokenizer", "train", "--data", "{tmp}/missing.txt", "--vocab-size", "50", "--out", "{tmp}/t.json"],
            "missing.txt",
        ),
        (["tokenizer", "train", "--data", "{tmp}/empty.txt", "--vocab-size", "50", "--out", "{tmp}/t.json"], "empty"),
        (["tokenizer", "train", "--data", "{tmp}/ok.txt", "--vocab-size", "2", "--out", "{tmp}/t.json"], "vocab_size"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    (tmp_path / "ok.txt").write_text("some text", encoding="utf-8")
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fha: error: ") and message in err
    assert err.count("\n") == 1
