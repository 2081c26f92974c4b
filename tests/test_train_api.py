"""fha.train_model: the arguments of ``fha train`` from Python, giving the same run as the CLI."""

from __future__ import annotations

import pytest
from test_train_cli import TINY_SETS

import fha
from fha.cli import main
from fha.errors import FhaError
from fha.runs.checkpoint import load_checkpoint
from fha.runs.logbook import read_evaluations
from fha.train import TrainRequest, resolve_configs, train
from fha.train_config import TrainConfig

OVERRIDES = dict(item.split("=") for item in TINY_SETS[1::2])  # the CLI tests' --set values, as strings


@pytest.mark.slow
def test_python_run_equals_the_cli_run(corpus, tmp_path, capsys):
    assert main(["train", "--preset", "tiny", *TINY_SETS, "--data", str(corpus), "--out", str(tmp_path / "cli")]) == 0
    typed = {key: int(value) for key, value in OVERRIDES.items()}  # typed values work like --set strings
    run = fha.train_model("tiny", overrides=typed, data=corpus, out=tmp_path / "api", device="cpu")
    assert run.run_dir == tmp_path / "api" and run.step == 4
    logged = {
        name: [
            (row.step, row.learning_rate, row.train_loss, row.val_loss)
            for row in read_evaluations(tmp_path / name / "log_data.csv")
        ]
        for name in ("cli", "api")
    }
    assert logged["api"] == logged["cli"] and len(logged["api"]) == 3
    model, tokenizer, configs = run.load()
    assert configs.train.max_steps == 4 and model.config == configs.model
    assert tokenizer.vocab_size == model.config.vocab_size


@pytest.mark.slow
def test_resume_and_config_tables(corpus, tmp_path):
    tables = {
        "model": {"dim": 32, "num_layers": 1, "max_seq_len": 16, "vocab_size": 64, "num_q_heads": 2, "head_dim": 16},
        "train": {"batch_size": 4, "max_steps": 4, "eval_interval": 2, "eval_samples": 1, "checkpoint_interval": 2},
    }
    out = tmp_path / "run"
    first = fha.train_model(config=tables, overrides={"attention": "mha"}, data=str(corpus), out=out, device="cpu")
    assert first.load().configs.model.attention == "mha"
    longer = fha.train_model(resume=out, overrides={"max_steps": 6}, device="cpu")
    assert longer.step == 6 and [row.step for row in read_evaluations(out / "log_data.csv")] == [0, 2, 4, 6]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"preset": "tiny", "overrides": {"dimm": 3}}, "unknown setting 'dimm' (did you mean dim?)"),
        ({"preset": "tiny", "overrides": {"dim": "x"}}, "`overrides` dim=x: "),
        ({"config": {"modle": {}}}, "config: unknown table 'modle' (the tables are model, train)"),
        ({"preset": "tiny"}, "`data` is required"),
        ({"preset": "tiny", "data": "x.txt"}, "`out` (the run folder) is required"),
        ({"resume": "somewhere", "preset": "tiny"}, "`preset` cannot be combined with `resume`"),
        ({}, "give `preset` (a name), `config` (a TOML file) or `resume`"),
    ],
)
def test_mistakes_are_fha_errors(kwargs, message):
    with pytest.raises(FhaError) as caught:
        fha.train_model(**kwargs)
    assert str(caught.value).startswith(message)


def test_resolve_configs_is_what_print_config_shows():
    model, train = resolve_configs("tiny", overrides={"attention": "mha", "max_steps": 12})
    assert model.attention == "mha" and train.max_steps == 12 and train.log_interval == 10


def test_set_values_are_parsed_once(monkeypatch, capsys):
    """--set strings reach the library as they were typed and are parsed into the tables there, once each."""
    parsed = []
    real = fha.ModelConfig.parse_field.__func__

    def counting(cls, name, text):
        parsed.append(name)
        return real(cls, name, text)

    monkeypatch.setattr(fha.ModelConfig, "parse_field", classmethod(counting))
    monkeypatch.setattr(TrainConfig, "parse_field", classmethod(counting))
    sets = ["--set", "attention=mha", "--set", "dim=32", "--set", "max_steps=12"]
    assert main(["train", "--preset", "tiny", *sets, "--print-config"]) == 0
    assert sorted(parsed) == ["attention", "dim", "max_steps"]
    shown = capsys.readouterr().out
    assert 'attention = "mha"' in shown and "dim = 32" in shown and "max_steps = 12" in shown


def test_resume_of_a_checkpoint_whose_data_has_gone_says_so_from_python_too(corpus, tmp_path):
    """A TrainRequest built outside build_request (as a study builds it) gets the same resume checks."""
    out = tmp_path / "run"
    fha.train_model("tiny", overrides=OVERRIDES, data=corpus, out=out, device="cpu")
    checkpoint = load_checkpoint(out)
    corpus.unlink()
    request = TrainRequest(
        checkpoint.model_config, checkpoint.train_config.replace(max_steps=6), str(corpus), out, resume=checkpoint
    )
    with pytest.raises(FhaError, match=f"the run's `data` {corpus} is not there any more; pass `data` with"):
        train(request)
