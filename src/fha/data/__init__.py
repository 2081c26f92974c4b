"""The TinyStories data pipeline: read documents, tokenise them once, draw batches.

* `load_documents` / `load_splits` (`sources`): local files or the Hugging Face Hub.
* `prepare_tokens` -> `TokenData` (`cache`): a flat memmapped token array per corpus.
* `PackedBatches`, `PaddedBatches`, `eval_windows` (`batches`): training and evaluation
  batches, with exactly resumable sampler state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fha.lazy import lazy_exports

if TYPE_CHECKING:
    from fha.data.batches import IGNORE_INDEX, PackedBatches, PaddedBatches, eval_windows
    from fha.data.cache import TokenData, cached_tokens, describe_source, documents_digest, prepare_tokens, token_dtype
    from fha.data.sources import download_tinystories, load_documents, load_splits, split_documents

__getattr__, __dir__, __all__ = lazy_exports(__name__)
