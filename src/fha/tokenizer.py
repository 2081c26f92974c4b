"""Character-level BPE tokenizers for TinyStories, built on Hugging Face ``tokenizers``.

The base units are the characters of the training text (not bytes). Before BPE, text is
cut into pieces at whitespace: each piece is a run of whitespace followed by a run of
non-whitespace characters (``"\\nOnce"``, ``" upon"``, ``" time,"``), so merges can join a
word with its leading space and its punctuation, but never two words. Every character of
the input lands in exactly one piece, which is what makes ``decode(encode(s)) == s`` exact,
whitespace and newlines included, for any text written in the tokenizer's alphabet.

Special tokens have fixed ids: ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3.
Characters outside the alphabet become one ``<unk>`` each and are counted, never dropped
silently; unless the tokenizer was trained with byte fallback, which gives ids 4 to 259 to
the 256 byte values (``<0x00>`` ... ``<0xFF>``) and writes such characters as their UTF-8
bytes, so that every text round-trips exactly (the trained pieces follow, from id 260). One
JSON file (the Hugging Face format) holds the whole tokenizer; files written without byte
fallback load, encode and fingerprint exactly as before it existed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Final

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from fha.errors import FhaError, FhaValueError, one_line, read_text, writing
from fha.progress import Progress, resolved_mode

log = logging.getLogger(__name__)

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))

# A run of whitespace (possibly empty) then a run of non-whitespace; trailing whitespace
# at the end of a text forms a piece of its own.
PIECE_PATTERN = r"\s*\S+|\s+"
# What ``decode`` writes for an ``<unk>`` id: the Unicode replacement character, so that
# lost characters stay visible in decoded text.
UNKNOWN_CHAR_DISPLAY = "\ufffd"
# How ``display`` shows characters that would otherwise break its one-line view.
DISPLAY_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
DISPLAY_SEPARATOR = "|"
FINGERPRINT_HEX_CHARS = 16
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 1
NUM_BYTES = 256  # byte-fallback tokens, one per byte value
BYTE_TOKEN = "<0x{:02X}>"  # the name Hugging Face's byte fallback looks up for a byte
FIRST_BYTE_ID = len(SPECIAL_TOKENS)
MIN_BYTE_FALLBACK_VOCAB_SIZE = len(SPECIAL_TOKENS) + NUM_BYTES
PROGRESS_EVERY_DOCS = 1024  # documents handed to the trainer between two progress updates


class Tokenizer:
    """A trained BPE tokenizer; create one with `Tokenizer.train` or `Tokenizer.load`."""

    def __init__(self, hf_tokenizer: HFTokenizer, source: str = "<memory>") -> None:
        _check_special_tokens(hf_tokenizer, source)
        # Text that happens to contain "<bos>" etc. is encoded as ordinary characters.
        hf_tokenizer.encode_special_tokens = True
        self._hf = hf_tokenizer
        self._json = hf_tokenizer.to_str()
        self._fingerprint = hashlib.sha256(self._json.encode("utf-8")).hexdigest()[:FINGERPRINT_HEX_CHARS]
        self._byte_fallback = bool(json.loads(self._json)["model"].get("byte_fallback", False))
        if self._byte_fallback:
            _check_byte_tokens(hf_tokenizer, source)
        self._pieces = _vocabulary_pieces(hf_tokenizer, source)
        decode_table = list(self._pieces)
        for special_id in (PAD_ID, BOS_ID, EOS_ID):
            decode_table[special_id] = ""
        decode_table[UNK_ID] = UNKNOWN_CHAR_DISPLAY
        self._decode_table = decode_table
        self._byte_table: list[bytes] | None = None
        first_piece = len(SPECIAL_TOKENS)
        if self._byte_fallback:
            self._byte_table = [piece.encode("utf-8") for piece in decode_table]
            for value in range(NUM_BYTES):
                self._byte_table[FIRST_BYTE_ID + value] = bytes([value])
            first_piece += NUM_BYTES
        self._alphabet = frozenset(piece for piece in self._pieces[first_piece:] if len(piece) == 1)

    # ----------------------------------------------------------------- construction
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, byte_fallback: bool = False) -> Tokenizer:
        """Train on `texts`; `vocab_size` counts every id, the four special tokens included.

        When `vocab_size` leaves no room beyond the alphabet, the result is character-level
        (keeping the most frequent characters if the alphabet must shrink to fit).
        `byte_fallback`: also give the 256 byte values ids (they count in `vocab_size`), so
        that characters outside the alphabet are written as their UTF-8 bytes, not ``<unk>``.
        """
        smallest = MIN_BYTE_FALLBACK_VOCAB_SIZE if byte_fallback else MIN_VOCAB_SIZE
        if vocab_size < smallest:
            needs = "4 special tokens + 256 bytes" if byte_fallback else "4 special tokens + 1 character"
            raise FhaError(f"vocab_size must be at least {smallest} ({needs}), got {vocab_size}")
        trained_size = vocab_size - NUM_BYTES if byte_fallback else vocab_size
        hf = HFTokenizer(models.BPE(unk_token=UNK_TOKEN, fuse_unk=False))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
        hf.decoder = decoders.Fuse()
        trainer = trainers.BpeTrainer(
            vocab_size=trained_size,
            special_tokens=list(SPECIAL_TOKENS),
            limit_alphabet=trained_size - len(SPECIAL_TOKENS),
            show_progress=False,  # its bars write to the terminal from Rust, past fha's progress and -q
        )
        total = len(texts) if isinstance(texts, Sized) else None
        on_terminal = resolved_mode() == "bar"  # in a log file the line "training a tokenizer ..." says enough
        with Progress(
            total, "reading documents for the tokenizer", unit="doc", leave=False, enabled=on_terminal
        ) as progress:
            counted = _CountingIterable(texts, progress)
            hf.train_from_iterator(counted, trainer)
        if counted.nonempty == 0:
            raise FhaError("cannot train a tokenizer: the training text is empty")
        tokenizer = cls(_with_byte_fallback(hf) if byte_fallback else hf)
        if tokenizer.vocab_size < vocab_size:
            log.warning(
                "the training text supports only %d tokens (asked for %d): every pair of pieces is already merged",
                tokenizer.vocab_size,
                vocab_size,
            )
        log.debug("trained tokenizer: %s", tokenizer.summary())
        return tokenizer

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a tokenizer JSON file written by `save`."""
        path = Path(path)
        text = read_text(path, "tokenizer file")
        try:
            hf = HFTokenizer.from_str(text)
        except Exception as err:  # the Rust parser raises plain Exception subclasses
            raise FhaError(f"{path}: not a valid tokenizer file ({one_line(err)})") from None
        return cls(hf, source=str(path))

    def to_str(self) -> str:
        """The whole tokenizer as the JSON text (the Hugging Face format) that `save` writes."""
        return self._json

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as one JSON file (parent folders are created)."""
        path = Path(path)
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self._json, encoding="utf-8")

    # ----------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included: the model's embedding size."""
        return len(self._pieces)

    # the special tokens' ids, the same in every tokenizer
    pad_id: Final = PAD_ID
    unk_id: Final = UNK_ID
    bos_id: Final = BOS_ID
    eos_id: Final = EOS_ID

    @property
    def alphabet(self) -> frozenset[str]:
        """The characters that have a token of their own."""
        return self._alphabet

    @property
    def byte_fallback(self) -> bool:
        """Whether characters outside the alphabet are written as UTF-8 bytes (else as ``<unk>``)."""
        return self._byte_fallback

    @property
    def fingerprint(self) -> str:
        """A short hash of the full tokenizer definition: equal iff encodings are equal."""
        return self._fingerprint

    def id_to_token(self, token_id: int) -> str:
        """The raw piece for `token_id` (special tokens as their names, e.g. ``<bos>``)."""
        if not 0 <= token_id < self.vocab_size:
            raise FhaValueError(f"token id {token_id} is outside the vocabulary (size {self.vocab_size})")
        return self._pieces[token_id]

    def summary(self) -> str:
        """One line describing the tokenizer."""
        num_bytes = NUM_BYTES if self._byte_fallback else 0
        merges = self.vocab_size - len(SPECIAL_TOKENS) - num_bytes - len(self._alphabet)
        byte_part = f"{NUM_BYTES} bytes, " if self._byte_fallback else ""
        return (
            f"vocab {self.vocab_size} ({len(SPECIAL_TOKENS)} special, {byte_part}{len(self._alphabet)} characters, "
            f"{merges} merges), fingerprint {self.fingerprint}"
        )

    # ----------------------------------------------------------------- encoding
    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `text`, optionally framed by ``<bos>`` / ``<eos>``."""
        ids = self._hf.encode(text, add_special_tokens=False).ids
        return _frame(ids, bos, eos)

    def encode_batch(self, texts: Sequence[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
        """`encode` for many texts at once, in parallel threads."""
        encodings = self._hf.encode_batch_fast(list(texts), add_special_tokens=False)
        return [_frame(enc.ids, bos, eos) for enc in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`: ``<pad>``, ``<bos>``, ``<eos>`` dropped, ``<unk>`` shown as U+FFFD.

        Byte tokens are joined into UTF-8; bytes that form no character (a sequence cut short,
        as while a character is being generated) are shown as U+FFFD. Accepts any iterable of
        ints, including numpy arrays and torch tensors.
        """
        to_list = getattr(ids, "tolist", None)  # numpy arrays and tensors convert in one call
        values = to_list() if to_list is not None else [int(i) for i in ids]
        if values and (min(values) < 0 or max(values) >= self.vocab_size):
            raise FhaValueError(f"token ids must be in [0, {self.vocab_size}), got {min(values)}..{max(values)}")
        if self._byte_table is not None:
            byte_table = self._byte_table
            return b"".join(byte_table[i] for i in values).decode("utf-8", errors="replace")
        table = self._decode_table
        return "".join(table[i] for i in values)

    def display(self, text: str) -> str:
        """How `text` is cut into tokens, e.g. ``Once| upon| a| time`` (newlines as ``\\n``)."""
        pieces = self._hf.encode(text, add_special_tokens=False).tokens
        return DISPLAY_SEPARATOR.join(_escape(piece) for piece in pieces)

    def count_unknown(self, text: str) -> int:
        """Number of characters of `text` that become ``<unk>`` (none with byte fallback)."""
        return 0 if self._byte_fallback else self.count_outside_alphabet(text)

    def count_outside_alphabet(self, text: str) -> int:
        """Number of characters of `text` without a token of their own (``<unk>``, or bytes with byte fallback)."""
        return sum(1 for char in text if char not in self._alphabet)

    def unknown_characters(self, text: str) -> set[str]:
        """The distinct characters of `text` that the tokenizer cannot represent."""
        return set() if self._byte_fallback else set(text) - self._alphabet

    def __repr__(self) -> str:
        return f"Tokenizer({self.summary()})"


