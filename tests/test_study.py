"""fha study: the spec, the runner (resume after a kill, shards, paired batches), the statistics and the report."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from matplotlib.image import imread
from train_helpers import write_corpus

from fha.cli import main
from fha.data import PackedBatches, load_documents
from fha.errors import FhaError
from fha.run_info import RUN_INFO_FILE
from fha.stats import mean_interval, paired_difference, t_cdf, t_quantile
from fha.study.layout import EVAL_FILE, RUNS_DIR
from fha.study.report import _verdict_sentence, write_report
from fha.study.results import RESULTS_FILE
from fha.study.runner import Shard, run_study
from fha.study.spec import RunPlan, load_spec, spec_from_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = """
dim = 32
num_layers = 1
vocab_size = 64
max_seq_len = 16
batch_size = 4
num_restarts = 0
eval_interval = 2
eval_samples = 2
checkpoint_interval = 3
"""
VARIANTS = """
[[variants]]
name = "fha"
set = { attention = "fha" }

[[variants]]
name = "mha"
set = { attention = "mha" }
"""
SWEEP = """
[sweep]
lr_max = [0.003, 0.01]
seed = 0
"""
TOKENS_PER_STEP = 4 * 16
TEST_STORIES = 10


def write_spec(
    folder: Path,
    *,
    tokens: int = 8 * TOKENS_PER_STEP,
    seeds: str = "[0, 1]",
    sweep: bool = True,
    extra: str = "",
    shared: str = SHARED,
    variants: str = VARIANTS,
    data: Path | None = None,
) -> Path:
    """A tiny study of FHA against MHA on synthetic stories (written next to the spec unless `data` has them)."""
    data = data or folder
    train, test = data / "train.txt", data / "test.txt"
    if not train.exists():
        write_corpus(train)
        write_corpus(test, num_docs=20, seed=1)
    text = (
        f'description = "tiny"\nbase = "tiny"\nbaseline = "mha"\nseeds = {seeds}\ntokens = {tokens}\n{extra}\n'
        f'[data]\ntrain = "{train}"\ntest = "{test}"\n\n[set]\n{shared}\n{variants}\n{SWEEP if sweep else ""}'
    )
    path = folder / "study.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted tiny study (sweep of 2 rates, 2 variants x 2 seeds) with its report."""
    folder = tmp_path_factory.mktemp("reference")
    out = folder / "study"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FHA_CACHE_DIR", str(folder / "cache"))
        run_study(load_spec(write_spec(folder)), out, jobs=1)
        write_report(out)
    return out


def read_csv(out: Path) -> str:
    return (out / RESULTS_FILE).read_text()


def run_ids(out: Path) -> list[str]:
    return [row.split(",")[0] for row in read_csv(out).splitlines()[1:]]


# ------------------------------------------------------------------ statistics
def test_t_distribution_matches_closed_forms_and_tables():
    for t in (-3.0, -0.4, 0.0, 0.7, 5.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    for df, quantile in ((1, 12.706204736), (2, 4.302652730), (4, 2.776445105), (9, 2.262157163)):
        assert t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-8)  # printed tables
    assert t_quantile(0.025, 3) == pytest.approx(-t_quantile(0.975, 3))


def test_paired_difference_equals_hand_computation():
    variant = {0: 1.20, 1: 1.25, 2: 1.19, 7: 9.0}  # seed 7 has no partner and is left out
    baseline = {0: 1.23, 1: 1.26, 2: 1.24}
    paired = paired_difference(variant, baseline)
    # differences -0.03, -0.01, -0.05: mean -0.03, sample sd 0.02, t(0.975, 2) = 4.302652730
    half = 4.302652730 * 0.02 / math.sqrt(3)
    assert paired.seeds == (0, 1, 2) and paired.wins == 3
    assert paired.interval.mean == pytest.approx(-0.03) and paired.interval.std == pytest.approx(0.02)
    assert (paired.interval.low, paired.interval.high) == pytest.approx((-0.03 - half, -0.03 + half))
    assert not paired.interval.excludes_zero
    single = mean_interval([2.5])
    assert single.mean == 2.5 and math.isnan(single.low)


