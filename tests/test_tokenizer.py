"""Tests for fha.Tokenizer and the `fha tokenizer` command."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from fha.cli import main
from fha.completion import IncrementalDecoder
from fha.data import load_documents
from fha.errors import FhaError
from fha.tokenizer import BOS_ID, EOS_ID, FIRST_BYTE_ID, NUM_BYTES, PAD_ID, UNK_ID, Tokenizer

SMALL_CORPUS = [
    "Once upon a time, there was a little cat.\nThe cat liked to play.",
    "Once upon a time, a dog ran to the park.  It was happy!",
    "The end.\n\nOnce upon a time\tthere was a tree.",
]
SMALL_ALPHABET = sorted(set("".join(SMALL_CORPUS)))
SAMPLE_VOCAB = 2048
SMALL_VOCAB = 80
MIN_CHARS_PER_TOKEN_2048 = 3.6
# Written by Tokenizer.train(SMALL_CORPUS * 4, SMALL_VOCAB) before byte fallback existed, with
# its fingerprint and the ids it gave then: files like it must keep both.
OLD_TOKENIZER_FILE = Path(__file__).parent / "fixtures" / "tokenizer-without-byte-fallback.json"
OLD_FINGERPRINT = "c9564012574427ec"
OLD_ENCODINGS = {
    "Once upon a time, the cat ran.": [47, 45, 33, 56, 55, 57, 66, 68, 9],
    "Xylophone café 🐶": [1, 31, 21, 24, 25, 18, 41, 16, 49, 13, 1, 1, 6, 1],
}
FOREIGN_TEXT = "Xylophone café 🐶"


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


def test_a_tokenizer_written_before_byte_fallback_loads_and_encodes_as_then(small_tokenizer: Tokenizer) -> None:
    old = Tokenizer.load(OLD_TOKENIZER_FILE)
    assert old.fingerprint == OLD_FINGERPRINT and not old.byte_fallback
    for text, ids in OLD_ENCODINGS.items():
        assert old.encode(text) == ids
    assert old.decode(OLD_ENCODINGS[FOREIGN_TEXT]) == "\ufffdylophone ca\ufffd\ufffd \ufffd"
    assert old.count_unknown(FOREIGN_TEXT) == 4 and old.unknown_characters(FOREIGN_TEXT) == {"X", "f", "é", "🐶"}
    assert old.summary() == f"vocab 80 (4 special, 28 characters, 48 merges), fingerprint {OLD_FINGERPRINT}"
    # Training without byte fallback still gives that very tokenizer.
    assert small_tokenizer.fingerprint == OLD_FINGERPRINT


@pytest.fixture(scope="module")
def byte_tokenizer() -> Tokenizer:
    return Tokenizer.train(SMALL_CORPUS * 4, SMALL_VOCAB + NUM_BYTES, byte_fallback=True)


def test_byte_fallback_writes_foreign_characters_as_their_utf8_bytes(byte_tokenizer: Tokenizer) -> None:
    ids = byte_tokenizer.encode(FOREIGN_TEXT)
    assert UNK_ID not in ids
    assert byte_tokenizer.decode(ids) == FOREIGN_TEXT
    byte_ids = [FIRST_BYTE_ID + value for value in "é".encode()]  # 0xC3 0xA9
    assert byte_ids == [FIRST_BYTE_ID + 0xC3, FIRST_BYTE_ID + 0xA9]
    assert ids[10:13] == [FIRST_BYTE_ID + ord("f"), *byte_ids]  # "f" is outside this alphabet too
    assert [byte_tokenizer.id_to_token(i) for i in byte_ids] == ["<0xC3>", "<0xA9>"]
    assert byte_tokenizer.count_unknown(FOREIGN_TEXT) == 0 and byte_tokenizer.unknown_characters(FOREIGN_TEXT) == set()
    assert byte_tokenizer.count_outside_alphabet(FOREIGN_TEXT) == 4
    assert byte_tokenizer.summary().startswith("vocab 336 (4 special, 256 bytes, 28 characters, 48 merges)")


def test_byte_fallback_round_trips_any_text(byte_tokenizer: Tokenizer) -> None:
    rng = random.Random(0)
    characters = [*SMALL_ALPHABET, "é", "ß", "€", "中", "🐶", "\u0301", "\x00", "\U0010ffff"]
    texts = ["".join(rng.choice(characters) for _ in range(rng.randrange(1, 40))) for _ in range(200)]
    for text in texts:
        assert byte_tokenizer.decode(byte_tokenizer.encode(text, bos=True, eos=True)) == text
    assert [byte_tokenizer.decode(ids) for ids in byte_tokenizer.encode_batch(texts)] == texts


def test_byte_fallback_keeps_the_trained_pieces_after_the_bytes(
    byte_tokenizer: Tokenizer, small_tokenizer: Tokenizer
) -> None:
    """The same merges as without byte fallback, their ids moved up by 256: text in the
    alphabet is cut exactly as before."""
    assert byte_tokenizer.vocab_size == small_tokenizer.vocab_size + NUM_BYTES
    assert byte_tokenizer.alphabet == small_tokenizer.alphabet
    for text in SMALL_CORPUS:
        assert byte_tokenizer.encode(text) == [i + NUM_BYTES for i in small_tokenizer.encode(text)]
        assert byte_tokenizer.display(text) == small_tokenizer.display(text)


def test_byte_fallback_survives_saving_and_streams_whole_characters(byte_tokenizer: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "bytes.json"
    byte_tokenizer.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.byte_fallback and loaded.fingerprint == byte_tokenizer.fingerprint
    assert loaded.encode(FOREIGN_TEXT) == byte_tokenizer.encode(FOREIGN_TEXT)
    decoder = IncrementalDecoder(loaded)
    pieces = [decoder.push(token_id) for token_id in loaded.encode("a 🐶!")]
    assert pieces == ["a", " ", "", "", "", "🐶", "!"]  # the dog's four bytes come out as one character
    assert loaded.decode(loaded.encode("🐶")[:2]) == "\ufffd"


def test_byte_fallback_needs_room_for_the_bytes() -> None:
    with pytest.raises(FhaError, match=r"vocab_size must be at least 260 \(4 special tokens \+ 256 bytes\), got 100"):
        Tokenizer.train(SMALL_CORPUS, 100, byte_fallback=True)
    bytes_only = Tokenizer.train(SMALL_CORPUS, 260, byte_fallback=True)
    assert bytes_only.alphabet == frozenset() and bytes_only.decode(bytes_only.encode(FOREIGN_TEXT)) == FOREIGN_TEXT


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
    assert lines[1] == "ids: " + " ".join(map(str, Tokenizer.load(out).encode("Once upon a time")))
    assert lines[2].startswith("4 tokens, 16 characters")
    assert main(["tokenizer", "show", str(out)]) == 0
    assert "fingerprint" in capsys.readouterr().out
    assert main(["tokenizer", "show", str(out), "é"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "ids: 1",
        "1 token, 1 character (1.00 per token), 1 character unknown (<unk>)",
    ]
    with_bytes = tmp_path / "bytes.json"
    argv = [
        "tokenizer",
        "train",
        "--data",
        str(data),
        "--vocab-size",
        "300",
        "--byte-fallback",
        "--out",
        str(with_bytes),
    ]
    assert main(argv) == 0
    assert "256 bytes" in capsys.readouterr().out
    assert main(["tokenizer", "show", str(with_bytes), "é"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "<0xC3>|<0xA9>",
        f"ids: {FIRST_BYTE_ID + 0xC3} {FIRST_BYTE_ID + 0xA9}",
        "2 tokens, 1 character (0.50 per token), 1 character written as UTF-8 bytes",
    ]


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
