"""fha analyze STUDY_DIR: a study's evaluation runs analysed and pooled over seeds, and the
"Mechanisms" section of its report."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest
from train_helpers import write_corpus

from fha.analysis import analyze_subheads, pooling
from fha.analysis.table import SubheadTable
from fha.choices import ANALYSIS_ABLATION_TOKENS
from fha.cli import main
from fha.evaluation import encode_documents
from fha.runs.folder import MODEL_FILE, load_model_and_tokenizer
from fha.study.export import export_study
from fha.study.layout import TOKENIZER_FILE
from fha.study.mechanisms import (
    ANALYSED_DIR,
    POOLED_FILE,
    RUNS_FILE,
    SUBHEADS_FILE,
    analyze_study,
    study_runs,
    write_mechanisms,
)
from fha.study.prepare import study_documents
from fha.study.report import write_report
from fha.study.runner import run_study
from fha.study.spec import load_spec
from fha.tokenizer import Tokenizer

pytestmark = pytest.mark.slow  # a study of 12 runs, each analysed: about a minute on 2 busy cores

TOKENS_PER_STEP = 4 * 16
PRIMARY = 8 * TOKENS_PER_STEP
SECONDARY = 4 * TOKENS_PER_STEP
SEEDS = (0, 1, 2)
T_975_2 = 4.302652729911275  # the 0.975 quantile of Student's t with 2 degrees of freedom
ANALYSIS = {"induction_length": 4, "induction_sequences": 2}
OPTIONS = ["--induction-length", "4", "--induction-sequences", "2"]
SPEC = """
description = "tiny mechanisms"
base = "tiny"
baseline = "mha"
seeds = {seeds}
tokens = {primary}
budgets = [{secondary}]

[data]
train = "{data}/train.txt"
valid = "{data}/valid.txt"
test = "{data}/test.txt"
train_sample = 10

[set]
dim = 32
num_layers = 1
num_q_heads = 3
vocab_size = 64
max_seq_len = 16
batch_size = 4
lr_max = 0.01
num_restarts = 0
anneal_type = "wsd"
warmup_steps = 1
cooldown_fraction = 0.25
final_flat_steps = 0
eval_interval = 4
eval_samples = 2
checkpoint_interval = 2

[[variants]]
name = "fha"
set = {{ attention = "fha" }}

[[variants]]
name = "mha"
set = {{ attention = "mha" }}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A finished tiny study with its run folders: FHA and MHA (sub-heads 32, 16, 16, 8 x 4 against
    3 x 32), 3 seeds, two budgets, no tuning."""
    folder = tmp_path_factory.mktemp("mechanisms")
    write_corpus(folder / "train.txt")
    write_corpus(folder / "valid.txt", num_docs=12, seed=2)
    write_corpus(folder / "test.txt", num_docs=12, seed=1)
    spec = folder / "study.toml"
    spec.write_text(SPEC.format(data=folder, seeds=list(SEEDS), primary=PRIMARY, secondary=SECONDARY))
    out = folder / "study"
    run_study(load_spec(spec), out, jobs=1)
    return out


def direct_tables(study: Path, tokens: int) -> dict[str, SubheadTable]:
    """Each evaluation run at `tokens` analysed on its own on the study's validation text."""
    results, _, runs = study_runs(study, tokens)
    tokenizer = Tokenizer.load(study / TOKENIZER_FILE)
    text = encode_documents(study_documents(results.spec)["valid"], tokenizer)[0]
    tables = {}
    for run in runs:
        model, _ = load_model_and_tokenizer(run.folder)
        tables[run.cell.run_id] = analyze_subheads(model, text, run=run.cell.run_id, **ANALYSIS)
    return tables


def median_threshold(tables: dict[str, SubheadTable], column: str) -> float:
    """A threshold that some sub-heads reach and others do not."""
    return statistics.median(getattr(row, column) for table in tables.values() for row in table)


def test_pooled_values_are_means_over_the_runs_analysed_one_by_one(study, tmp_path, monkeypatch):
    direct = direct_tables(study, PRIMARY)
    # thresholds at the medians, so that the counts differ between runs and sizes
    induction, previous = median_threshold(direct, "induction"), median_threshold(direct, "previous_token")
    monkeypatch.setattr(pooling, "INDUCTION_THRESHOLD", induction)
    monkeypatch.setattr(pooling, "PREVIOUS_TOKEN_THRESHOLD", previous)
    mechanisms = analyze_study(study, **ANALYSIS)
    assert sorted(mechanisms.groups.values()) == ["fha"] * 3 + ["mha"] * 3
    for run, table in direct.items():
        assert mechanisms.table.select(run, None).rows == table.rows  # the same measurements
    write_mechanisms(mechanisms, tmp_path)
    with (tmp_path / POOLED_FILE).open() as handle:
        pooled = {(row["group"], int(row["subhead_dim"]), row["measure"]): row for row in csv.DictReader(handle)}
    sizes = {"fha": [32, 16, 8], "mha": [32]}
    assert {(group, size) for group, size, _ in pooled} == {
        (group, size) for group, found in sizes.items() for size in [*found, pooling.ALL_SIZES]
    }
    counts = {"induction_subheads": 0.0, "previous_token_subheads": 0.0}
    for group, found in sizes.items():
        runs = [table for run, table in direct.items() if mechanisms.groups[run] == group]
        for size in [*found, pooling.ALL_SIZES]:
            per_run = [[row for row in table if size in (pooling.ALL_SIZES, row.subhead_dim)] for table in runs]
            expected = {
                "induction_subheads": [sum(row.induction >= induction for row in rows) for rows in per_run],
                "previous_token_subheads": [sum(row.previous_token >= previous for row in rows) for rows in per_run],
                "max_induction": [max(row.induction for row in rows) for rows in per_run],
                "mean_zero_ablation": [statistics.fmean(row.zero_ablation for row in rows) for rows in per_run],
                "mean_mean_ablation": [statistics.fmean(row.mean_ablation for row in rows) for rows in per_run],
                "mean_entropy_bits": [statistics.fmean(row.entropy_bits for row in rows) for rows in per_run],
                "mean_distance_tokens": [statistics.fmean(row.mean_distance for row in rows) for rows in per_run],
            }
            for measure, values in expected.items():
                row = pooled[(group, size, measure)]
                half = T_975_2 * statistics.stdev(values) / math.sqrt(len(values))
                assert int(row["runs"]) == len(values) == len(SEEDS)
                assert float(row["mean"]) * len(values) == pytest.approx(sum(values), abs=1e-9)
                assert float(row["ci_low"]) == pytest.approx(statistics.fmean(values) - half, abs=1e-9)
                assert float(row["ci_high"]) == pytest.approx(statistics.fmean(values) + half, abs=1e-9)
                assert int(row["runs_above_zero"]) == sum(value > 0 for value in values)
            if size != pooling.ALL_SIZES:
                for measure in counts:
                    counts[measure] += sum(expected[measure])
    # the counts are not all zero or all sub-heads: the check above compared real sums
    total = sum(len(table) for table in direct.values())
    assert all(0 < count < total for count in counts.values())


