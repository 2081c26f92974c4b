"""fha compare: plots, Markdown and HTML reports, table values, seed groups, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import tiny_config

from fha import GPT, ModelConfig, Tokenizer
from fha.cli import main
from fha.cli.compare import parse_skip_first
from fha.compare import PlotOptions, compare_runs, load_summary, read_log, seed_groups
from fha.compare.names import group_labels
from fha.compare.plots import first_kept_step
from fha.runs.folder import LOG_FILE, TOKENIZER_FILE, TRAIN_CONFIG_FILE, save_weights

HEADER = "Step,Learning Rate,Train Loss,Validation Loss,Perplexity,Time Elapsed,Tokens/s"
BASE_MODEL = {"num_layers": 1, "num_q_heads": 2, "max_seq_len": 16}  # the tiny model: one layer of two levels
BASE_TRAIN = {"batch_size": 4, "grad_accum_steps": 2, "max_steps": 30, "lr_max": 0.01, "seed": 0}
STEPS = (0, 10, 20, 30)
LINES = ["Once upon a time there was a cat.", "The cat sat on a mat and was happy."]


def write_log(directory: Path, final_val: float, seconds_per_step: float = 0.5, tokens_per_s: float = 1000.0) -> None:
    """Losses fall linearly to final_val at the last step; one row per evaluation."""
    rows = [HEADER]
    for i, step in enumerate(STEPS):
        val = final_val + (len(STEPS) - 1 - i) * 0.5
        train = val - 0.1
        rows.append(f"{step},0.01,{train},{val},{math.exp(val)},{step * seconds_per_step},{tokens_per_s}")
    (directory / LOG_FILE).write_text("\n".join(rows) + "\n")


def make_run(
    directory: Path, final_val: float, *, train: dict | None = None, tokenizer: Tokenizer | None = None, **model_changes
) -> Path:
    torch.manual_seed(0)
    changes = {**model_changes, **({"vocab_size": tokenizer.vocab_size} if tokenizer else {})}
    save_weights(GPT(tiny_config(**{**BASE_MODEL, **changes})), directory)
    if train is not None:
        (directory / TRAIN_CONFIG_FILE).write_text(json.dumps({**BASE_TRAIN, **train}))
    if tokenizer is not None:
        tokenizer.save(directory / TOKENIZER_FILE)
    write_log(directory, final_val)
    return directory


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    """Three seeds of one FHA experiment, an MHA run and a bare run without train config."""
    return [
        make_run(tmp_path / "fha-seed1", 2.0, train={"seed": 1}),
        make_run(tmp_path / "fha-seed2", 2.2, train={"seed": 2}),
        make_run(tmp_path / "mha", 2.5, train={"seed": 1}, attention="mha"),
        make_run(tmp_path / "fha-seed3", 2.7, train={"seed": 3}),
        make_run(tmp_path / "bare", 3.0),
    ]


@pytest.mark.slow
def test_cli_writes_plots_and_reports(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert (
        main(
            [
                "compare",
                *map(str, runs),
                "--out",
                str(out),
                "--log-y",
                "--skip-first",
                "0.2",
                "--x-axis",
                "step",
                "time",
            ]
        )
        == 0
    )
    for name in ("loss_vs_step.png", "loss_vs_time.png", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 2 and "<img" in page
    assert "fha-seed" in page and "mha" in page
    markdown = (out / "report.md").read_text()
    assert "![loss vs step](loss_vs_step.png)" in markdown and "## Seed groups" in markdown
    assert "first 20% of each run's steps" in markdown
    stdout = capsys.readouterr().out
    assert "| run | attention | parameters |" in stdout and f"wrote {out / 'report.html'}" in stdout


def row_of(markdown: str, name: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_table_values_match_the_runs(runs, tmp_path):
    comparison = compare_runs(runs, tmp_path / "out")
    markdown = comparison.markdown.read_text()
    header = row_of(markdown, "run")
    for path, final_val in zip(runs, (2.0, 2.2, 2.5, 2.7, 3.0)):
        cells = dict(zip(header, row_of(markdown, path.name)))
        config = ModelConfig.from_json(path / "model_config.json")
        model = GPT(config)
        assert cells["parameters"] == f"{model.num_parameters():,}"
        assert cells["non_embedding_parameters"] == f"{model.num_parameters(non_embedding=True):,}"
        assert cells["val_loss_nats"] == f"{final_val:.4f}"
        assert cells["val_perplexity"] == f"{math.exp(final_val):.2f}"
        assert cells["step"] == "30" and cells["elapsed_s"] == "15.0" and cells["tokens_per_s"] == "1,000"
    fha = dict(zip(header, row_of(markdown, "fha-seed1")))
    assert fha["attention"].startswith("fha (split 2, scale subhead; 2 levels, sub-heads 16/8")
    assert dict(zip(header, row_of(markdown, "mha")))["attention"].startswith("mha")
    first = comparison.runs[0]
    assert first.tokens_seen == 30 * 4 * 2 * 16  # steps x batch x grad_accum x max_seq_len
    assert fha["tokens_seen"] == "3,840"
    assert dict(zip(header, row_of(markdown, "bare")))["tokens_seen"] == "—"


def test_seed_groups_hold_only_runs_that_differ_in_seed(runs, tmp_path):
    different_lr = make_run(tmp_path / "fha-lr", 2.1, train={"seed": 4, "lr_max": 0.02})
    summaries = [load_summary(path) for path in [*runs, different_lr]]
    groups = seed_groups(summaries)
    assert len(groups) == 1
    group = groups[0]
    assert group.label == "fha-seed" and [run.name for run in group.runs] == ["fha-seed1", "fha-seed2", "fha-seed3"]
    spread = group.spread("final_val_loss")
    values = np.array([2.0, 2.2, 2.7])
    assert spread.mean == pytest.approx(values.mean())
    assert spread.std == pytest.approx(math.sqrt(((values - values.mean()) ** 2).sum() / 2))
    assert (spread.min, spread.max) == pytest.approx((2.0, 2.7))


def test_group_row_shows_mean_and_spread(runs, tmp_path):
    comparison = compare_runs(runs, tmp_path / "out", names=["a1", "a2", "m", "a3", "b"])
    markdown = comparison.markdown.read_text()
    header = row_of(markdown, "group")
    cells = dict(zip(header, row_of(markdown, "a")))
    assert cells["runs"] == "a1, a2, a3" and cells["seeds"] == "1, 2, 3"
    assert cells["val_loss_nats"] == "2.3000 ± 0.3606 (2.0000–2.7000)"
    assert row_of(markdown, "m")[0] == "m"


def test_held_out_metrics_with_data(tmp_path):
    tokenizer = Tokenizer.train(LINES, 40)
    data = tmp_path / "held_out.txt"
    data.write_text("\n\n".join(LINES) + "\n")
    runs = [make_run(tmp_path / f"s{seed}", 2.0 + seed, train={"seed": seed}, tokenizer=tokenizer) for seed in (1, 2)]
    comparison = compare_runs(runs, tmp_path / "out", data=str(data))
    for run in comparison.runs:
        assert set(run.held_out) >= {"loss_nats", "perplexity", "bits_per_byte", "top1_accuracy", "top5_accuracy"}
        assert run.held_out["perplexity"] == pytest.approx(math.exp(run.held_out["loss_nats"]))
    markdown = comparison.markdown.read_text()
    header = row_of(markdown, "run")
    assert "loss_nats" in header and "bits_per_byte" in header and "tokens_scored" not in header
    loss = comparison.runs[0].held_out["loss_nats"]
    assert dict(zip(header, row_of(markdown, "s1")))["loss_nats"] == f"{loss:.4f}"


def check_error(argv: list[str], message: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fha: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_names_count_mismatch_is_an_error(runs, tmp_path, capsys):
    check_error(
        ["compare", *map(str, runs[:2]), "--out", str(tmp_path / "o"), "--names", "x"],
        "--names gives 1 name for 2 runs",
        capsys,
    )


def test_folders_that_are_not_runs_are_errors(runs, tmp_path, capsys):
    out = str(tmp_path / "o")
    (tmp_path / "empty").mkdir()
    check_error(["compare", str(runs[0]), str(tmp_path / "empty"), "--out", out], "empty: not a run folder", capsys)
    check_error(["compare", str(tmp_path / "missing"), "--out", out], "missing: no such run folder", capsys)
    (runs[1] / LOG_FILE).unlink()
    check_error(["compare", str(runs[1]), "--out", out], "fha-seed2: no log_data.csv", capsys)
    (runs[2] / LOG_FILE).write_text(HEADER + "\n10,0.01,tensor(2.0),2.1,8.1,5.0,100\n")
    check_error(
        ["compare", str(runs[2]), "--out", out], "log_data.csv:2: corrupt log (train_loss_nats is 'tensor(2.0)'", capsys
    )
    (runs[3] / LOG_FILE).write_text("Step,Train Loss\n1,2.0\n")
    check_error(
        ["compare", str(runs[3]), "--out", out], "corrupt log (missing column val_loss_nats, elapsed_s)", capsys
    )
    (runs[0] / TRAIN_CONFIG_FILE).write_text("{not json")
    check_error(["compare", str(runs[0]), "--out", out], "train_config.json: not valid JSON", capsys)


def test_log_without_tokens_column_and_with_empty_cells(tmp_path):
    run = make_run(tmp_path / "old", 2.0, train={})
    (run / LOG_FILE).write_text(
        "Step,Learning Rate,Train Loss,Validation Loss,Perplexity,Time Elapsed\n0,0.1,4.0,,,0\n10,0.1,3.0,3.5,33.1,20\n"
    )
    summary = load_summary(run)
    assert summary.final_val_loss == 3.5 and summary.steps == 10
    assert summary.tokens_per_s == pytest.approx(10 * 4 * 2 * 16 / 20)
    assert math.isnan(read_log(run / LOG_FILE).val_loss[0])


def test_skip_first_values(tmp_path):
    log = read_log(make_run(tmp_path / "r", 2.0) / LOG_FILE)
    assert list(log.after(first_kept_step(log, 0.5)).step) == [20, 30]
    assert list(log.after(first_kept_step(log, 10)).step) == [10, 20, 30]
    assert list(log.after(first_kept_step(log, 0)).step) == list(STEPS)
    assert parse_skip_first("0.1") == 0.1 and parse_skip_first("100") == 100
    for bad in ("-1", "1.5", "many", "inf"):
        with pytest.raises(Exception, match="expected"):
            parse_skip_first(bad)


def test_plot_options_log_axes_and_group_band(runs, tmp_path):
    options = PlotOptions(log_x=True, log_y=True, skip_first=10, x_axes=("step", "time"))
    comparison = compare_runs(runs, tmp_path / "out", options=options)
    assert [path.name for path in comparison.plots] == ["loss_vs_step.png", "loss_vs_time.png"]
    assert all(path.stat().st_size > 0 for path in comparison.plots)


def test_x_axis_is_tokens_seen_by_default(runs, tmp_path):
    from fha.compare.plots import _group_series, _run_series

    with_config = runs[:4]
    assert [path.name for path in compare_runs(with_config, tmp_path / "out").plots] == ["loss_vs_tokens.png"]
    summaries = [load_summary(path) for path in with_config]
    series = _run_series(summaries[2], "tokens", "val_loss", PlotOptions())
    assert list(series.x) == [step * 4 * 2 * 16 for step in STEPS]  # step x batch x grad_accum x max_seq_len
    group = _group_series(seed_groups(summaries)[0], "tokens", "val_loss", PlotOptions())
    assert list(group.x) == list(series.x)
    # a run without a train config has no token count: the figure falls back to steps
    assert [path.name for path in compare_runs(runs, tmp_path / "out2").plots] == ["loss_vs_step.png"]


def test_tokens_per_s_weights_each_interval_by_its_length(tmp_path):
    """Tokens/s is logged per interval since the previous row, and 0 at step 0: the run's rate
    is tokens trained / training time, not the plain mean of the column."""
    run = make_run(tmp_path / "r", 2.0, train={})  # 4 x 2 x 16 = 128 tokens per step
    (run / LOG_FILE).write_text(
        HEADER + "\n0,0.1,4.0,4.0,54.6,0.0,0.0\n20,0.1,3.0,3.0,20.1,32.0,80.0\n30,0.1,2.5,2.5,12.2,36.0,320.0\n"
    )
    summary = load_summary(run)
    assert summary.tokens_per_s == pytest.approx(summary.tokens_seen / summary.wall_time_s)
    assert summary.tokens_per_s == pytest.approx(30 * 128 / 36)


def test_log_x_leaves_out_step_zero_instead_of_clipping_it(runs):
    from fha.compare.plots import _group_series, _run_series

    summaries = [load_summary(path) for path in runs]
    for options, first_step in ((PlotOptions(), 0), (PlotOptions(log_x=True), 10)):
        for x_column in ("step", "time_s"):
            series = _run_series(summaries[2], x_column, "val_loss", options)
            assert series.x[0] == first_step * (1 if x_column == "step" else 0.5)
            group = _group_series(seed_groups(summaries)[0], x_column, "val_loss", options)
            assert group.x[0] == series.x[0] and len(group.low) == len(group.x)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--out", "{tmp}/a_file"], "--out {tmp}/a_file: is a file, not a folder"),
        (["--out", "{tmp}/o", "--skip-first", "1.5"], "--skip-first: expected an integer step count"),
        (["--out", "{tmp}/o", "--skip-first", "nan"], "--skip-first: expected an integer step count"),
        (["--out", "{tmp}/o", "--skip-first", "31"], "--skip-first 31 steps leaves nothing of run fha-seed1"),
    ],
)
def test_bad_output_and_skip_options_are_one_line_errors(runs, tmp_path, capsys, argv, message):
    (tmp_path / "a_file").write_text("")
    argv = [a.format(tmp=tmp_path) for a in argv]
    check_error(["compare", str(runs[0]), *argv], message.format(tmp=tmp_path), capsys)
    assert not (tmp_path / "o").exists()


def test_held_out_documents_is_shared_with_eval(tmp_path):
    from fha.compare import held_out_documents
    from fha.evaluation import held_out_documents as eval_held_out_documents

    data = tmp_path / "held_out.txt"
    data.write_text("\n\n".join(LINES) + "\n")
    assert held_out_documents is eval_held_out_documents
    assert held_out_documents(str(data)) == LINES


def write_run_info(directory: Path, tokenizer: str, train_sha: str, **extra) -> None:
    info = {
        "tokenizer_fingerprint": tokenizer,
        "data": {
            "train": {"path": "/x/train.txt", "sha256": train_sha},
            "val": {"split_of_train": {"val_fraction": 0.05, "split_seed": 0}},
        },
        "fha_version": "0.1.0",
        "torch_version": "2.x",
        "device": "cpu (float32)",
        "threads": 2,
        **extra,
    }
    (directory / "run_info.json").write_text(json.dumps(info))


def test_runs_with_other_tokenizers_or_data_are_flagged_not_grouped(tmp_path):
    runs = [make_run(tmp_path / f"fha-seed{seed}", 2.0 + seed / 10, train={"seed": seed}) for seed in (1, 2, 3)]
    write_run_info(runs[0], "aaaa", "d1")
    write_run_info(runs[1], "bbbb", "d1")
    write_run_info(runs[2], "aaaa", "d2")
    comparison = compare_runs(runs, tmp_path / "out")
    assert comparison.groups == []
    markdown = comparison.markdown.read_text()
    assert (
        "Warning: these runs use different tokenizers: fha-seed1, fha-seed3 (tokenizer aaaa); fha-seed2 "
        "(tokenizer bbbb)."
    ) in markdown
    assert (
        "Warning: these runs were trained or validated on different data: fha-seed1, fha-seed2 (train d1, val"
        in markdown
    )
    assert "| fha-seed1 | — | 0.1.0 | 2.x | — | cpu (float32) | 2 |" in markdown  # the environment table


def test_paired_differences_of_seed_groups_with_the_same_seeds(tmp_path):
    fha = [make_run(tmp_path / f"fha-s{seed}", value, train={"seed": seed}) for seed, value in ((1, 2.0), (2, 2.3))]
    mha = [
        make_run(tmp_path / f"mha-s{seed}", value, train={"seed": seed}, attention="mha")
        for seed, value in ((1, 2.2), (2, 2.4))
    ]
    comparison = compare_runs([*mha, *fha], tmp_path / "out")
    heading, _, table = comparison.sections[0]
    assert heading == "Paired differences"
    # fha - mha per seed: -0.2 and -0.1; mean -0.15, sd 0.0707, t(0.975, 1) = 12.7062: half-width 0.6353
    half = 12.706204736 * math.sqrt(0.005) / math.sqrt(2)
    assert table.rows == [
        ["fha-s − mha-s", "1: -0.2000, 2: -0.1000", f"-0.1500 [{-0.15 - half:+.4f}, {-0.15 + half:+.4f}]", "2 of 2"]
    ]


def test_data_that_is_a_runs_training_text_is_flagged(tmp_path, caplog):
    from fha.runs.info import file_digest

    tokenizer = Tokenizer.train(LINES, 40)
    data = tmp_path / "train.txt"
    data.write_text("\n\n".join(LINES) + "\n")
    run = make_run(tmp_path / "r", 2.0, train={"seed": 1}, tokenizer=tokenizer)
    write_run_info(run, tokenizer.fingerprint, file_digest(data))
    comparison = compare_runs([run], tmp_path / "out", data=str(data))
    markdown = comparison.markdown.read_text()
    tokens = comparison.runs[0].held_out["tokens_scored"]
    assert f"the whole of {data} (2 documents, {tokens:,} tokens scored per run)" in markdown
    assert f"Warning: the held-out text {data} is the training text of r;" in markdown
    assert "is the training text of r" in caplog.text
    header = row_of(markdown, "run")
    assert header.index("bits_per_byte") < header.index("loss_nats") < header.index("val_loss_nats")


def test_a_run_written_with_the_old_step_field_names_groups_with_a_newer_one(tmp_path):
    old = make_run(tmp_path / "old-seed1", 2.0, train={"seed": 1})
    config = json.loads((old / TRAIN_CONFIG_FILE).read_text())
    config["max_iters"] = config.pop("max_steps")  # as train_config.json was written before the rename
    (old / TRAIN_CONFIG_FILE).write_text(json.dumps(config))
    new = make_run(tmp_path / "new-seed2", 2.2, train={"seed": 2})
    summaries = [load_summary(old), load_summary(new)]
    assert summaries[0].train_config["max_steps"] == 30 and "max_iters" not in summaries[0].train_config
    (group,) = seed_groups(summaries)
    assert [run.name for run in group.runs] == ["old-seed1", "new-seed2"]


def study_runs(root: Path, variants=("fha", "mha"), seeds=(0, 1)) -> list[Path]:
    """A study's layout: runs/VARIANT/lr-0.01/seed-N, so every folder name repeats once per variant."""
    paths = []
    for offset, variant in enumerate(variants):
        for seed in seeds:
            directory = root / "runs" / variant / "lr-0.01" / f"seed-{seed}"
            directory.mkdir(parents=True)
            paths.append(make_run(directory, 2.0 + offset + 0.1 * seed, train={"seed": seed}, attention=variant))
    return paths


