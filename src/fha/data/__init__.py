"""The TinyStories data pipeline: read documents, tokenise them once, draw batches.

* `load_documents` / `load_splits` (`sources`): local files or the Hugging Face Hub.
* `prepare_tokens` -> `TokenData` (`cache`): a flat memmapped token array per corpus.
* `PackedBatches`, `PaddedBatches`, `eval_windows` (`batches`): training and evaluation
  batches, with exactly resumable sampler state.
"""

from fha.data.batches import IGNORE_INDEX, PackedBatches, PaddedBatches, eval_windows
from fha.data.cache import TokenData, describe_source, prepare_tokens, token_dtype
from fha.data.sources import download_tinystories, load_documents, load_splits, split_documents

__all__ = [
    "IGNORE_INDEX",
    "PackedBatches",
    "PaddedBatches",
    "TokenData",
    "describe_source",
    "download_tinystories",
    "eval_windows",
    "load_documents",
    "load_splits",
    "prepare_tokens",
    "split_documents",
    "token_dtype",
]
