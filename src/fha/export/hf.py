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
``AutoTokenizer.from_pretrained(DIR)`` load it. Writing it needs neither transformers nor its code.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from fha.errors import FhaError, FhaValueError, writing
from fha.export.hf_tokenizer import tokenizer_files
from fha.export.model_card import gather, render
from fha.run import MODEL_FILE, load_run, weights_folder
from fha.run_info import fha_version
from fha.tokenizer import BOS_ID, EOS_ID, PAD_ID

log = logging.getLogger(__name__)

FORMATS = ("hf",)
REMOTE_CODE_DIR = Path(__file__).parent / "remote"
CONFIG_FILE, GENERATION_CONFIG_FILE, CARD_FILE = "config.json", "generation_config.json", "README.md"
CONFIG_MODULE, MODEL_MODULE = "configuration_fha", "modeling_fha"
CONFIG_CLASS, MODEL_CLASS = "FhaConfig", "FhaForCausalLM"
MODEL_TYPE = "fha"
WEIGHTS_PREFIX = "gpt."  # FhaForCausalLM holds fha's GPT as `self.gpt`
TRANSFORMERS_REQUIREMENT = "transformers>=4.46,<6"  # the hf extra of pyproject.toml


def export_run(run_dir: str | Path, out: str | Path, *, format: str = "hf", overwrite: bool = False) -> Path:
    """Write the run in `run_dir` (finished, or its latest checkpoint) to the folder `out` in `format`;
    returns `out`. An `out` that holds files is refused unless `overwrite`."""
    if format not in FORMATS:
        raise FhaValueError(f"`format` must be one of {', '.join(FORMATS)}, got {format!r}")
    run_dir, out = Path(run_dir), Path(out)
    _check_out(run_dir, out, overwrite)
    weights_dir = weights_folder(run_dir)
    model, tokenizer, configs = load_run(run_dir)
    facts = gather(run_dir, weights_dir, model, tokenizer, configs.train)
    files = {
        CONFIG_FILE: _json(model_config_json(configs.model.to_dict())),
        GENERATION_CONFIG_FILE: _json({"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}),
        **tokenizer_files(tokenizer, model.config.max_seq_len),
        CARD_FILE: render(facts, TRANSFORMERS_REQUIREMENT),
    }
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text, encoding="utf-8")
        for module in (CONFIG_MODULE, MODEL_MODULE):
            shutil.copyfile(REMOTE_CODE_DIR / f"{module}.py", out / f"{module}.py")
        weights = {WEIGHTS_PREFIX + name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        save_file(weights, str(out / MODEL_FILE), metadata={"format": "pt"})
    return out


def model_config_json(fields: dict[str, Any]) -> dict[str, Any]:
    """config.json: the ModelConfig `fields` and what transformers needs to find and build the model."""
    return {
        "architectures": [MODEL_CLASS],
        "model_type": MODEL_TYPE,
        "auto_map": {
            "AutoConfig": f"{CONFIG_MODULE}.{CONFIG_CLASS}",
            "AutoModelForCausalLM": f"{MODEL_MODULE}.{MODEL_CLASS}",
        },
        **fields,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "tie_word_embeddings": True,
        "dtype": "float32",
        "fha_version": fha_version(),
    }


def _check_out(run_dir: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FhaError(f"`out` {out}: is a file, not a folder")
    if out.exists() and run_dir.exists() and out.resolve() == run_dir.resolve():
        raise FhaError(f"`out` {out}: is the run folder itself; export to another folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FhaError(f"`out` {out}: the folder is not empty; choose another or pass `overwrite` to replace its files")


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"
