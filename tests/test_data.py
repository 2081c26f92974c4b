"""Tests for fha.data: document sources, the token cache and the batch samplers."""

from __future__ import annotations

import itertools
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fha.data import (
    IGNORE_INDEX,
    PackedBatches,
    PaddedBatches,
    describe_source,
    eval_windows,
    load_documents,
    load_splits,
    prepare_tokens,
    sources,
    token_dtype,
)
from fha.errors import FhaError
from fha.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

DOCS = ["First story.\nIt has two lines.", "Second story, one line.", "Third: ünïcödé “quotes” too."]
OFFLINE_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(DOCS * 3, 64)


# ---------------------------------------------------------------- sources
def test_endoftext_format(tmp_path: Path) -> None:
    path = tmp_path / "stories.txt"
    path.write_text("".join(f"{doc}\n<|endoftext|>\n" for doc in DOCS), encoding="utf-8")
    assert load_documents(path) == DOCS


def test_blank_line_format(tmp_path: Path) -> None:
    path = tmp_path / "stories.txt"
    docs = ["One paragraph doc.", "Two line\ndoc.", "Last."]
    path.write_text("\n\n".join(docs) + "\n\n \n", encoding="utf-8")
    assert load_documents(path) == docs


def test_jsonl_format(tmp_path: Path) -> None:
    path = tmp_path / "stories.jsonl"
    path.write_text(
        "\n".join(json.dumps({"text": doc, "id": i}) for i, doc in enumerate(DOCS)) + "\n\n", encoding="utf-8"
    )
    assert load_documents(path) == DOCS


def test_windows_line_endings_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "stories.txt"
    path.write_bytes("\ufeffA\r\nB\r\n<|endoftext|>\r\nC\r\n".encode("utf-8"))
    assert load_documents(path) == ["A\nB", "C"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"", "data file is empty"),
        ("blank.txt", b"  \n\n", "data file is empty"),
        ("separators.txt", b"<|endoftext|>\n<|endoftext|>\n", "no documents"),
        ("latin1.txt", "line one\ncaf\u00e9".encode("latin-1"), "not valid UTF-8 (byte 0xe9 at offset 12, line 2)"),
        ("bad.jsonl", b'{"text": "ok"}\n{"text": \n', "bad.jsonl:2: invalid JSON"),
        ("field.jsonl", b'{"body": "no text field"}\n', "field.jsonl:1: expected an object with a string field 'text'"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FhaError) as info:
        load_documents(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FhaError, match=r"missing\.txt: data file not found"):
        load_documents(tmp_path / "missing.txt")


def test_sample_files_load(sample_dir: Path) -> None:
    train, valid = load_documents(sample_dir / "train.txt"), load_documents(sample_dir / "valid.txt")
    assert (len(train), len(valid)) == (910, 101)
    assert all("<|endoftext|>" not in doc and doc == doc.strip() for doc in train + valid)


def test_single_file_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt"
    docs = [f"Document number {i}." for i in range(100)]
    path.write_text("\n\n".join(docs), encoding="utf-8")
    splits = load_splits(str(path), val_fraction=0.1, seed=3)
    assert splits == load_splits(str(path), val_fraction=0.1, seed=3)
    assert splits != load_splits(str(path), val_fraction=0.1, seed=4)
    assert len(splits["val"]) == 10 and len(splits["train"]) == 90
    assert sorted(splits["train"] + splits["val"]) == sorted(docs)
    assert splits["train"] == [doc for doc in docs if doc in set(splits["train"])]  # order kept


def test_split_with_separate_validation_file(tmp_path: Path) -> None:
    train, val = tmp_path / "train.txt", tmp_path / "val.jsonl"
    train.write_text("a\n\nb", encoding="utf-8")
    val.write_text('{"text": "c"}\n', encoding="utf-8")
    assert load_splits(train, val) == {"train": ["a", "b"], "val": ["c"]}
    single = tmp_path / "single.txt"
    single.write_text("only one document", encoding="utf-8")
    with pytest.raises(FhaError, match="at least 2 documents"):
        load_splits(single)


def test_tinystories_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(FhaError, match=r"HF_HUB_OFFLINE is set.*pass local text files") as info:
        load_splits("tinystories", cache_dir=tmp_path)
    assert time.monotonic() - started < OFFLINE_TIMEOUT_S
    assert "\n" not in str(info.value)


def test_tinystories_unreachable_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(FhaError, match=r"unreachable.*pass local text files"):
        load_splits("tinystories", cache_dir=tmp_path)


