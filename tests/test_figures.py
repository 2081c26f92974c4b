"""Figures fit for a paper (formats, resolution, markers, plain log ticks), the HTML report's
tables, one number format, and runs that are unfinished."""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
from pathlib import Path

import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from test_compare import make_run
from tiny_run import LINES
from train_helpers import run_tiny

from fha import Tokenizer
from fha.cli import main
from fha.compare import PlotOptions, compare_runs, load_summary
from fha.compare.plots import PANEL_INCHES, PANELS, _run_series
from fha.compare.report import Table, format_percent, html_table, metric_format, numeric_columns
from fha.errors import FhaError
from fha.figures import plain_log_ticks, save_figure
from fha.runs.folder import MODEL_FILE, load_run
from fha.study.figures import validation_curves
from fha.study.results import load_results

PNG_SIZE = struct.Struct(">II")  # width, height in the IHDR chunk
PNG_SIZE_OFFSET = 16


def png_size(path: Path) -> tuple[int, int]:
    return PNG_SIZE.unpack_from(path.read_bytes(), PNG_SIZE_OFFSET)


@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    return [make_run(tmp_path / "fha", 2.0, train={"seed": 1}), make_run(tmp_path / "mha", 2.5, attention="mha")]


@pytest.mark.slow
def test_png_figures_have_the_asked_resolution(two_runs, tmp_path):
    for dpi in (150, 300):
        comparison = compare_runs(two_runs, tmp_path / f"dpi{dpi}", options=PlotOptions(dpi=dpi))
        width, height = png_size(comparison.plots[0])
        assert (width, height) == (round(PANEL_INCHES[0] * len(PANELS) * dpi), round(PANEL_INCHES[1] * dpi))


@pytest.mark.slow
def test_svg_and_pdf_figures(two_runs, tmp_path, capsys):
    axes = ["--x-axis", "step", "time"]
    assert main(["compare", *map(str, two_runs), "--out", str(tmp_path / "svg"), "--format", "svg", *axes]) == 0
    svg = tmp_path / "svg" / "loss_vs_step.svg"
    assert "<svg" in svg.read_text()[:500] and not (tmp_path / "svg" / "loss_vs_step.png").exists()
    page = (tmp_path / "svg" / "report.html").read_text()
    assert page.count('src="data:image/svg+xml;base64,') == 2

    assert main(["compare", *map(str, two_runs), "--out", str(tmp_path / "pdf"), "--format", "pdf", *axes]) == 0
    pdf = tmp_path / "pdf" / "loss_vs_time.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    markdown = (tmp_path / "pdf" / "report.md").read_text()
    assert "![loss vs time](loss_vs_time.png)" in markdown and "([loss_vs_time.pdf](loss_vs_time.pdf))" in markdown
    assert (tmp_path / "pdf" / "report.html").read_text().count('src="data:image/png;base64,') == 2
    assert f"wrote {pdf}" in capsys.readouterr().out


def test_bad_figure_options(two_runs, tmp_path, capsys):
    assert main(["compare", str(two_runs[0]), "--out", str(tmp_path / "o"), "--dpi", "20"]) == 2
    assert capsys.readouterr().err == "fha: error: --dpi must be between 50 and 1200, got 20\n"
    with pytest.raises(FhaError, match=r"^x\.jpg: cannot write a figure as 'jpg' \(use \.png, \.svg, \.pdf\)$"):
        save_figure(Figure(), "x.jpg")


@pytest.mark.parametrize(
    "low, high, labels",
    [
        (1.5, 6.0, ["2", "3", "4", "6"]),
        (1e-4, 1e-2, ["0.0001", "0.001", "0.01"]),
        (0.3, 0.9, ["0.3", "0.4", "0.6"]),
    ],
)
def test_log_ticks_are_plain_numbers(low, high, labels):
    figure = Figure()
    ax = figure.subplots()
    ax.plot([0, 1], [low, high])
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    figure.canvas.draw()
    low_view, high_view = ax.get_ylim()
    shown = [
        tick.get_text()
        for tick in [*ax.get_yticklabels(), *ax.get_yticklabels(minor=True)]
        if tick.get_text() and low_view <= tick.get_position()[1] <= high_view
    ]
    assert all(label in shown for label in labels), shown
    assert all(re.fullmatch(r"\d+(\.\d+)?", label) for label in shown), shown