def test_repeated_folder_names_give_way_to_what_differs_attention_first(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", *map(str, study_runs(tmp_path / "study")), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    names = ["fha seed=0", "fha seed=1", "mha seed=0", "mha seed=1"]
    assert [row_of(stdout, name)[0] for name in names] == names
    assert row_of(stdout, "fha")[1] == "fha seed=0, fha seed=1" and row_of(stdout, "mha")[1] == "mha seed=0, mha seed=1"
    assert "| mha − fha | 0: +1.0000, 1: +1.0000 |" in stdout  # the paired difference names both groups
    assert "seed − seed" not in stdout


def test_runs_alike_in_settings_are_named_by_the_parts_of_their_paths_that_differ(tmp_path):
    paths = study_runs(tmp_path / "study-a", variants=("fha",)) + study_runs(tmp_path / "study-b", variants=("fha",))
    comparison = compare_runs(paths, tmp_path / "out")
    assert [run.name for run in comparison.runs] == [
        "study-a/seed-0",
        "study-a/seed-1",
        "study-b/seed-0",
        "study-b/seed-1",
    ]


def test_one_run_given_twice_is_numbered_with_a_warning(tmp_path, caplog):
    run = make_run(tmp_path / "seed-0", 2.0, train={"seed": 0})
    comparison = compare_runs([run, run], tmp_path / "out")
    assert [summary.name for summary in comparison.runs] == ["seed-0", "seed-0 #2"]
    assert "pass `names` to tell them apart" in caplog.text


def test_repeated_names_are_an_error(runs, tmp_path, capsys):
    check_error(
        ["compare", *map(str, runs[:3]), "--out", str(tmp_path / "o"), "--names", "a", "b", "a"],
        "--names repeats 'a': every run needs a name of its own",
        capsys,
    )


def test_group_labels_cut_at_whole_components_and_never_repeat():
    assert group_labels([["fha seed=0", "fha seed=1"], ["fha-seed1", "fha-seed2"], ["x/seed-0", "x/seed-1"]]) == [
        "fha",
        "fha-seed",
        "x",
    ]
    assert group_labels([["a1", "a2"], ["a3", "a4"], ["b1", "c1"]]) == ["a1 (+1)", "a3 (+1)", "b1 (+1)"]


def test_every_panel_of_the_loss_figure_has_its_legend(runs, tmp_path, monkeypatch):
    import fha.compare.plots as plots

    figures = []
    real_save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda figure, *args: figures.append(figure) or real_save(figure, *args))
    compare_runs(runs[:4], tmp_path / "out")
    (figure,) = figures
    legends = [ax.get_legend() for ax in figure.axes]
    assert len(legends) == 2 and all(legend is not None for legend in legends)
    assert [text.get_text() for text in legends[0].get_texts()] == [text.get_text() for text in legends[1].get_texts()]


def test_the_command_line_asks_for_names_by_their_flag(tmp_path, caplog):
    from fha.cli import _FlagsFormatter

    run = make_run(tmp_path / "seed-0", 2.0, train={"seed": 0})
    assert main(["compare", str(run), str(run), "--out", str(tmp_path / "out")]) == 0
    (record,) = [record for record in caplog.records if "tell them apart" in record.getMessage()]
    shown = _FlagsFormatter("%(message)s").format(record)  # how fha's console handler writes it
    assert "pass --names to tell them apart" in shown and "`names`" not in shown