def test_tinystories_uses_cached_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {}
    for split, docs in {"train": DOCS, "val": DOCS[:1]}.items():
        files[split] = tmp_path / f"{split}.txt"
        files[split].write_text("".join(f"{doc}\n<|endoftext|>\n" for doc in docs), encoding="utf-8")
    monkeypatch.setattr(sources, "_cached_tinystories", lambda cache_dir: files)
    assert load_splits("tinystories") == {"train": DOCS, "val": DOCS[:1]}


# ---------------------------------------------------------------- token cache
def test_prepare_tokens_layout(tokenizer: Tokenizer, tmp_path: Path) -> None:
    docs = [*DOCS, "Third story: ☃"]
    data = prepare_tokens(docs, tokenizer, tmp_path, "train", "test-docs")
    assert data.tokens.dtype == np.uint16
    assert data.num_documents == len(docs)
    for i, doc in enumerate(docs):
        doc_tokens = data.tokens[data.doc_offsets[i] : data.doc_offsets[i + 1]].tolist()
        assert doc_tokens == tokenizer.encode(doc, bos=True, eos=True)
        assert doc_tokens[0] == BOS_ID and doc_tokens[-1] == EOS_ID
    assert data.num_tokens == int(data.doc_offsets[-1])
    assert data.num_bytes == sum(len(doc.encode("utf-8")) for doc in docs)
    assert data.num_chars == sum(len(doc) for doc in docs)
    assert data.num_unknown == 1 == int(np.count_nonzero(data.tokens == UNK_ID))
    meta = json.loads((tmp_path / "train.json").read_text(encoding="utf-8"))
    assert meta["tokenizer_fingerprint"] == tokenizer.fingerprint and meta["source"] == "test-docs"
    assert meta["unknown_examples"] == ["☃"]


def test_token_dtype_follows_vocab() -> None:
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def _no_encoding(*args, **kwargs):
    raise AssertionError("the cache should have been reused")


def test_cache_reuse_and_invalidation(tokenizer: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = prepare_tokens(DOCS, tokenizer, tmp_path, "train", "source-a")
    with monkeypatch.context() as patch:
        patch.setattr(Tokenizer, "encode_batch", _no_encoding)
        reused = prepare_tokens(DOCS, tokenizer, tmp_path, "train", "source-a")
    assert np.array_equal(reused.tokens, first.tokens)
    with monkeypatch.context() as patch:  # the same documents read from elsewhere: known by their content
        patch.setattr(Tokenizer, "encode_batch", _no_encoding)
        assert prepare_tokens(DOCS, tokenizer, tmp_path, "train", "source-b").source == "source-a"
    changed = [*DOCS[:-1], DOCS[-1].replace(".", ",")]  # as many documents and characters, other text
    edited = prepare_tokens(changed, tokenizer, tmp_path, "train", "source-a")
    assert np.array_equal(edited.tokens, np.concatenate(tokenizer.encode_batch(changed, bos=True, eos=True)))
    assert not np.array_equal(edited.tokens, first.tokens)
    other_tokenizer = Tokenizer.train(DOCS, 40)
    rebuilt = prepare_tokens(DOCS, other_tokenizer, tmp_path, "train", "source-a")
    assert rebuilt.tokenizer_fingerprint == other_tokenizer.fingerprint
    assert rebuilt.num_tokens > first.num_tokens  # fewer merges, more tokens
    assert prepare_tokens(DOCS[:2], tokenizer, tmp_path, "train", "source-b").num_documents == 2


@pytest.mark.parametrize("damage", ["meta", "tokens", "offsets", "empty offsets", "meta not an object"])
def test_damaged_cache_is_rebuilt(tokenizer: Tokenizer, tmp_path: Path, damage: str) -> None:
    first = prepare_tokens(DOCS, tokenizer, tmp_path, "val", "src")
    expected = np.array(first.tokens)
    del first
    target, content = {
        "meta": ("val.json", b"\x00garbage"),
        "tokens": ("val.tokens.bin", b"\x00garbage"),
        "offsets": ("val.offsets.npy", b"\x00garbage"),
        "empty offsets": ("val.offsets.npy", b""),
        "meta not an object": ("val.json", b"[1, 2]"),
    }[damage]
    (tmp_path / target).write_bytes(content)
    again = prepare_tokens(DOCS, tokenizer, tmp_path, "val", "src")
    assert np.array_equal(again.tokens, expected)


def test_describe_source_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("one", encoding="utf-8")
    before = describe_source(path)
    path.write_text("one two", encoding="utf-8")
    assert describe_source(path) != before


# ---------------------------------------------------------------- packed batches
def _positions(num_tokens: int) -> np.ndarray:
    """A corpus whose token values are their own positions."""
    return np.arange(num_tokens, dtype=np.uint32)


def test_packed_batch_shapes_and_shift() -> None:
    sampler = PackedBatches(_positions(1000), batch_size=4, seq_len=16, seed=1)
    x, y = sampler.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))
    assert sampler.last_real_fraction == 1.0