@pytest.mark.slow
def test_train_curve_from_metrics_csv_and_markers_at_evaluations(corpus, tmp_path):
    run = load_summary(run_tiny(corpus, tmp_path / "run", log_interval=1).run_dir)
    train_curve = _run_series(run, "step", "train_loss", PlotOptions())
    assert list(train_curve.x) == [1, 2, 3, 4, 5, 6] and not train_curve.markers
    val_curve = _run_series(run, "step", "val_loss", PlotOptions())
    assert list(val_curve.x) == [0, 2, 4, 6] and val_curve.markers


def testhtml_tables_scroll_and_right_align_numbers():
    table = Table(
        ["run", "attention", "parameters", "held-out top1_accuracy", "wall time", "final val loss"],
        [
            ["a", "fha (split 2)", "90,304", "34.67%", "3m 12s", "2.3000 ± 0.3606 (2.0000–2.7000)"],
            ["b", "mha", "90,304", "—", "45.2 s", "—"],
        ],
    )
    assert numeric_columns(table) == [False, False, True, True, True, True]
    page = html_table(table)
    assert page.startswith('<div class="table-scroll"><table>')
    assert '<td class="text">fha (split 2)</td>' in page and '<td class="num">34.67%</td>' in page
    assert format_percent(0.3467) == "34.67%" and metric_format("top5_accuracy")(0.5) == "50.00%"
    assert metric_format("perplexity")(1234.5) == "1,234.50" and metric_format("loss")(2.0) == "2.0000"


