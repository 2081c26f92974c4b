"""`fha export --format hf`: what transformers loads from the folder computes, generates and tokenizes
exactly as fha does, for every attention variant; the model card; one-line errors."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import torch
from tiny_model import make_tiny_model, tiny_config
from tiny_run import LINES, make_run, make_tokenizer
from train_helpers import run_tiny, tiny_model_config

from fha import generate, load_run
from fha.cli import main
from fha.completion import complete
from fha.export.hf import CARD_FILE, CONFIG_FILE, MODEL_MODULE, export_run
from fha.export.stock import stock_architecture
from fha.runs.folder import CHECKPOINTS_DIR, LOG_FILE, MODEL_FILE, TOKENIZER_FILE, TRAIN_CONFIG_FILE, save_weights
from fha.sampling import GREEDY
from fha.study.layout import EVAL_FILE
from fha.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from fha.variants import ATTENTION_VARIANTS, describe_attention

# transformers copies the folder's code into a module cache; keep the tests' copies out of ~/.cache.
os.environ.setdefault("HF_MODULES_CACHE", str(Path(tempfile.gettempdir()) / "fha-tests-hf-modules"))

LOGIT_TOLERANCE = 1e-5
NEW_TOKENS = 10
SPLIT = 8  # cached prompt positions before the rest is fed
PROMPT = "Once upon a time"

# Every named variant, written patterns per layer, sub-head RoPE, grouped kv heads with the
# original's score scale, and ordinary attention with every optional layer switched on.
VARIANT_CONFIGS = {
    **{name: {"attention": name} for name in ATTENTION_VARIANTS if name != "split"},
    "split-per-layer": {"attention": "split", "layer_head_splits": ((1, 2, 4), (4, 4, 1))},
    "fha-subhead-rope": {"attention": "fha", "rope_layout": "subhead"},
    "fha-grouped-head-scale": {"attention": "fha", "num_q_heads": 4, "num_kv_heads": 2, "fractal_scale": "head"},
    "mha-every-option": {
        "attention": "mha",
        "norm_type": "LayerNorm",
        "norm_bias": True,
        "second_resid_norm": True,
        "scale_first_resid": False,
        "mlp_gated": False,
        "mlp_nonlinearity": "GeLU",
        "mlp_bias": True,
    },
}


def fha_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_run(directory: Path, tokenizer, **changes) -> Path:
    """A run folder of a freshly initialised tiny model with `tokenizer` (weights, config, tokenizer only)."""
    torch.manual_seed(0)
    model = make_tiny_model(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id, **changes)
    with torch.no_grad():  # norms away from their initial ones, so that exporting them is tested
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    save_weights(model, directory)
    tokenizer.save(directory / TOKENIZER_FILE)
    return directory


def load_hf(folder: Path, trust_remote_code: bool = True):
    transformers = pytest.importorskip("transformers")
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        folder, trust_remote_code=trust_remote_code, output_loading_info=True
    )
    assert all(not keys for keys in info.values()), info  # every weight found, none left over
    return model.eval()


def until_eos(row: list[int]) -> list[int]:
    """The tokens up to and with the first <eos>: fha repeats <eos> after it, transformers pads."""
    return row[: row.index(EOS_ID) + 1] if EOS_ID in row else row


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("export") / "tiny")


@pytest.fixture(scope="module")
def trained_export(trained_run, tmp_path_factory) -> Path:
    return export_run(trained_run, tmp_path_factory.mktemp("export") / "hf")


# ----------------------------------------------------------------------------- the model
@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANT_CONFIGS))
def test_every_variant_computes_the_same_logits_and_greedy_tokens(name, tokenizer, tmp_path):
    run = write_run(tmp_path / "run", tokenizer, **VARIANT_CONFIGS[name])
    hf_model = load_hf(export_run(run, tmp_path / "hf", fha_code=True))
    model, _, _ = load_run(run)
    idx = torch.randint(4, tokenizer.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(idx, dtype=torch.bool)
    mask[1, :5] = False  # the second row left-padded
    with torch.no_grad():
        torch.testing.assert_close(hf_model(idx).logits, model(idx)[0], atol=LOGIT_TOLERANCE, rtol=0)
        padded = hf_model(idx, attention_mask=mask.long()).logits
        torch.testing.assert_close(padded[mask], model(idx, token_mask=mask)[0][mask], atol=LOGIT_TOLERANCE, rtol=0)
        # the prompt's first part into the cache, then the rest after it
        cache = pytest.importorskip("transformers").DynamicCache()
        hf_model(idx[:, :SPLIT], attention_mask=mask[:, :SPLIT].long(), past_key_values=cache)
        later = hf_model(idx[:, SPLIT:], attention_mask=mask.long(), past_key_values=cache).logits
        expected_later = model(idx, token_mask=mask)[0][:, SPLIT:]
        torch.testing.assert_close(later, expected_later, atol=LOGIT_TOLERANCE, rtol=0)
    expected = generate(model, idx, NEW_TOKENS, sampling=GREEDY, eos_id=EOS_ID, token_mask=mask)[:, idx.shape[1] :]
    for use_cache in (True, False):
        out = hf_model.generate(
            input_ids=idx, attention_mask=mask.long(), max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=use_cache
        )[:, idx.shape[1] :]
        assert [until_eos(row) for row in out.tolist()] == [until_eos(row) for row in expected.tolist()]


# Whole heads, RMSNorm without bias, a gated MLP: exactly Llama, or Gemma with the embeddings scaled.
STOCK_CONFIGS = {
    "gemma": ({"attention": "mha"}, "GemmaForCausalLM"),
    "gemma-grouped-no-gain": ({"attention": "mha", "num_kv_heads": 2, "norm_affine": False}, "GemmaForCausalLM"),
    "llama": ({"attention": "mha", "scale_first_resid": False}, "LlamaForCausalLM"),
    "llama-gelu": ({"attention": "mha", "scale_first_resid": False, "mlp_nonlinearity": "GeLU"}, "LlamaForCausalLM"),
    "fha-of-one-level": ({"attention": "fha", "num_q_heads": 1}, "GemmaForCausalLM"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STOCK_CONFIGS))
def test_whole_head_runs_export_as_a_stock_architecture(name, tokenizer, tmp_path):
    changes, architecture = STOCK_CONFIGS[name]
    run = write_run(tmp_path / "run", tokenizer, **{"num_q_heads": 2, **changes})
    folder = export_run(run, tmp_path / "hf")
    assert not (folder / f"{MODEL_MODULE}.py").exists()
    hf_model = load_hf(folder, trust_remote_code=False)
    assert type(hf_model).__name__ == architecture
    model, _, _ = load_run(run)
    idx = torch.randint(
        4, tokenizer.vocab_size, (2, model.config.max_seq_len), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        torch.testing.assert_close(hf_model(idx).logits, model(idx)[0], atol=LOGIT_TOLERANCE, rtol=0)
    prompt = idx[:, :12]
    expected = generate(model, prompt, NEW_TOKENS, sampling=GREEDY, eos_id=EOS_ID)[:, prompt.shape[1] :]
    out = hf_model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False)[:, prompt.shape[1] :]
    assert [until_eos(row) for row in out.tolist()] == [until_eos(row) for row in expected.tolist()]
    assert "auto_map" not in json.loads((folder / CONFIG_FILE).read_text())
    assert f"exactly transformers' `{architecture}`" in (folder / CARD_FILE).read_text()


@pytest.mark.parametrize(
    "changes",
    [
        *(VARIANT_CONFIGS[name] for name in VARIANT_CONFIGS if name != "mha"),
        {"attention": "mha", "norm_bias": True},  # the bias of the final norm has no place in either
        {"attention": "mha", "mlp_gated": False},
        {"attention": "mha", "dropout": 0.1},
        {"attention": "mha", "mlp_nonlinearity": "GeLU"},  # Gemma's "gelu" is the tanh approximation
        {"attention": "split", "head_splits": (1, 1, 1), "fractal_scale": 0.5},  # whole heads, another scale
        {"attention": "mha", "dim": 32},  # 3 heads do not divide the width (transformers' configs refuse it)
    ],
)
def test_other_runs_keep_fhas_code(changes):
    assert stock_architecture(tiny_config(attention="mha", dim=48)) == "gemma"  # 3 heads of 16, width 48
    assert stock_architecture(tiny_config(**{"dim": 48, **changes})) is None


def test_fha_code_can_be_asked_for_a_stock_run(tokenizer, tmp_path):
    run = write_run(tmp_path / "run", tokenizer, attention="mha", num_q_heads=2)
    folder = export_run(run, tmp_path / "hf")
    assert json.loads((folder / CONFIG_FILE).read_text())["model_type"] == "gemma"
    export_run(run, folder, overwrite=True, fha_code=True)
    assert json.loads((folder / CONFIG_FILE).read_text())["model_type"] == "fha"
    assert (folder / f"{MODEL_MODULE}.py").is_file()
    export_run(run, folder, overwrite=True)
    assert not (folder / f"{MODEL_MODULE}.py").exists()  # an earlier export's code does not linger


@pytest.mark.slow
def test_the_loss_is_fhas_next_token_loss(trained_run, trained_export):
    hf_model = load_hf(trained_export)
    model, tokenizer, _ = load_run(trained_run)
    ids = torch.tensor([tokenizer.encode(LINES[0], bos=True, eos=True)[: model.config.max_seq_len]])
    with torch.no_grad():
        expected = model(ids[:, :-1], ids[:, 1:])[1]
        assert hf_model(ids, labels=ids).loss.item() == pytest.approx(expected.item(), abs=LOGIT_TOLERANCE)


@pytest.mark.slow
def test_greedy_generate_writes_what_fha_generate_writes(capsys, trained_run, trained_export):
    transformers = pytest.importorskip("transformers")
    code, out, _ = fha_cli(
        capsys, "generate", trained_run, "--prompt", PROMPT, "--temperature", "0", "--max-new-tokens", NEW_TOKENS
    )
    assert code == 0
    tokenizer = transformers.AutoTokenizer.from_pretrained(trained_export, trust_remote_code=True)
    inputs = tokenizer(PROMPT, return_tensors="pt")
    output = load_hf(trained_export).generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert PROMPT + tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True) + "\n" == out


@pytest.mark.slow
def test_a_padded_batch_generates_what_each_prompt_generates_in_fha(trained_run, trained_export):
    transformers = pytest.importorskip("transformers")
    model, fha_tokenizer, _ = load_run(trained_run)
    prompts = ["Once upon a time", "Tom", "She liked to"]
    completions = complete(model, fha_tokenizer, prompts, max_new_tokens=NEW_TOKENS, sampling=GREEDY)
    tokenizer = transformers.AutoTokenizer.from_pretrained(trained_export, trust_remote_code=True)
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    output = load_hf(trained_export).generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    new = output[:, inputs["input_ids"].shape[1] :]
    assert [tokenizer.decode(row, skip_special_tokens=True) for row in new] == [c.text for c in completions]
    assert [until_eos(row) for row in new.tolist()] == [
        c.token_ids + ([EOS_ID] if c.stopped_at_eos else []) for c in completions
    ]


# ----------------------------------------------------------------------------- the tokenizer
TEXTS = [
    "Once upon a time, there was a cat.",
    "  two spaces, a tab\tand\nnew lines\n\n",
    "Tom said <bos> and <eos> and <unk> aloud.",  # special names in text are plain characters
    "unknown characters: 日本 ☃ \ufffd",
    "",
]


def test_the_tokenizer_encodes_like_fhas(trained_export):
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(trained_export, trust_remote_code=True)
    fha_tokenizer = make_tokenizer()
    for text in TEXTS:
        assert tokenizer(text)["input_ids"] == fha_tokenizer.encode(text, bos=True), text
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == fha_tokenizer.encode(text), text
    batch = tokenizer(["Once", "Once upon a time"], padding=True)
    assert batch["input_ids"][0][0] == PAD_ID and batch["attention_mask"][0][0] == 0  # padded on the left
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID)


def test_the_tokenizer_loads_without_running_the_folders_code(trained_export, monkeypatch):
    """transformers reads config.json first and, seeing code there, asks whether to run it: the
    tokenizer loads all the same when the answer is no."""
    transformers = pytest.importorskip("transformers")
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    tokenizer = transformers.AutoTokenizer.from_pretrained(trained_export)
    assert tokenizer(PROMPT)["input_ids"] == make_tokenizer().encode(PROMPT, bos=True)


def test_the_tokenizer_decodes_like_fhas(trained_export):
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(trained_export, trust_remote_code=True)
    fha_tokenizer = make_tokenizer()
    for text in TEXTS:
        ids = [BOS_ID, *fha_tokenizer.encode(text), EOS_ID, PAD_ID]
        assert tokenizer.decode(ids, skip_special_tokens=True) == fha_tokenizer.decode(ids), text
    assert tokenizer.decode([BOS_ID, UNK_ID, EOS_ID], skip_special_tokens=True) == "\ufffd"  # shown, never dropped


# ----------------------------------------------------------------------------- the folder and the card
def test_the_folder_holds_the_code_the_config_and_the_card(trained_run, trained_export):
    config = json.loads((trained_export / CONFIG_FILE).read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_fha.FhaForCausalLM"
    assert config["num_layers"] == load_run(trained_run).configs.model.num_layers
    assert (trained_export / f"{MODEL_MODULE}.py").is_file()
    card = (trained_export / CARD_FILE).read_text()
    assert f"| attention | {describe_attention(load_run(trained_run).configs.model)} |" in card
    assert "| training budget | unknown |" in card  # a bare model folder records no training
    assert "| held-out bits per byte | unknown" in card


@pytest.mark.slow
def test_the_card_states_data_budget_and_held_out_score(corpus, tmp_path):
    run = tmp_path / "run"
    run_tiny(corpus, run, tiny_model_config(attention="reversed-fha"), max_steps=4)
    (run / EVAL_FILE).write_text(json.dumps({"test": {"bits_per_byte": 2.3456, "num_bytes": 1234}}))
    folder = export_run(run, tmp_path / "hf")
    card = (folder / CARD_FILE).read_text()
    model, _, configs = load_run(run)
    info = json.loads((run / "run_info.json").read_text())
    tokens = 4 * configs.train.batch_size * configs.model.max_seq_len
    assert f"| attention | {describe_attention(configs.model)} |" in card and "reversed-fha" in card
    assert f"| parameters | {model.num_parameters():,} (" in card
    assert f"`{corpus.name}` (sha256 {info['data']['train']['sha256']})" in card
    assert str(corpus.parent) not in card  # a file's name, never where it lay on the training machine
    assert f"4 steps of {configs.train.batch_size} sequences of {configs.model.max_seq_len} tokens = {tokens:,}" in card
    assert "| held-out bits per byte | 2.3456 on the test text (1,234 bytes) |" in card
    assert "| last validation loss |" in card


def test_a_damaged_log_or_eval_file_leaves_the_card_without_it(tokenizer, tmp_path, caplog):
    run = write_run(tmp_path / "run", tokenizer)
    (run / LOG_FILE).write_text("Step,Train Loss\n1,2\n")  # no Validation Loss column
    (run / EVAL_FILE).write_text("[1, 2]")
    card = (export_run(run, tmp_path / "hf") / CARD_FILE).read_text()
    assert "| held-out bits per byte | unknown" in card and "last validation loss" not in card
    assert "corrupt log (missing column val_loss_nats" in caplog.text
    assert "eval.json: damaged (not a JSON object)" in caplog.text


def test_an_unfinished_run_exports_its_latest_checkpoint_and_says_so(tokenizer, tmp_path):
    run = tmp_path / "run"
    write_run(run / CHECKPOINTS_DIR / "step-3", tokenizer)
    tiny_model_config().to_json(run / "model_config.json")
    (run / TRAIN_CONFIG_FILE).write_text(json.dumps({"max_steps": 8, "batch_size": 2}))
    card = (export_run(run, tmp_path / "hf") / CARD_FILE).read_text()
    assert "checkpoint at step 3." in card
    assert "| training budget | 3 steps of 2 sequences" in card


# ----------------------------------------------------------------------------- errors
def test_export_on_the_command_line(capsys, trained_run, tmp_path):
    code, out, err = fha_cli(capsys, "export", trained_run, "--format", "hf", "--out", tmp_path / "hf")
    assert code == 0 and out == f"wrote {tmp_path / 'hf'}\n"
    assert (tmp_path / "hf" / MODEL_FILE).is_file()


def missing(run: Path) -> Path:
    return run / "missing"


def not_a_run(run: Path) -> Path:
    (run / "empty").mkdir()
    return run / "empty"


def corrupt_weights(run: Path) -> Path:
    (run / MODEL_FILE).write_bytes(b"not weights")
    return run


def corrupt_tokenizer(run: Path) -> Path:
    (run / TOKENIZER_FILE).write_text("{")
    return run


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (missing, r"missing: no such run folder$"),
        (not_a_run, r"empty: not a run folder \(no model_config.json\)$"),
        (corrupt_weights, r"model.safetensors: corrupt weights \("),
        (corrupt_tokenizer, r"tokenizer.json: not a valid tokenizer file \("),
    ],
)
def test_a_run_that_cannot_be_exported_is_one_line(capsys, tokenizer, tmp_path, damage, message):
    run = damage(write_run(tmp_path / "run", tokenizer))
    code, out, err = fha_cli(capsys, "export", run, "--out", tmp_path / "hf")
    assert code == 2 and out == ""
    assert err.startswith("fha: error: ") and err.count("\n") == 1
    assert re.search(message, err.strip()), err
    assert not (tmp_path / "hf").exists()


def test_bad_format_and_out_folders_are_one_line(capsys, trained_run, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["export", str(trained_run), "--format", "gguf", "--out", str(tmp_path / "hf")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith("fha: error: export: argument --format: invalid choice: 'gguf'")
    with pytest.raises(ValueError, match=r"^`format` must be one of hf, got 'gguf'$"):
        export_run(trained_run, tmp_path / "hf", format="gguf")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    code, _, err = fha_cli(capsys, "export", trained_run, "--out", tmp_path / "full")
    assert code == 2 and "the folder is not empty; choose another or pass --overwrite" in err
    assert fha_cli(capsys, "export", trained_run, "--out", tmp_path / "full", "--overwrite")[0] == 0
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"  # files of its own are left alone
    for run_folder in (trained_run, tmp_path / "full" / "run"):  # its own, or another run's
        save_weights(load_run(trained_run).model, run_folder)
        code, _, err = fha_cli(capsys, "export", trained_run, "--out", run_folder, "--overwrite")
        assert code == 2 and f"--out {run_folder}: is a run folder (writing would replace its weights)" in err
    code, _, err = fha_cli(capsys, "export", trained_run, "--out", tmp_path / "full" / "notes.txt")
    assert code == 2 and "is a file, not a folder" in err