class _CountingIterable:
    """Wraps the training texts to notice when none of them has any content, and to show how
    many the trainer has read."""

    def __init__(self, texts: Iterable[str], progress: Progress) -> None:
        self._texts = texts
        self._progress = progress
        self.nonempty = 0

    def __iter__(self) -> Iterator[str]:
        pending = 0
        for text in self._texts:
            if text:
                self.nonempty += 1
            pending += 1
            if pending == PROGRESS_EVERY_DOCS:
                self._progress.update(pending)
                pending = 0
            yield text
        self._progress.update(pending)


def _frame(ids: list[int], bos: bool, eos: bool) -> list[int]:
    if bos:
        ids = [BOS_ID, *ids]
    if eos:
        ids = [*ids, EOS_ID]
    return ids


def _escape(piece: str) -> str:
    for char, shown in DISPLAY_ESCAPES.items():
        piece = piece.replace(char, shown)
    return piece


def _with_byte_fallback(hf: HFTokenizer) -> HFTokenizer:
    """`hf` with the 256 byte tokens after the special tokens (its other pieces move up by 256),
    byte fallback on, and a decoder that joins bytes into characters."""
    definition = json.loads(hf.to_str())
    model = definition["model"]
    trained = sorted(model["vocab"].items(), key=lambda item: item[1])
    specials, pieces = trained[: len(SPECIAL_TOKENS)], trained[len(SPECIAL_TOKENS) :]
    names = [token for token, _ in specials]
    names += [BYTE_TOKEN.format(value) for value in range(NUM_BYTES)]
    names += [token for token, _ in pieces]
    model["vocab"] = {token: token_id for token_id, token in enumerate(names)}
    model["byte_fallback"] = True
    definition["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}
    return HFTokenizer.from_str(json.dumps(definition))


def _check_byte_tokens(hf: HFTokenizer, source: str) -> None:
    for value in range(NUM_BYTES):
        token = BYTE_TOKEN.format(value)
        if hf.token_to_id(token) != FIRST_BYTE_ID + value:
            raise FhaError(
                f"{source}: a byte-fallback tokenizer must map {token} to id {FIRST_BYTE_ID + value}, "
                f"found {hf.token_to_id(token)}"
            )


def _vocabulary_pieces(hf: HFTokenizer, source: str) -> list[str]:
    """The piece of every id; a vocabulary with an id that has no piece is refused."""
    pieces = []
    for token_id in range(hf.get_vocab_size()):
        piece = hf.id_to_token(token_id)
        if piece is None:
            raise FhaError(f"{source}: the tokenizer's vocabulary has no token with id {token_id}")
        pieces.append(piece)
    return pieces


def _check_special_tokens(hf: HFTokenizer, source: str) -> None:
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if hf.token_to_id(token) != expected_id:
            raise FhaError(f"{source}: tokenizer must map {token} to id {expected_id}, found {hf.token_to_id(token)}")
