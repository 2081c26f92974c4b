"""Shared test fixtures: where the TinyStories sample lives (set FHA_SAMPLE_DATA to move it), a
private token cache for the session and for every test, a small synthetic corpus, the one tiny
model shape and a tiny trained run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch.nn.functional as F
from tiny_model import make_tiny_model
from tiny_run import make_model, make_run, make_tokenizer
from train_helpers import write_corpus

import fha.model.attention as attention_module
from fha import GPT
from fha.data.cache_location import CACHE_ENV

pytest_plugins = ("pytester",)  # test_token_cache runs a small suite of its own with this conftest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = Path(os.environ.get("FHA_SAMPLE_DATA", REPO_ROOT.parent / "shared" / "data" / "tinystories-sample"))


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The sample folder with train.txt and valid.txt; skips the test when it is absent."""
    if not (SAMPLE_DIR / "train.txt").is_file() or not (SAMPLE_DIR / "valid.txt").is_file():
        pytest.skip(f"TinyStories sample not found at {SAMPLE_DIR}")
    return SAMPLE_DIR


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Iterator[Path]:
    """The cache of everything outside a test: session and module fixtures are set up before any
    test's own `token_cache`, and must not fill the user's ~/.cache/fha either."""
    folder = tmp_path_factory.mktemp("fha-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    """Token arrays go to the test's own folder, never to the user's ~/.cache/fha."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A synthetic story file for training tests."""
    return write_corpus(tmp_path / "stories.txt")


@pytest.fixture(scope="module")
def tokenizer():
    """A tokenizer trained on tiny_run's lines (one per test module)."""
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory) -> Path:
    """tiny_run's trained run folder, shared by the tests that only read it."""
    return make_run(tmp_path_factory.mktemp("tiny-run") / "tiny")


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny model briefly trained with that tokenizer (one per test module)."""
    return make_model(tokenizer)


@pytest.fixture
def tiny_model() -> GPT:
    """A freshly initialised GPT of the tests' one tiny config (tiny_model.TINY_MODEL, seed 0), in eval mode;
    tests about another shape call `tiny_model.tiny_config(**changes)` or `make_tiny_model(**changes)`."""
    return make_tiny_model()


@pytest.fixture
def sdpa_query_shapes(monkeypatch):
    """The query shape of every SDPA call fractal_attention makes while the test runs."""
    shapes = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        shapes.append(tuple(args[0].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", counting)
    return shapes
