"""fha: Fractal-Head Attention for small GPT language models."""

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)

from fha.compare import compare_runs
from fha.completion import Completion, complete
from fha.config import ModelConfig
from fha.errors import FhaError
from fha.evaluate import EvalResult, evaluate
from fha.generation import generate
from fha.inspect import attention_maps, trace_shapes
from fha.model.attention import fractal_attention, grouped_attention
from fha.model.gpt import GPT
from fha.model.kv_cache import KVCache
from fha.run import load_run
from fha.tokenizer import Tokenizer
from fha.train.api import train_model

__all__ = [
    "GPT",
    "Completion",
    "EvalResult",
    "FhaError",
    "KVCache",
    "ModelConfig",
    "Tokenizer",
    "attention_maps",
    "compare_runs",
    "complete",
    "evaluate",
    "fractal_attention",
    "generate",
    "grouped_attention",
    "load_run",
    "trace_shapes",
    "train_model",
]