def test_packed_windows_cover_the_corpus_each_epoch() -> None:
    seq_len, batch_size = 8, 5
    num_windows = 40
    tokens = _positions(num_windows * seq_len + 1)
    sampler = PackedBatches(tokens, batch_size=batch_size, seq_len=seq_len, seed=7)
    targets = torch.cat([sampler.next_batch()[1].flatten() for _ in range(num_windows // batch_size)])
    assert sorted(targets.tolist()) == list(range(1, len(tokens)))  # every target exactly once
    assert (sampler.epoch, sampler.cursor) == (1, 0)
    # Later epochs shift the window grid but still never repeat a target within the epoch.
    second = [sampler.next_batch()[1] for _ in range(num_windows // batch_size - 1)]
    later = torch.cat([y.flatten() for y in second]).tolist()
    assert len(later) == len(set(later))
    assert len({int(first) % seq_len for y in second for first in y[:, 0]}) == 1


def test_packed_resume_is_exact() -> None:
    tokens = _positions(500)
    sampler = PackedBatches(tokens, batch_size=3, seq_len=10, seed=5)
    for _ in range(7):  # crosses an epoch boundary (49 windows per epoch)
        sampler.next_batch()
    state = json.loads(json.dumps(sampler.state_dict()))
    expected = [sampler.next_batch() for _ in range(30)]
    resumed = PackedBatches(tokens, batch_size=3, seq_len=10, seed=5)
    resumed.load_state_dict(state)
    for (x, y), (rx, ry) in zip(expected, (resumed.next_batch() for _ in range(30)), strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert resumed.state_dict() == sampler.state_dict()


def test_resume_rejects_a_different_stream() -> None:
    state = PackedBatches(_positions(500), batch_size=2, seq_len=10, seed=5).state_dict()
    with pytest.raises(FhaError, match="seed was 5 when saved, now 6"):
        PackedBatches(_positions(500), batch_size=2, seq_len=10, seed=6).load_state_dict(state)
    with pytest.raises(FhaError, match="corpus_size"):
        PackedBatches(_positions(400), batch_size=2, seq_len=10, seed=5).load_state_dict(state)


@pytest.mark.parametrize("sampler_kind", ["packed", "padded"])
def test_ranks_split_the_global_batch(sampler_kind: str) -> None:
    tokens, offsets = _documents_corpus()
    world_size, batch_size = 3, 2

    def make(batch: int, rank: int = 0, world: int = 1):
        if sampler_kind == "packed":
            return PackedBatches(tokens, batch, 6, seed=11, rank=rank, world_size=world)
        return PaddedBatches(tokens, offsets, batch, 6, seed=11, rank=rank, world_size=world)

    single = make(batch_size * world_size)
    ranks = [make(batch_size, rank, world_size) for rank in range(world_size)]
    for _ in range(25):  # several epochs
        x, y = single.next_batch()
        per_rank = [sampler.next_batch() for sampler in ranks]
        assert torch.equal(torch.cat([rx for rx, _ in per_rank]), x)
        assert torch.equal(torch.cat([ry for _, ry in per_rank]), y)
        assert not torch.equal(per_rank[0][0], per_rank[1][0])


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank"):
        PackedBatches(_positions(100), 2, 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="seq_len"):
        PackedBatches(_positions(100), 2, 0)
    with pytest.raises(FhaError, match="fewer than seq_len"):
        PackedBatches(_positions(8), 2, 8)


# ---------------------------------------------------------------- padded batches
def _documents_corpus(lengths: tuple[int, ...] = (3, 9, 5, 12, 4, 7, 2, 10)) -> tuple[np.ndarray, np.ndarray]:
    """Packed ``<bos> body <eos>`` documents of the given total lengths, bodies numbered from 10."""
    pieces = [np.array([BOS_ID, *range(10 * (i + 1), 10 * (i + 1) + n - 2), EOS_ID]) for i, n in enumerate(lengths)]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])
    return np.concatenate(pieces).astype(np.uint16), offsets


def test_padded_rows_are_documents_with_masked_padding() -> None:
    tokens, offsets = _documents_corpus()
    seq_len = 6
    sampler = PaddedBatches(tokens, offsets, batch_size=4, seq_len=seq_len, seed=2)
    real_targets = 0
    for _ in range(2):  # one epoch: 8 documents
        x, y = sampler.next_batch()
        assert x.shape == y.shape == (4, seq_len)
        for row_x, row_y in zip(x, y, strict=True):
            assert row_x[0] == BOS_ID
            real = row_y != IGNORE_INDEX
            n = int(real.sum())
            assert torch.equal(row_x[1:n], row_y[: n - 1])  # shift inside the document
            # After the last real target comes only padding (x keeps the final token, e.g. <eos>).
            assert torch.all(row_x[n + 1 :] == PAD_ID) and not torch.any(real[n:])
            real_targets += n
        assert sampler.last_real_fraction == pytest.approx(float((y != IGNORE_INDEX).float().mean()))
    assert real_targets == sum(min(int(b - a), seq_len + 1) - 1 for a, b in itertools.pairwise(offsets))


def test_padded_loss_ignores_pad_positions() -> None:
    tokens, offsets = _documents_corpus()
    _, y = PaddedBatches(tokens, offsets, batch_size=8, seq_len=6, seed=0).next_batch()
    vocab = int(tokens.max()) + 1
    logits = torch.randn(*y.shape, vocab, generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1), ignore_index=IGNORE_INDEX)
    real = y != IGNORE_INDEX
    manual = F.cross_entropy(logits[real], y[real])
    assert loss.item() == pytest.approx(manual.item())
    assert 0 < real.float().mean().item() < 1


def test_padded_resume_is_exact() -> None:
    tokens, offsets = _documents_corpus()
    sampler = PaddedBatches(tokens, offsets, batch_size=3, seq_len=5, seed=9)
    sampler.next_batch()
    state = json.loads(json.dumps(sampler.state_dict()))
    expected = [sampler.next_batch() for _ in range(10)]
    resumed = PaddedBatches(tokens, offsets, batch_size=3, seq_len=5, seed=9)
    resumed.load_state_dict(state)
    for (x, y), (rx, ry) in zip(expected, (resumed.next_batch() for _ in range(10)), strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    with pytest.raises(FhaError, match="kind"):
        PackedBatches(tokens, 3, 5, seed=9).load_state_dict(state)


# ---------------------------------------------------------------- eval windows
@pytest.mark.parametrize("num_tokens", [2, 17, 33, 40])
def test_eval_windows_predict_every_token_once(num_tokens: int) -> None:
    tokens = _positions(num_tokens)
    batches = list(eval_windows(tokens, seq_len=8, batch_size=3))
    assert all(x.shape == y.shape and x.shape[1] == 8 and x.shape[0] <= 3 for x, y in batches)
    ys = torch.cat([y.reshape(-1) for _, y in batches])
    assert ys[ys != IGNORE_INDEX].tolist() == list(range(1, num_tokens))
    xs = torch.cat([x.reshape(-1) for x, _ in batches])
    assert torch.equal(xs[ys != IGNORE_INDEX], ys[ys != IGNORE_INDEX] - 1)


def test_eval_windows_of_a_tiny_corpus_is_empty() -> None:
    assert list(eval_windows(_positions(1), seq_len=4, batch_size=2)) == []


# ---------------------------------------------------------------- end to end on the sample
def test_sample_pipeline_end_to_end(sample_dir: Path, tmp_path: Path) -> None:
    valid = load_documents(sample_dir / "valid.txt")
    tokenizer = Tokenizer.train(valid, 300)
    data = prepare_tokens(valid, tokenizer, tmp_path, "valid", describe_source(sample_dir / "valid.txt"))
    assert data.num_bytes == len("".join(valid).encode("utf-8"))
    assert tokenizer.decode(data.tokens[data.doc_offsets[5] : data.doc_offsets[6]].tolist()) == valid[5]
    x, y = PackedBatches(data.tokens, 4, 64).next_batch()
    assert int(x.max()) < tokenizer.vocab_size and torch.equal(x[:, 1:], y[:, :-1])
    padded = PaddedBatches(data.tokens, data.doc_offsets, 8, 64, pad_id=tokenizer.pad_id)
    _, y = padded.next_batch()
    filled = (y != IGNORE_INDEX).all(dim=1)  # rows whose document reaches the end of the window
    assert filled.float().mean() > 0.5  # sample stories are longer than 64 tokens