def test_verdict_sentences_follow_the_interval():
    better = _verdict_sentence("fha", "mha", paired_difference({0: 1.0, 1: 1.1, 2: 1.2}, {0: 1.1, 1: 1.21, 2: 1.29}))
    assert better.startswith("fha is better than mha by 0.1000 bits/byte (fha − mha = -0.1000, 95% CI [")
    assert better.endswith("at this budget; fha was better at 3 of 3 seeds.")
    worse = _verdict_sentence("fha", "mha", paired_difference({0: 1.2, 1: 1.3}, {0: 1.0, 1: 1.1}))
    assert worse.startswith("fha is worse than mha by 0.2000 bits/byte")
    same = _verdict_sentence("fha", "mha", paired_difference({0: 1.0, 1: 1.2}, {0: 1.1, 1: 1.1}))
    assert same == (
        "fha and mha are indistinguishable at this budget: fha − mha = 0.0000 bits/byte, "
        "95% CI [-1.2706, +1.2706], which includes 0; fha was better at 1 of 2 seeds."
    )


# ------------------------------------------------------------------ spec
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": "colour = 1"}, "unknown key 'colour'"),
        ({"seeds": "[0, 0]"}, "seeds has repeated values: [0, 0]"),
        (
            {"tokens": 100},
            "tokens: 100 is not a whole number of steps of variant fha (64 tokens per step = batch_size 4 "
            "x grad_accum_steps 1 x max_seq_len 16); the nearest are 64 and 128",
        ),
        ({"shared": SHARED + "max_steps = 5\n"}, "set.max_steps: set by the study's `tokens`, not here"),
        (
            {"variants": VARIANTS.replace('attention = "mha"', 'attention = "mha", vocab_size = 32')},
            "variants[1].set.vocab_size: must be the same for every variant (put it in [set])",
        ),
        (
            {"variants": VARIANTS.replace('attention = "mha"', 'atention = "mha"')},
            "variants[1].set.atention: unknown setting (did you mean attention?)",
        ),
        (
            {"variants": VARIANTS.replace('name = "mha"', 'name = "mha2"')},
            "baseline: 'mha' is not a variant; variants: fha, mha2",
        ),
        (
            {"variants": VARIANTS.replace('name = "mha"', 'name = "m h a"')},
            "variants[1].name must be letters, digits, '.', '_' or '-', got 'm h a'",
        ),
    ],
)
def test_spec_errors_name_the_field(tmp_path, change, message):
    path = write_spec(tmp_path, **change)
    with pytest.raises(FhaError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_spec_budget_sets_max_steps_and_sweep_scales_the_schedule(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    model, train = spec.configs(RunPlan("mha", 1, 0.003))
    assert model.attention == "mha" and train.max_steps == 8 and train.seed == 1
    assert train.lr_max == 0.003 and train.lr_min == pytest.approx(1e-3 * 0.003 / 1e-2)  # tiny: lr_min/lr_max = 0.1


def test_cli_reports_a_bad_spec_in_one_line(tmp_path, capsys):
    assert main(["study", "run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"fha: error: {tmp_path / 'missing.toml'}: study spec not found\n"
    assert main(["study", "run", str(write_spec(tmp_path)), "--out", str(tmp_path / "o"), "--shard", "3/2"]) == 2
    assert "--shard '3/2': expected I/N with 1 <= I <= N" in capsys.readouterr().err


# ------------------------------------------------------------------ runs
def test_same_seed_gives_both_variants_the_same_batches(tmp_path, monkeypatch):
    drawn: list[tuple[int, list]] = []
    original = PackedBatches.next_batch

    def recording(self):
        x, y = original(self)
        drawn.append((self.seed, x.tolist()))
        return x, y

    monkeypatch.setattr(PackedBatches, "next_batch", recording)
    run_study(load_spec(write_spec(tmp_path, seeds="[0, 1]", sweep=False)), tmp_path / "out", jobs=1)
    per_run = {seed: [batch for s, batch in drawn if s == seed] for seed in (0, 1)}  # training draws only
    for seed, batches in per_run.items():
        assert len(batches) == 2 * 8  # fha then mha, 8 steps each
        assert batches[:8] == batches[8:], f"seed {seed}: the variants saw different batches"
    assert per_run[0][:8] != per_run[1][:8]


def test_study_end_to_end(reference, capsys):
    rows = read_csv(reference).splitlines()
    assert rows[0].startswith("run,variant,seed,learning_rate,parameters,tokens,test_bits_per_byte,test_loss")
    assert len(rows) == 1 + 4 and {row.split(",")[1] for row in rows[1:]} == {"fha", "mha"}
    assert all(row.split(",")[5] == str(8 * TOKENS_PER_STEP) for row in rows[1:])
    page = (reference / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and "Verdict." in page
    markdown = (reference / "report.md").read_text()
    for heading in (
        "## Paired differences against the baseline",
        "## Learning-rate sweep",
        "## Settings that differ between variants",
        "## Environment",
        "fha − mha",
    ):
        assert heading in markdown
    assert main(["study", "report", str(reference)]) == 0
    assert "at this budget" in capsys.readouterr().out


def test_report_figures_at_a_chosen_resolution_and_in_vector_formats(reference, tmp_path):
    low, high = tmp_path / "low", tmp_path / "high"
    assert main(["study", "report", str(reference), "--report-dir", str(low), "--dpi", "100"]) == 0
    assert main(["study", "report", str(reference), "--report-dir", str(high), "--format", "svg", "--dpi", "200"]) == 0
    pngs = sorted(path.name for path in high.glob("*.png"))
    assert len(pngs) == 4 and sorted(path.stem for path in high.glob("*.svg")) == [name[:-4] for name in pngs]
    assert not list(low.glob("*.svg"))
    for name in pngs:  # the PNGs the reports embed follow --dpi
        assert imread(high / name).shape[0] == 2 * imread(low / name).shape[0]
    assert main(["study", "report", str(reference), "--report-dir", str(low), "--dpi", "20"]) == 2


def test_rerun_skips_finished_runs(reference, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    logs = {path: path.stat().st_mtime_ns for path in (copy / RUNS_DIR).rglob("log_data.csv")}
    spec = load_spec(reference.parent / "study.toml")
    progress = run_study(spec, copy, jobs=1)
    assert len(progress.finished) == 6 and not progress.failed  # 4 sweep runs (2 reused) + 2 more main runs
    assert {path: path.stat().st_mtime_ns for path in logs} == logs


def test_killed_study_resumes_and_gives_the_same_results(reference, tmp_path):
    out = tmp_path / "study"
    spec_path = reference.parent / "study.toml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "fha", "study", "run", str(spec_path), "--out", str(out), "--jobs", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    victim = out / RUNS_DIR / "fha/lr-0.01/seed-0"  # the second run
    deadline = time.monotonic() + 120
    while not (victim / "checkpoints" / "step-3").is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (out / RUNS_DIR / "fha/lr-0.003/seed-0" / EVAL_FILE).is_file() and not (victim / EVAL_FILE).exists()
    first_log = (out / RUNS_DIR / "fha/lr-0.003/seed-0/log_data.csv").stat().st_mtime_ns

    run_study(load_spec(spec_path), out, jobs=1)
    assert (out / RUNS_DIR / "fha/lr-0.003/seed-0/log_data.csv").stat().st_mtime_ns == first_log  # not retrained
    assert len(json.loads((victim / RUN_INFO_FILE).read_text())["resumes"]) == 1  # resumed, not restarted
    write_report(out)
    assert read_csv(out) == read_csv(reference)


def test_two_shards_give_the_same_report(reference, tmp_path):
    out = tmp_path / "study"
    spec = load_spec(reference.parent / "study.toml")
    first = run_study(spec, out, shard=Shard.parse("1/2"), jobs=1)
    assert first.waiting_for_sweep  # the other shard's sweep runs are missing
    second = run_study(spec, out, shard=Shard.parse("2/2"), jobs=1)
    assert not second.waiting_for_sweep
    run_study(spec, out, shard=Shard.parse("1/2"), jobs=1)
    report = write_report(out)
    assert read_csv(out) == read_csv(reference)
    assert report.verdict == write_report(reference, tmp_path / "again").verdict


def test_report_refuses_mixed_tokenizers_and_unfinished_runs(reference, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    first, *_, last = run_ids(reference)
    info_path = copy / RUNS_DIR / last / RUN_INFO_FILE
    info = json.loads(info_path.read_text())
    original = info["tokenizer_fingerprint"]
    info_path.write_text(json.dumps({**info, "tokenizer_fingerprint": "0123456789abcdef"}))
    with pytest.raises(FhaError) as err:
        write_report(copy)
    assert str(err.value) == (
        f"cannot pool runs: {first} and {last} differ in their tokenizer ({original} vs 0123456789abcdef)"
    )
    (copy / RUNS_DIR / last / EVAL_FILE).unlink()
    with pytest.raises(FhaError, match=f"1 of 4 runs are not finished \\({last}\\)"):
        write_report(copy)


def test_another_spec_in_the_same_folder_is_refused(reference, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    spec = load_spec(write_spec(tmp_path, tokens=16 * TOKENS_PER_STEP, data=reference.parent))
    with pytest.raises(FhaError, match=r"holds another study \(spec.tokens was 512, the spec gives 1024\)"):
        run_study(spec, copy, jobs=1)


def test_parallel_jobs_give_the_same_results(reference, tmp_path):
    out = tmp_path / "study"
    progress = run_study(load_spec(reference.parent / "study.toml"), out, jobs=2)
    assert len(progress.finished) == 6 and not progress.failed
    assert (out / "logs" / f"{run_ids(reference)[0]}.log").stat().st_size > 0  # each worker's output
    ours = [row.split(",") for row in read_csv_after_report(out).splitlines()[1:]]
    theirs = [row.split(",") for row in read_csv(reference).splitlines()[1:]]
    assert [row[:6] for row in ours] == [row[:6] for row in theirs]
    # one thread per job instead of two may round sums differently: equal to float32 precision
    for mine, other in zip(ours, theirs):
        assert [float(x) for x in mine[6:]] == pytest.approx([float(x) for x in other[6:]], rel=1e-4)


def read_csv_after_report(out: Path) -> str:
    write_report(out)
    return read_csv(out)


def test_a_failing_run_is_retried_once_then_reported(tmp_path, monkeypatch, capsys):
    import fha.study.runner as runner

    spec_path = write_spec(tmp_path, seeds="[0]", sweep=False)
    real_train, calls = runner.train, []

    def flaky(request):
        calls.append(request.out_dir.name)
        if request.model_config.attention == "fha" and calls.count(request.out_dir.name) == 1:
            raise RuntimeError("simulated crash")
        return real_train(request)

    monkeypatch.setattr(runner, "train", flaky)
    progress = run_study(load_spec(spec_path), tmp_path / "out", jobs=1)
    assert not progress.failed and len(progress.finished) == 2 and len(calls) == 3  # fha twice, mha once

    def broken(request):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(runner, "train", broken)
    assert main(["study", "run", str(spec_path), "--out", str(tmp_path / "out2"), "--jobs", "1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (
        "fha: error: 2 run(s) failed twice: fha/lr-0.01/seed-0 (disk on fire); mha/lr-0.01/seed-0 "
        "(disk on fire); rerun the same command to retry them"
    )


def test_main_study_compares_every_named_baseline():
    from fha.baselines import BASELINES, baseline_config

    spec = load_spec(REPO_ROOT / "studies" / "main.toml")
    assert [variant.name for variant in spec.variants] == list(BASELINES)
    for variant in spec.variants:  # each variant's model is its named baseline (applying it changes nothing)
        model, _ = spec.configs(RunPlan(variant.name, 0, spec.learning_rates(variant.name)[0]))
        assert baseline_config(model, variant.name) == model, variant.name
    assert spec.baseline == "mha" and len(spec.seeds) >= 3 and spec.sweep is not None
    assert spec.data.test == "../shared/data/tinystories-3m/test.txt"


def test_quick_study_runs_on_the_sample(sample_dir, tmp_path):
    """The shipped quick study, end to end on the sample text, cut to 2 seeds of 3 small steps."""
    from fha.study.spec import tomllib  # tomli on Python 3.10

    data = tomllib.loads((REPO_ROOT / "studies" / "quick.toml").read_text())
    assert data["data"] == {
        "train": "../shared/data/tinystories-sample/train.txt",
        "test": "../shared/data/tinystories-sample/valid.txt",
    }  # from the project root
    variants = [variant["name"] for variant in data["variants"]]
    assert (data["baseline"], data["seeds"], variants) == ("mha", [0, 1, 2], ["fha", "mha"])
    test_text = tmp_path / "test.txt"  # a slice of the test text keeps the evaluations short
    test_text.write_text("\n<|endoftext|>\n".join(load_documents(sample_dir / "valid.txt")[:TEST_STORIES]))
    data["data"] = {"train": str(sample_dir / "train.txt"), "test": str(test_text)}
    data["tokens"], data["seeds"] = 3 * 8 * 128, [0, 1]  # 3 steps of 8 sequences of the tiny preset's 128 tokens
    data["set"].update(batch_size=8, eval_samples=1)
    spec = spec_from_dict(data, REPO_ROOT / "studies", label="quick.toml")
    run_study(spec, tmp_path / "quick", jobs=1)
    report = write_report(tmp_path / "quick")
    assert report.verdict.startswith("fha ") and "3,072 training tokens per run, 2 seeds" in report.verdict
    assert len(read_csv(tmp_path / "quick").splitlines()) == 1 + 4