@pytest.mark.slow
def test_unfinished_runs_are_compared_and_used_from_their_latest_checkpoint(corpus, tmp_path, capsys, caplog):
    finished = run_tiny(corpus, tmp_path / "done").run_dir
    unfinished = run_tiny(corpus, tmp_path / "live", checkpoint_interval=3).run_dir
    (unfinished / MODEL_FILE).unlink()  # as while it trains, or after a stop
    out = tmp_path / "report"
    assert main(["compare", str(finished), str(unfinished), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "| live (unfinished) |" in markdown and "| done |" in markdown
    assert "Unfinished (no final weights yet; numbers as of their last log row): live." in markdown

    caplog.set_level(logging.WARNING)
    model, _, _ = load_run(unfinished)
    assert f"{unfinished}: no final weights (the run is unfinished); using its latest checkpoint, step 6" in caplog.text
    data = tmp_path / "valid.txt"
    data.write_text("\n\n".join(LINES) + "\n")
    capsys.readouterr()
    for argv in (
        ["eval", str(unfinished), "--data", str(data), "--json"],
        ["generate", str(unfinished), "--prompt", "Lily", "--max-new-tokens", "3", "--seed", "0"],
        ["inspect", str(unfinished)],
        ["compare", str(unfinished), "--out", str(tmp_path / "held"), "--data", str(data)],
    ):
        assert main(argv) == 0, argv
    assert "Traceback" not in capsys.readouterr().err


def test_a_run_with_only_its_logs_is_compared_but_not_evaluated(tmp_path, capsys):
    tokenizer = Tokenizer.train(LINES, 40)
    two_runs = [make_run(tmp_path / name, 2.0, tokenizer=tokenizer) for name in ("a", "b")]
    (two_runs[1] / MODEL_FILE).unlink()  # no weights and no checkpoint
    comparison = compare_runs(two_runs, tmp_path / "out")
    assert [run.finished for run in comparison.runs] == [True, False]
    data = tmp_path / "valid.txt"
    data.write_text("\n\n".join(LINES) + "\n")
    assert main(["compare", *map(str, two_runs), "--out", str(tmp_path / "o"), "--data", str(data)]) == 2
    assert capsys.readouterr().err == f"fha: error: {two_runs[1]}: not a run folder (no {MODEL_FILE})\n"


@pytest.mark.slow
def test_attention_maps_show_masked_positions_apart_and_label_the_colour_bar(tmp_path, monkeypatch):
    from tiny_run import make_model, make_tokenizer

    from fha.inspection import attention_maps, figures, save_attention_heatmaps

    tokenizer = make_tokenizer()
    model = make_model(tokenizer)
    ids = tokenizer.encode("Lily saw a dog", bos=True)
    drawn: list[Figure] = []
    original = figures.save_figure
    monkeypatch.setattr(
        figures, "save_figure", lambda figure, path, dpi: (drawn.append(figure), original(figure, path, dpi))[1]
    )
    written = save_attention_heatmaps(
        attention_maps(model, torch.tensor([ids]), [0]), list(map(str, ids)), tmp_path / "maps", fmt="pdf", dpi=150
    )
    assert written and all(path.suffix == ".pdf" and path.read_bytes().startswith(b"%PDF") for path in written)
    T = len(ids)
    for figure in drawn:
        images = [image for ax in figure.axes for image in ax.get_images()]
        for image in images:
            shown = image.get_array()
            assert shown.mask.tolist() == [[key > query for key in range(T)] for query in range(T)]
            assert image.cmap.get_bad().tolist() == list(to_rgba(figures.MASKED_COLOR))
            assert not (image.cmap(0.0) == image.cmap.get_bad()).all()  # a zero weight looks different
        colour_bars = [ax for ax in figure.axes if ax.get_ylabel() == figures.COLORBAR_LABEL]
        assert len(colour_bars) == 1


@pytest.mark.slow
def test_inspect_and_schedule_write_the_asked_format(tmp_path, capsys, tiny_run_dir):
    run_dir = tiny_run_dir
    out = tmp_path / "maps"
    assert (
        main(
            [
                "inspect",
                str(run_dir),
                "--attention",
                "--prompt",
                "Lily",
                "--out",
                str(out),
                "--format",
                "svg",
                "--layers",
                "0",
            ]
        )
        == 0
    )
    assert (out / "head_layout.svg").is_file() and (out / "layer0.svg").is_file()
    assert not list(out.rglob("*.png"))
    plot = tmp_path / "lr.png"
    assert main(["schedule", "--preset", "tiny", "--plot", str(plot), "--dpi", "200"]) == 0
    assert png_size(plot) == (7 * 200, round(3.5 * 200))
    assert main(["inspect", str(run_dir), "--format", "pdf"]) == 2
    assert "fha: error: --format and --dpi are used with --attention" in capsys.readouterr().err


DECISIVE = Path(__file__).resolve().parents[1] / "docs" / "results" / "decisive"  # a committed study export


@pytest.mark.parametrize("seeds", [{0}, {0, 1}])
def test_study_curves_title_counts_the_seeds(tmp_path, seeds):
    """The curves' title says how many seeds each mean is over, in words that fit the number."""
    study = tmp_path / "study"
    shutil.copytree(DECISIVE, study)
    kept = 0
    for entry in (study / "ledger").glob("*.json"):
        cell = json.loads(entry.read_text())["cell"]
        if cell["role"] == "evaluation" and cell["init_seed"] not in seeds:
            entry.unlink()
        else:
            kept += cell["role"] == "evaluation" and cell["init_seed"] == max(seeds)
    if not kept:
        pytest.skip(f"the committed decisive export has no evaluation run at seed {max(seeds)} yet")
    title = validation_curves(load_results([study], partial=True)[0]).axes[0].get_title()
    expected = "mean of 1 seed;" if len(seeds) == 1 else f"mean of {len(seeds)} seeds;"
    assert expected in title, title


MAIN_STUDY = DECISIVE.parent / "main-study"  # a committed export with eight variants


def test_study_curves_shade_only_the_primary_contrast_and_keep_legends_off_the_data():
    """With seven contrasts, seven interval bands bury every line: only the primary one is shaded, each
    difference keeps its variant's colour from the top panel, and both legends sit right of their axes."""
    figure = validation_curves(load_results([MAIN_STUDY])[0])
    figure.canvas.draw()  # Figure has its own Agg canvas; lay out the legends
    top, bottom = figure.axes
    colours = {
        line.get_label(): to_rgba(line.get_color()) for line in top.get_lines() if line.get_label() != "_nolegend_"
    }
    differences = {line.get_label(): to_rgba(line.get_color()) for line in bottom.get_lines()}
    assert len(differences) == 8  # seven contrasts and the zero line
    for name in ("fha", "uniform-middle", "coarse-to-fine"):
        assert differences[f"{name} − mha"] == colours[name]
    (band,) = bottom.collections
    assert to_rgba(band.get_facecolor()[0], 1.0) == colours["fha"]
    assert bottom.get_legend().get_title().get_text() == "band: 95% interval of fha − mha"
    for ax in (top, bottom):
        legend = ax.get_legend().get_window_extent()
        assert legend.x0 >= ax.get_window_extent().x1, "a legend overlaps its panel"
