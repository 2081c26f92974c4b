"""Training batches from a token array, and sequential windows for evaluation.

Both training samplers walk an endless stream of items in epochs; epoch ``e`` is a fresh
permutation drawn from ``numpy.random.default_rng([seed, e])``. A step takes the next
``batch_size * world_size`` items of the stream (the global batch) and rank ``r`` keeps
rows ``r * batch_size`` to ``(r + 1) * batch_size``, so N DistributedDataParallel ranks see
together exactly the batch one process with ``batch_size * N`` rows would see. The whole
sampler state is the stream position (epoch, cursor), kept as plain ints: restoring it
with `load_state_dict` makes the following batches identical to an uninterrupted run.

* `PackedBatches`: items are windows of ``seq_len + 1`` consecutive tokens of the packed
  corpus (documents joined as ``<bos> doc <eos>``), starting at ``offset + k * seq_len``.
  Consecutive windows share one token, so within an epoch every token after ``offset``
  (except a tail shorter than ``seq_len``) is a target exactly once. Epoch 0 starts at
  offset 0; later epochs draw a random offset so window boundaries move.
* `PaddedBatches`: items are documents; each row is one document truncated or padded with
  ``<pad>`` to ``seq_len + 1`` tokens, and targets at pad positions are `IGNORE_INDEX`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from fha.errors import FhaError
from fha.model.loss import IGNORE_INDEX
from fha.tokenizer import PAD_ID


class _EpochSampler(ABC):
    """Shared stream bookkeeping; subclasses define the items of an epoch and a batch."""

    kind = ""

    def __init__(self, batch_size: int, seq_len: int, seed: int, rank: int, world_size: int) -> None:
        _check_positive(batch_size=batch_size, seq_len=seq_len, world_size=world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.cursor = 0  # position within the current epoch's items
        self.step = 0  # global batches drawn so far
        self.last_real_fraction = 1.0  # share of targets in the last batch that count in the loss
        self._epoch_cache: tuple[int, np.ndarray] | None = None

    @abstractmethod
    def _epoch_items(self, epoch: int) -> np.ndarray:
        """The permuted items of `epoch` (never empty)."""

    @abstractmethod
    def _corpus_size(self) -> int:
        """Tokens or documents in the corpus: a saved state only fits a corpus of this size."""

    @abstractmethod
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``(x, y)`` for this rank, int64 of shape (batch_size, seq_len)."""

    def _items(self, epoch: int) -> np.ndarray:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self._epoch_items(epoch))
        return self._epoch_cache[1]

    def _next_rank_items(self) -> np.ndarray:
        """Advance by one global batch; return this rank's share of its items."""
        needed = self.batch_size * self.world_size
        chunks = []
        while needed:
            items = self._items(self.epoch)
            chunk = items[self.cursor : self.cursor + needed]
            chunks.append(chunk)
            needed -= len(chunk)
            self.cursor += len(chunk)
            if self.cursor == len(items):
                self.epoch += 1
                self.cursor = 0
        self.step += 1
        global_items = np.concatenate(chunks)  # (batch_size * world_size,)
        return global_items[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        """The stream position and what it depends on, as JSON-able plain values."""
        return {
            "kind": self.kind,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "corpus_size": self._corpus_size(),
            "epoch": self.epoch,
            "cursor": self.cursor,
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`; the corpus, seed and seq_len must be those it was saved with.

        The position is global, so batch_size and world_size may differ from the saved run.
        """
        current = self.state_dict()
        for key in ("kind", "seed", "seq_len", "corpus_size"):
            if state.get(key) != current[key]:
                raise FhaError(
                    f"cannot resume the batch sampler: {key} was {state.get(key)!r} when saved, now {current[key]!r}"
                )
        self.epoch = int(state["epoch"])
        self.cursor = int(state["cursor"])
        self.step = int(state["step"])
        if not 0 <= self.cursor < len(self._items(self.epoch)):
            raise FhaError(f"cannot resume the batch sampler: cursor {self.cursor} is outside epoch {self.epoch}")


class PackedBatches(_EpochSampler):
    """Random windows of ``seq_len + 1`` tokens from the packed corpus; no padding."""

    kind = "packed"

    def __init__(
        self, tokens: np.ndarray, batch_size: int, seq_len: int, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(batch_size, seq_len, seed, rank, world_size)
        if len(tokens) < seq_len + 1:
            raise FhaError(f"the corpus has {len(tokens)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
        self.tokens = tokens

    def _corpus_size(self) -> int:
        return len(self.tokens)

    def _epoch_items(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        # Epoch 0 starts at 0; offsets below len - seq_len leave room for at least one window.
        offset = 0 if epoch == 0 else int(rng.integers(min(self.seq_len, len(self.tokens) - self.seq_len)))
        num_windows = (len(self.tokens) - 1 - offset) // self.seq_len
        return offset + rng.permutation(num_windows) * self.seq_len  # window start positions

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``, both int64 of shape (batch_size, seq_len), ``y`` = ``x`` shifted by one."""
        starts = self._next_rank_items()
        index = starts[:, None] + np.arange(self.seq_len + 1)  # (B, T + 1)
        windows = torch.from_numpy(np.asarray(self.tokens[index], dtype=np.int64))
        self.last_real_fraction = 1.0
        return windows[:, :-1], windows[:, 1:]


class PaddedBatches(_EpochSampler):
    """One document per row, truncated or padded to ``seq_len + 1``; pads excluded from the loss."""

    kind = "padded"

    def __init__(
        self,
        tokens: np.ndarray,
        doc_offsets: np.ndarray,
        batch_size: int,
        seq_len: int,
        *,
        pad_id: int = PAD_ID,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(batch_size, seq_len, seed, rank, world_size)
        if len(doc_offsets) < 2:
            raise FhaError("the corpus has no documents")
        self.tokens = tokens
        self.doc_offsets = np.asarray(doc_offsets, dtype=np.int64)
        self.pad_id = pad_id

    def _corpus_size(self) -> int:
        return len(self.doc_offsets) - 1

    def _epoch_items(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self._corpus_size())  # document indices

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``, int64 (batch_size, seq_len); ``y`` is `IGNORE_INDEX` where ``x`` is padding."""
        docs = self._next_rank_items()
        width = self.seq_len + 1
        rows = np.full((len(docs), width), self.pad_id, dtype=np.int64)  # (B, T + 1)
        lengths = np.minimum(self.doc_offsets[docs + 1] - self.doc_offsets[docs], width)
        for row, (doc, length) in enumerate(zip(docs, lengths, strict=True)):
            start = self.doc_offsets[doc]
            rows[row, :length] = self.tokens[start : start + length]
        real = np.arange(self.seq_len)[None, :] < (lengths[:, None] - 1)  # (B, T): target is a real token
        targets = np.where(real, rows[:, 1:], IGNORE_INDEX)
        self.last_real_fraction = float(real.mean())
        return torch.from_numpy(rows[:, :-1].copy()), torch.from_numpy(targets)


def eval_windows(
    tokens: np.ndarray, seq_len: int, batch_size: int, *, pad_id: int = PAD_ID
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive windows predicting every token after the first exactly once.

    Window k holds inputs ``tokens[k*T : k*T + T]`` and targets ``tokens[k*T + 1 : k*T + T + 1]``;
    the last window is padded (inputs with `pad_id`, targets with `IGNORE_INDEX`). Yields
    int64 ``(x, y)`` of shape (rows, seq_len), rows = `batch_size` except in the last batch.
    """
    _check_positive(seq_len=seq_len, batch_size=batch_size)
    num_targets = len(tokens) - 1
    num_windows = -(-num_targets // seq_len) if num_targets > 0 else 0
    for first in range(0, num_windows, batch_size):
        count = min(batch_size, num_windows - first)
        x = np.full((count, seq_len), pad_id, dtype=np.int64)
        y = np.full((count, seq_len), IGNORE_INDEX, dtype=np.int64)
        for row in range(count):
            start = (first + row) * seq_len
            window = np.asarray(tokens[start : start + seq_len + 1], dtype=np.int64)
            x[row, : len(window) - 1] = window[:-1]
            y[row, : len(window) - 1] = window[1:]
        yield torch.from_numpy(x), torch.from_numpy(y)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
