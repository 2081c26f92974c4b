"""``fha export RUN --format hf --out DIR``: a folder that Hugging Face transformers loads::

    DIR/
      config.json             the run's ModelConfig fields; auto_map names the two classes below
      configuration_fha.py    FhaConfig       } copied from fha.export.remote: thin layers over the
      modeling_fha.py         FhaForCausalLM  } fha package, which wrap fha's own GPT
      model.safetensors       the weights, under FhaForCausalLM's names (gpt.<fha name>)
      generation_config.json  the <bos>, <eos> and <pad> ids
      tokenizer.json          fha's tokenizer, adjusted so transformers' defaults act as fha (fha.export.hf_tokenizer)
      tokenizer_config.json
      README.md               the model card (fha.export.model_card)

``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` and
``AutoTokenizer.from_pretrained(DIR)`` load it. A run that is exactly Llama or Gemma
(`fha.export.stock`) is written as that architecture instead: config.json and the weights in its
own terms, no code, loaded without ``trust_remote_code`` and without fha. Writing either needs no
transformers.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from fha.choices import EXPORT_FORMATS
from fha.config import ModelConfig
from fha.errors import FhaError, FhaValueError, writing
from fha.export.hf_tokenizer import tokenizer_files
from fha.export.model_card import gather, render
from fha.export.stock import ARCHITECTURE_CLASSES, stock_architecture, stock_config, stock_weights
from fha.runs.folder import MODEL_CONFIG_FILE, MODEL_FILE, load_run, weights_folder
from fha.runs.info import fha_version
from fha.tokenizer import BOS_ID, EOS_ID, PAD_ID

log = logging.getLogger(__name__)

REMOTE_CODE_DIR = Path(__file__).parent / "remote"
CONFIG_FILE, GENERATION_CONFIG_FILE, CARD_FILE = "config.json", "generation_config.json", "README.md"
CONFIG_MODULE, MODEL_MODULE = "configuration_fha", "modeling_fha"
CONFIG_CLASS, MODEL_CLASS = "FhaConfig", "FhaForCausalLM"
MODEL_TYPE = "fha"
WEIGHTS_PREFIX = "gpt."  # FhaForCausalLM holds fha's GPT as `self.gpt`
SPECIAL_TOKEN_IDS = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}


def export_run(
    run_dir: str | Path, out: str | Path, *, format: str = "hf", overwrite: bool = False, fha_code: bool = False
) -> Path:
    """Write the run in `run_dir` (finished, or its latest checkpoint) to the folder `out` in `format`;
    returns `out`. A run that is exactly a stock transformers architecture (`fha.export.stock`) is
    written as one, without fha's code, unless `fha_code`. An `out` that holds files is refused
    unless `overwrite`."""
    if format not in EXPORT_FORMATS:
        raise FhaValueError(f"`format` must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    run_dir, out = Path(run_dir), Path(out)
    _check_out(out, overwrite)
    weights_dir = weights_folder(run_dir)
    model, tokenizer, configs = load_run(run_dir)
    architecture = None if fha_code else stock_architecture(configs.model)
    if architecture is None:
        config = fha_config_json(configs.model)
        weights = {WEIGHTS_PREFIX + name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    else:
        config = stock_config(configs.model, architecture)
        weights = stock_weights(model, architecture)
    config |= {**SPECIAL_TOKEN_IDS, "tie_word_embeddings": True, "dtype": "float32"}
    files = {
        CONFIG_FILE: _json(config),
        GENERATION_CONFIG_FILE: _json(SPECIAL_TOKEN_IDS),
        **tokenizer_files(tokenizer, configs.model.max_seq_len),
        CARD_FILE: render(gather(run_dir, weights_dir, model, tokenizer, configs.train), architecture),
    }
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text, encoding="utf-8")
        for module in (CONFIG_MODULE, MODEL_MODULE):
            if architecture is None:
                shutil.copyfile(REMOTE_CODE_DIR / f"{module}.py", out / f"{module}.py")
            else:  # code left by an earlier export to the folder would not be this model's
                (out / f"{module}.py").unlink(missing_ok=True)
        save_file(weights, str(out / MODEL_FILE), metadata={"format": "pt"})
    if architecture is None:
        log.info("%s: written with fha's model code (transformers loads it with trust_remote_code=True)", out)
    else:
        log.info("%s: the model is exactly %s; written without fha's code", out, ARCHITECTURE_CLASSES[architecture])
    return out


def fha_config_json(config: ModelConfig) -> dict[str, Any]:
    """config.json of fha's own code: the ModelConfig fields, and where transformers finds the classes."""
    return {
        "architectures": [MODEL_CLASS],
        "model_type": MODEL_TYPE,
        "auto_map": {
            "AutoConfig": f"{CONFIG_MODULE}.{CONFIG_CLASS}",
            "AutoModelForCausalLM": f"{MODEL_MODULE}.{MODEL_CLASS}",
        },
        **config.to_dict(),
        "fha_version": fha_version(),
    }


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FhaError(f"`out` {out}: is a file, not a folder")
    if (out / MODEL_CONFIG_FILE).is_file():
        raise FhaError(f"`out` {out}: is a run folder (writing would replace its weights); export to another folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FhaError(f"`out` {out}: the folder is not empty; choose another or pass `overwrite` to replace its files")


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"
