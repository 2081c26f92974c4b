"""The TinyStories data pipeline: read documents, tokenise them once, draw batches.

* `load_documents` / `load_splits` (`sources`): local files or the Hugging Face Hub.
* `prepare_tokens` -> `TokenData` (`cache`): a flat memmapped token array per corpus.
* `PackedBatches`, `PaddedBatches`, `eval_windows` (`batches`): training and evaluation
  batches, with exactly resumable sampler state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fha.lazy import lazy_exports

_EXPORTS = {
    "cached_tokens": "fha.data.cache",
    "describe_source": "fha.data.cache",
    "documents_digest": "fha.data.cache",
    "download_tinystories": "fha.data.sources",
    "eval_windows": "fha.data.batches",
    "IGNORE_INDEX": "fha.data.batches",
    "load_documents": "fha.data.sources",
    "load_splits": "fha.data.sources",
    "PackedBatches": "fha.data.batches",
    "PaddedBatches": "fha.data.batches",
    "prepare_tokens": "fha.data.cache",
    "split_documents": "fha.data.sources",
    "token_dtype": "fha.data.cache",
    "TokenData": "fha.data.cache",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from fha.data.batches import IGNORE_INDEX, PackedBatches, PaddedBatches, eval_windows
    from fha.data.cache import TokenData, cached_tokens, describe_source, documents_digest, prepare_tokens, token_dtype
    from fha.data.sources import download_tinystories, load_documents, load_splits, split_documents

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
