"""fha study with a [grid]: parsing, planning per grid point, a tiny grid study end to end, the scaling
section, and the fingerprints and folders of studies without a grid left as they were."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
from test_study import CONTEXT, SHARED, SWEEP, TOKENS_PER_STEP, write_spec

from fha.cli import main
from fha.errors import FhaError
from fha.study.layout import STUDY_FILE, STUDY_FORMAT, context_to_dict
from fha.study.ledger import Ledger, write_entry
from fha.study.plan import EVALUATION, TUNING, Cell, Planner, Seeds, tuning_outcome
from fha.study.report import write_report
from fha.study.results import RESULTS_FILE, load_results
from fha.study.runner import run_study
from fha.study.scaling import scaling
from fha.study.spec import load_spec

REPO_ROOT = Path(__file__).resolve().parents[1]
UNSIZED = SHARED.replace("dim = 32\n", "")  # the shared settings without the width, which a size grid sets
SIZES = """
[[grid.points]]
dim = 16
head_dim = 8

[[grid.points]]
dim = 32
head_dim = 16
"""
SPLITS = "\n[grid]\nfractal_split = [2, 4]\n"


def grid_spec(folder: Path, grid: str, *, shared: str = UNSIZED, sweep: str = "", **changes) -> Path:
    return write_spec(folder, shared=shared, sweep=sweep + grid, **changes)


# ------------------------------------------------------------------ spec
@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("[grid]\ndimm = [16]", "grid.dimm: unknown setting (did you mean dim?)"),
        ("[grid]\nfractal_split = 2", "grid.fractal_split must be a list of values, got 2"),
        ("[grid]\nfractal_split = []", "grid.fractal_split must be a non-empty list of values"),
        ("[grid]\nfractal_split = [2, 2]", "grid.fractal_split has repeated values: [2, 2]"),
        ("[grid]\nlr_max = [0.01, 0.02]", "grid.lr_max: the learning rate is tuned by [sweep], not a grid axis"),
        ("[grid]\nvocab_size = [32, 64]", "grid.vocab_size: must be the same for every run (put it in [set])"),
        ("[grid]\neval_interval = [2, 4]", "grid.eval_interval: changes only what is logged, not a result"),
        ("[grid]\nmax_steps = [2]", "grid.max_steps: set by the study's `tokens`, not here"),
        ("[grid]\nnum_layers = [1, 2]", "grid.num_layers: also in [set]; a setting is shared or a grid axis"),
        ("[grid]\nattention = ['mha']", "grid.attention: also set by variant fha; a setting is a variant's"),
        ("[grid]\nwarmup_iters = [1]\nwarmup_steps = [2]", "grid.warmup_steps: the same setting as grid.warmup_iters"),
        ("[grid]\nmlp_nonlinearity = ['a/b']", "grid.mlp_nonlinearity values must be letters, digits, '.', '_' or"),
        ("[grid]\nhead_splits = [[1, 2]]", "grid.head_splits values must be numbers, strings or booleans"),
        ("[grid]", "grid: empty; give lists of values"),
        ("[grid]\npoints = 3", "grid.points must be an array of tables ([[grid.points]])"),
        (SIZES + "\n[[grid.points]]\ndim = 64\n", "grid.points[2] sets dim; every point must set the settings"),
        (SIZES + "\n[[grid.points]]\ndim = 16\nhead_dim = 8\n", "grid.points[2] repeats grid.points[0]"),
        ("[grid]\ndim = [8]\n" + SIZES, "grid.points[0].dim: also a list in [grid]"),
        ("[[grid.points]]\ndimm = 16\n", "grid.points[0].dimm: unknown setting (did you mean dim?)"),
        ("[grid]\nfractal_split = [2, 3]", "grid point fractal_split-3: invalid configuration: "),
    ],
)
def test_grid_errors_name_the_field(tmp_path, grid, message):
    path = grid_spec(tmp_path, grid, shared=UNSIZED.replace("warmup_steps = 1\n", ""))
    with pytest.raises(FhaError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert main(["study", "plan", str(path), "--timing-steps", "0"]) == 2


def test_grid_points_cross_the_lists_and_name_their_folders(tmp_path):
    spec = load_spec(grid_spec(tmp_path, SIZES + SPLITS))
    assert [point.label for point in spec.points] == [
        "dim-16+head_dim-8+fractal_split-2",
        "dim-16+head_dim-8+fractal_split-4",
        "dim-32+head_dim-16+fractal_split-2",
        "dim-32+head_dim-16+fractal_split-4",
    ]
    assert spec.points[1].title == "dim=16, head_dim=8, fractal_split=4" and spec.points[1].coordinates == (0, 1)
    assert spec.grid.axis_names == ("points", "fractal_split")
    model, _ = spec.configs("fha", 0.01, 0, 0, spec.tokens, spec.points[3].label)
    assert (model.dim, model.head_dim, model.fractal_split, model.attention) == (32, 16, 4, "fha")
    again = load_spec(grid_spec(tmp_path, SIZES + SPLITS))
    assert again.to_dict() == spec.to_dict() and spec.to_dict()["grid"] == {
        "fractal_split": [2, 4],
        "points": [{"dim": 16, "head_dim": 8}, {"dim": 32, "head_dim": 16}],
    }
    assert "grid" not in load_spec(write_spec(tmp_path)).to_dict()  # study.json of a study without a grid unchanged


# ------------------------------------------------------------------ plan
def test_each_grid_point_is_tuned_and_planned_apart(tmp_path):
    sweep = SWEEP.replace("max_extensions = 0", "max_extensions = 1")
    spec = load_spec(grid_spec(tmp_path, SPLITS, shared=SHARED, sweep=sweep))
    planner = Planner(spec, CONTEXT)
    best = {"fractal_split-2": 0.003, "fractal_split-4": 0.01}  # each point prefers another rate

    def score(cell: Cell) -> float:
        return abs(math.log(cell.lr_max / best[cell.point]))

    outcomes = {point.label: tuning_outcome(planner, score, point.label) for point in spec.points}
    assert outcomes["fractal_split-2"].chosen == {"fha": 0.003, "mha": 0.003}
    assert outcomes["fractal_split-4"].chosen == {"fha": 0.01, "mha": 0.01}
    assert outcomes["fractal_split-2"].grids["fha"] == (0.0009, 0.003, 0.01)  # extended below at this point only
    assert outcomes["fractal_split-4"].grids["fha"] == (0.003, 0.01, 0.0333333)
    tuning = planner.tuning_cells(outcomes["fractal_split-4"].grids, "fractal_split-4")
    assert len(tuning) == 2 * 3 and {cell.point for cell in tuning} == {"fractal_split-4"}
    assert {cell.role for cell in tuning} == {TUNING}
    cells = [
        cell for point in spec.points for cell in planner.evaluation_cells(outcomes[point.label].chosen, point.label)
    ]
    assert len(cells) == 2 * 2 * 2  # points x variants x seeds
    plans = [planner.plan(cell) for cell in cells]
    assert len({plan.fingerprint for plan in plans}) == len(plans)
    first = plans[0]
    assert first.cell.run_id == "fractal_split-2/fha/lr-0.003/seed-0/tokens-512"
    assert first.folder_name == f"fractal_split-2/fha/lr-0.003/seed-0/tokens-512-{first.fingerprint[:8]}"
    assert {plan.model_config.fractal_split for plan in plans} == {2, 4}
    # a grid point with the settings of a study without a grid is the same computation: its runs are reused
    plain = Planner(load_spec(write_spec(tmp_path, sweep=sweep)), CONTEXT)
    same = Cell("fha", 0.003, Seeds(0, 0), 512, EVALUATION)
    assert plain.plan(same).fingerprint == first.fingerprint  # the tiny preset's fractal_split is 2


def test_a_study_without_a_grid_keeps_its_fingerprints_and_folders(tmp_path):
    """Recorded before grids existed: a spec without [grid] must plan exactly the runs it planned then."""
    planner = Planner(load_spec(write_spec(tmp_path, extra="budgets = [256]")), CONTEXT)
    evaluation = planner.plan(Cell("fha", 0.01, Seeds(0, 0), 512, EVALUATION))
    tuning = planner.plan(Cell("mha", 0.003, Seeds(100, 100), 256, TUNING))
    assert evaluation.fingerprint == "33f2e8bb8825b466"
    assert evaluation.folder_name == "fha/lr-0.01/seed-0/tokens-512-33f2e8bb"
    assert tuning.fingerprint == "fe85b76006c726cb"
    assert tuning.folder_name == "mha/lr-0.003/seed-100/tokens-256-fe85b760"


# ------------------------------------------------------------------ a tiny grid study, end to end
@pytest.mark.slow
def test_a_grid_study_runs_and_reports_each_point(tmp_path, capsys):
    spec = load_spec(grid_spec(tmp_path, SIZES, tokens=4 * TOKENS_PER_STEP))
    out = tmp_path / "study"
    progress = run_study(spec, out, jobs=1)
    assert len(progress.finished) == 2 * 2 * 2  # points x variants x seeds
    folders = sorted(path.relative_to(out / "runs").parts[:2] for path in (out / "runs").glob("*/*/lr-*"))
    assert folders == [
        ("dim-16+head_dim-8", "fha"),
        ("dim-16+head_dim-8", "mha"),
        ("dim-32+head_dim-16", "fha"),
        ("dim-32+head_dim-16", "mha"),
    ]
    entries = Ledger.read([out]).entries.values()
    assert {entry.data["cell"]["point"] for entry in entries} == {"dim-16+head_dim-8", "dim-32+head_dim-16"}
    sizes = {entry.data["cell"]["point"]: entry.parameters for entry in entries}
    assert sizes["dim-16+head_dim-8"] < sizes["dim-32+head_dim-16"]
    assert run_study(spec, out, jobs=1).finished == []  # every run is in the ledger
    report = write_report([out])
    markdown = report.markdown.read_text()
    for heading in (
        "## Grid point dim=16, head_dim=8",
        "## Grid point dim=32, head_dim=16",
        "### Paired differences against the baseline",
        "## Scaling",
        "### Paired differences by size",
    ):
        assert heading in markdown
    assert markdown.count("### Paired differences against the baseline") == 2
    assert "No power law is fitted: fha: 2 sizes: a power law needs 3; mha: 2 sizes: a power law needs 3." in markdown
    assert report.verdict.startswith("At dim=16, head_dim=8: ") and " At dim=32, head_dim=16: " in report.verdict
    assert "no correction across grid points" in report.verdict
    names = {path.name for path in report.figures}
    assert names == {
        "validation_curves_dim-16+head_dim-8.png",
        "validation_curves_dim-32+head_dim-16.png",
        "test_bits_per_byte.png",  # every grid point in one figure
        "paired_differences.png",
        "scaling.png",
    }
    rows = list(csv.DictReader(io.StringIO((out / RESULTS_FILE).read_text())))
    assert rows[0]["grid_point"] == "dim-16+head_dim-8" and rows[0]["dim"] == "16" and rows[0]["head_dim"] == "8"
    assert rows[0]["run"].startswith("dim-16+head_dim-8/")
    capsys.readouterr()
    assert main(["analyze", str(out)]) == 2  # the mechanisms of a study pool over one setting only
    assert "a study with a [grid] pools runs of different settings" in capsys.readouterr().err


# ------------------------------------------------------------------ scaling, from a synthetic ledger
PARAMETERS = {16: 10_000, 32: 100_000, 64: 1_000_000}  # by dim: made-up parameter counts
LAW = {  # (variant, fractal_split) -> (E, A, alpha) of L = E + A * N**-alpha
    ("fha", 2): (1.0, 30.0, 0.4),
    ("mha", 2): (1.1, 30.0, 0.4),
    ("fha", 4): (1.2, 20.0, 0.3),
    ("mha", 4): (1.3, 20.0, 0.3),
}
OFFSETS = {"fha": (0.01, -0.01), "mha": (0.02, -0.02)}  # per seed, mean 0: paired differences of -0.11 and -0.09
THREE_SIZES = SIZES + "\n[[grid.points]]\ndim = 64\nhead_dim = 32\n" + SPLITS


def _metrics(bits_per_byte: float) -> dict[str, float]:
    return {
        "loss": bits_per_byte,
        "bits_per_byte": bits_per_byte,
        "top1_accuracy": 0.5,
        "num_tokens": 1,
        "num_bytes": 1,
    }


def synthetic_grid_study(folder: Path) -> tuple[Path, Path]:
    """A study folder whose ledger holds every evaluation run of a 3-size x 2-split grid, with test bits per
    byte from `LAW` (no training); returns the folder and its spec."""
    path = grid_spec(folder, THREE_SIZES)
    spec = load_spec(path)
    out = folder / "study"
    out.mkdir()
    record = {"format": STUDY_FORMAT, "spec": spec.to_dict(), "context": context_to_dict(CONTEXT)}
    (out / STUDY_FILE).write_text(json.dumps(record))
    planner = Planner(spec, CONTEXT)
    for point in spec.points:
        n = PARAMETERS[point.settings["dim"]]
        for cell in planner.evaluation_cells(
            {name: spec.base_lr_max(name) for name in spec.variant_names}, point.label
        ):
            e, a, alpha = LAW[cell.variant, point.settings["fractal_split"]]
            value = e + a * n**-alpha + OFFSETS[cell.variant][cell.seeds.init]
            metrics = {"valid": _metrics(value), "test": _metrics(value)}
            write_entry(out, planner.plan(cell), {"metrics": metrics, "parameters": n, "curve": {}})
    return out, path


def test_scaling_fits_the_law_the_results_follow(tmp_path, capsys):
    out, path = synthetic_grid_study(tmp_path)
    found = scaling(load_results([out]))
    assert found.axes == ("(dim, head_dim) together",)  # fractal_split does not change the size: it splits the series
    fits = {series.label: series for series in found.series}
    assert set(fits) == {f"{name} (fractal_split={split})" for name, split in LAW}
    for (name, split), (e, a, alpha) in LAW.items():
        series = fits[f"{name} (fractal_split={split})"]
        assert [size.parameters for size in series.sizes] == sorted(PARAMETERS.values())
        assert series.fit.E == pytest.approx(e, rel=1e-6) and series.fit.A == pytest.approx(a, rel=1e-5)
        assert series.fit.alpha == pytest.approx(alpha, rel=1e-6) and series.note == ""
    differences = [d for d in found.differences if d.context == "fractal_split=2"]
    assert [d.parameters for d in differences] == sorted(PARAMETERS.values())
    for difference in differences:
        assert difference.paired.differences == pytest.approx((-0.11, -0.09))
        assert difference.paired.interval.mean == pytest.approx(-0.1)
    assert main(["study", "plan", str(path), "--out", str(out), "--timing-steps", "0"]) == 0
    assert capsys.readouterr().out.startswith("0 runs to train, 24 reusable from the ledger")
    grown = grid_spec(tmp_path, THREE_SIZES, seeds="[0, 1, 2]", name="grown.toml")
    assert main(["study", "plan", str(grown), "--out", str(out), "--timing-steps", "0"]) == 0
    printed = capsys.readouterr().out
    assert (
        printed.startswith("12 runs to train, 24 reusable")
        and "  dim-16+head_dim-8+fractal_split-2 fha: 1 new" in printed
    )


@pytest.mark.slow
def test_the_report_of_a_grid_that_changes_the_size_has_a_scaling_section(tmp_path):
    out, _ = synthetic_grid_study(tmp_path)
    report = write_report([out])
    markdown = report.markdown.read_text()
    assert "## Scaling" in markdown and "along (dim, head_dim) together" in markdown
    assert "With 3 sizes the law has as many parameters as there are points" in markdown
    assert "| fha (fractal_split=2) | 3 | 10,000 – 1,000,000 | 1.0000 | 30 | 0.4000 |" in markdown
    assert "| fha (fractal_split=2) − mha | dim=64, head_dim=32, fractal_split=2 | 1,000,000 | -0.1000 [" in markdown
    assert markdown.count("## Grid point ") == 6
    assert [p.name for p in report.figures] == ["test_bits_per_byte.png", "paired_differences.png", "scaling.png"]


# ------------------------------------------------------------------ the shipped scaling study
def test_the_scaling_study_loads_with_three_sizes():
    spec = load_spec(REPO_ROOT / "studies" / "scaling.toml")
    assert [point.label for point in spec.points] == [
        "dim-32+head_dim-16",
        "dim-64+head_dim-32",
        "dim-128+head_dim-64",
    ]
    assert spec.grid.axis_names == ("points",) and spec.sweep.seeds == (100,)
