"""The tokenizer files of a transformers export: tokenizer.json and tokenizer_config.json, which
``AutoTokenizer.from_pretrained`` loads as a fast tokenizer that encodes and decodes as fha does.

Three changes to fha's own tokenizer.json make transformers' defaults give fha's behaviour:
- a post-processor puts ``<bos>`` first, so ``tokenizer(text)`` is ``encode(text, bos=True)``,
  the way fha feeds prompts to its models (``add_special_tokens=False`` gives ``encode(text)``);
- the unknown token is written as U+FFFD, fha's display of it, and is not a special token,
  so ``decode(ids, skip_special_tokens=True)`` is fha's ``decode``: ``<pad>``, ``<bos>`` and
  ``<eos>`` dropped, unknown characters shown as U+FFFD (kept as ``<unk>`` when U+FFFD is a
  character of the alphabet itself);
- ``split_special_tokens`` makes text that contains ``<bos>`` encode as plain characters.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import processors

from fha.runs.folder import TOKENIZER_FILE
from fha.tokenizer import (
    BOS_ID,
    BOS_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    UNK_ID,
    UNK_TOKEN,
    UNKNOWN_CHAR_DISPLAY,
    Tokenizer,
)

log = logging.getLogger(__name__)

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
FAST_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def tokenizer_files(tokenizer: Tokenizer, max_seq_len: int) -> dict[str, str]:
    """The text of tokenizer.json and tokenizer_config.json, by file name."""
    keep_unk = UNKNOWN_CHAR_DISPLAY in tokenizer.alphabet  # one string cannot name two ids
    if keep_unk:
        log.warning(
            "the tokenizer's alphabet holds U+FFFD; the export keeps <unk> as a special token, so "
            "decode(..., skip_special_tokens=True) drops unknown characters instead of showing U+FFFD"
        )
    config = _tokenizer_config(keep_unk, max_seq_len)
    return {
        TOKENIZER_FILE: _tokenizer_json(tokenizer, keep_unk),
        TOKENIZER_CONFIG_FILE: json.dumps(config, ensure_ascii=False, indent=2) + "\n",
    }


def _tokenizer_json(tokenizer: Tokenizer, keep_unk: bool) -> str:
    """fha's tokenizer.json with a ``<bos>`` post-processor and, unless `keep_unk`, the unknown token as U+FFFD."""
    hf = HFTokenizer.from_str(tokenizer.to_str())
    hf.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B:1", special_tokens=[(BOS_TOKEN, BOS_ID)]
    )
    data = json.loads(hf.to_str())
    if not keep_unk:
        model = data["model"]
        del model["vocab"][UNK_TOKEN]
        model["vocab"][UNKNOWN_CHAR_DISPLAY] = UNK_ID
        model["unk_token"] = UNKNOWN_CHAR_DISPLAY
        data["added_tokens"] = [token for token in data["added_tokens"] if token["id"] != UNK_ID]
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def _tokenizer_config(keep_unk: bool, max_seq_len: int) -> dict[str, Any]:
    """The special tokens, left padding (as fha pads prompts), no clean-up of spaces when decoding, and
    no token_type_ids (which the model does not take)."""
    config: dict[str, Any] = {
        "tokenizer_class": FAST_TOKENIZER_CLASS,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "split_special_tokens": True,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",
        "model_max_length": max_seq_len,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    if keep_unk:
        config["unk_token"] = UNK_TOKEN
    return config