def test_cli_writes_the_section_the_study_report_and_its_export_show(study, tmp_path, capsys):
    assert main(["analyze", str(study), *OPTIONS]) == 0
    printed = capsys.readouterr().out
    assert "| fha | 8 | 3 | 4 |" in printed and "| mha | all | 3 | 3 |" in printed
    for name in ("mechanisms.md", "mechanisms.html", POOLED_FILE, RUNS_FILE, SUBHEADS_FILE, "mechanisms_by_size.png"):
        assert f"wrote {study / name}" in printed
    markdown = (study / "mechanisms.md").read_text()
    assert "the study's validation text" in markdown and f"{PRIMARY:,} training tokens" in markdown
    assert (study / "mechanisms.html").read_text().count("data:image/png;base64,") == 1
    table = SubheadTable.read_csv(study / SUBHEADS_FILE)
    assert len(table.runs()) == 6 and len(table) == 3 * (1 + 2 + 4) + 3 * 3
    report = write_report([study])
    section = report.markdown.read_text().split("## Mechanisms", 1)[1]
    assert "| fha | 32 | 3 | 1 |" in section and "| mha | all | 3 | 3 |" in section
    assert "<h2>Mechanisms</h2>" in report.html.read_text()
    exported = tmp_path / "export"
    export_study(study, exported)
    assert not list(exported.rglob(MODEL_FILE))
    rebuilt = write_report([exported]).markdown.read_text()
    assert rebuilt.split("## Mechanisms", 1)[1] == section


def test_kept_tables_analyse_an_export_that_has_no_weights(study, tmp_path):
    mechanisms = analyze_study(study, **ANALYSIS)
    exported = tmp_path / "export"
    export_study(study, exported)
    assert not list(exported.rglob(MODEL_FILE))
    kept = {path.name for path in (exported / ANALYSED_DIR).glob("*.csv")}
    for run in study_runs(study, PRIMARY)[2]:
        assert any(name.startswith(f"{run.fingerprint}-") for name in kept)  # every run's table kept
    defaults_given = {**ANALYSIS, "seed": 0, "ablation_tokens": ANALYSIS_ABLATION_TOKENS, "max_tokens": None}
    again = analyze_study(exported, **defaults_given)  # the same settings: read back, not refused
    assert again.table == mechanisms.table  # every run read back, value for value
    assert again.groups == mechanisms.groups and again.seeds == mechanisms.seeds
    for run, table in direct_tables(study, PRIMARY).items():
        assert again.table.select(run, None).rows == table.rows  # what its weights give


def test_another_budget_and_text_by_option(study, tmp_path, capsys):
    out = tmp_path / "mechanisms"
    text = study.parent / "test.txt"
    argv = ["analyze", str(study), "--budget", str(SECONDARY), "--data", str(text), "--out", str(out), *OPTIONS]
    assert main(argv) == 0
    table = SubheadTable.read_csv(out / SUBHEADS_FILE)
    assert all(run.endswith(f"/tokens-{SECONDARY}") for run in table.runs()) and len(table.runs()) == 6
    assert f"Text: {text}" in (out / "mechanisms.md").read_text()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["{study}", "--budget", "100"], "--budget 100: not a budget of the study (its budgets: 256, 512 tokens)"),
        (["{study}", "{study}"], "is a study folder: analyse it alone"),
        (["{study}", "--names", "a"], "--names is for run folders"),
        (["{study}", "--checkpoints"], "--checkpoints is for run folders"),
        (
            ["{export}", "--induction-sequences", "3"],
            "no weights for 6 of 6 evaluation runs at 512 tokens (e.g. {export}/runs/fha/lr-0.01/seed-0/",
        ),
        (["{run}", "--out", "{tmp}/o"], "--data is needed for run folders"),
        (["{run}", "--data", "x.txt"], "--out is needed for run folders"),
    ],
)
def test_study_errors_are_one_line(argv, message, study, tiny_run_dir, tmp_path, capsys):
    export = tmp_path / "export"
    export_study(study, export)
    values = {"study": study, "export": export, "run": tiny_run_dir, "tmp": tmp_path}
    assert main(["analyze", *(a.format(**values) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fha: error: ") and err.count("\n") == 1
    assert message.format(**values) in err
