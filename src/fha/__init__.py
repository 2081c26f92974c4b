"""fha: Fractal-Head Attention for small GPT language models.

The names below are loaded on first use (module ``__getattr__``), so that importing one part
of the package, or running ``fha --help``, does not import torch, matplotlib and the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fha.lazy import lazy_exports

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)

if TYPE_CHECKING:
    from fha.analysis import analyze_subheads
    from fha.compare.comparison import compare_runs
    from fha.completion import Completion, complete
    from fha.config import ModelConfig
    from fha.errors import FhaError
    from fha.evaluation import EvalResult, evaluate
    from fha.generation import generate
    from fha.inspection import attention_maps, trace_shapes
    from fha.model.attention import fractal_attention, grouped_attention
    from fha.model.gpt import GPT
    from fha.model.kv_cache import KVCache
    from fha.runs.folder import load_run
    from fha.sampling import Sampling
    from fha.tokenizer import Tokenizer
    from fha.train.api import train_model

__getattr__, __dir__, __all__ = lazy_exports(__name__)
