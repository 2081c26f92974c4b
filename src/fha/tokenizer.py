"""Character-level BPE tokenizers for TinyStories, built on Hugging Face ``tokenizers``.

The base units are the characters of the training text (not bytes). Before BPE, text is
cut into pieces at whitespace: each piece is a run of whitespace followed by a run of
non-whitespace characters (``"\\nOnce"``, ``" upon"``, ``" time,"``), so merges can join a
word with its leading space and its punctuation, but never two words. Every character of
the input lands in exactly one piece, which is what makes ``decode(encode(s)) == s`` exact,
whitespace and newlines included, for any text written in the tokenizer's alphabet.

Special tokens have fixed ids: ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3.
Characters outside the alphabet become one ``<unk>`` each and are counted, never dropped
silently. One JSON file (the Hugging Face format) holds the whole tokenizer.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from fha.errors import FhaError, FhaValueError, one_line, read_text, writing
from fha.progress import resolved_mode

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


class Tokenizer:
    """A trained BPE tokenizer; create one with `Tokenizer.train` or `Tokenizer.load`."""

    def __init__(self, hf_tokenizer: HFTokenizer, source: str = "<memory>") -> None:
        _check_special_tokens(hf_tokenizer, source)
        # Text that happens to contain "<bos>" etc. is encoded as ordinary characters.
        hf_tokenizer.encode_special_tokens = True
        self._hf = hf_tokenizer
        self._json = hf_tokenizer.to_str()
        self._fingerprint = hashlib.sha256(self._json.encode("utf-8")).hexdigest()[:FINGERPRINT_HEX_CHARS]
        size = hf_tokenizer.get_vocab_size()
        self._pieces = [hf_tokenizer.id_to_token(i) for i in range(size)]
        self._decode_table = list(self._pieces)
        for special_id in (PAD_ID, BOS_ID, EOS_ID):
            self._decode_table[special_id] = ""
        self._decode_table[UNK_ID] = UNKNOWN_CHAR_DISPLAY
        self._alphabet = frozenset(
            piece for i, piece in enumerate(self._pieces) if len(piece) == 1 and i >= len(SPECIAL_TOKENS)
        )

    # ----------------------------------------------------------------- construction
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> Tokenizer:
        """Train on `texts`; `vocab_size` counts every id, the four special tokens included.

        When `vocab_size` leaves no room beyond the alphabet, the result is character-level
        (keeping the most frequent characters if the alphabet must shrink to fit).
        """
        if vocab_size < MIN_VOCAB_SIZE:
            raise FhaError(
                f"vocab_size must be at least {MIN_VOCAB_SIZE} (4 special tokens + 1 character), got {vocab_size}"
            )
        hf = HFTokenizer(models.BPE(unk_token=UNK_TOKEN, fuse_unk=False))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
        hf.decoder = decoders.Fuse()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            limit_alphabet=vocab_size - len(SPECIAL_TOKENS),
            show_progress=resolved_mode() == "bar",  # the library's bar redraws; no plain-lines form
        )
        counted = _CountingIterable(texts)
        hf.train_from_iterator(counted, trainer)
        if counted.nonempty == 0:
            raise FhaError("cannot train a tokenizer: the training text is empty")
        tokenizer = cls(hf)
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

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def alphabet(self) -> frozenset[str]:
        """The characters the tokenizer can represent exactly."""
        return self._alphabet

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
        merges = self.vocab_size - len(SPECIAL_TOKENS) - len(self._alphabet)
        return (
            f"vocab {self.vocab_size} ({len(SPECIAL_TOKENS)} special, {len(self._alphabet)} characters, "
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

        Accepts any iterable of ints, including numpy arrays and torch tensors.
        """
        values = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]
        if values and (min(values) < 0 or max(values) >= self.vocab_size):
            raise FhaValueError(f"token ids must be in [0, {self.vocab_size}), got {min(values)}..{max(values)}")
        table = self._decode_table
        return "".join(table[i] for i in values)

    def display(self, text: str) -> str:
        """How `text` is cut into tokens, e.g. ``Once| upon| a| time`` (newlines as ``\\n``)."""
        pieces = self._hf.encode(text, add_special_tokens=False).tokens
        return DISPLAY_SEPARATOR.join(_escape(piece) for piece in pieces)

    def count_unknown(self, text: str) -> int:
        """Number of characters of `text` outside the alphabet (each becomes one ``<unk>``)."""
        return sum(1 for char in text if char not in self._alphabet)

    def unknown_characters(self, text: str) -> set[str]:
        """The distinct characters of `text` that the tokenizer cannot represent."""
        return set(text) - self._alphabet

    def __repr__(self) -> str:
        return f"Tokenizer({self.summary()})"


class _CountingIterable:
    """Wraps the training texts to notice when none of them has any content."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = texts
        self.nonempty = 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            if text:
                self.nonempty += 1
            yield text


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


def _check_special_tokens(hf: HFTokenizer, source: str) -> None:
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if hf.token_to_id(token) != expected_id:
            raise FhaError(f"{source}: tokenizer must map {token} to id {expected_id}, found {hf.token_to_id(token)}")
