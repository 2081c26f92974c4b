"""fha study: the spec, fingerprints and tuning, the runner (branches, growth, kills, shards, workers),
the ledger, the report and export, and the checks that keep a study from reporting a wrong answer."""

from __future__ import annotations

import dataclasses
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
from train_helpers import write_corpus

from fha.cli import main
from fha.data import PackedBatches, load_documents
from fha.errors import FhaError
from fha.stats import ALPHA, equivalence_p, holm_bonferroni, paired_difference
from fha.study.execution import branch_step
from fha.study.export import export_study
from fha.study.layout import STUDY_FILE
from fha.study.ledger import LEDGER_DIR, Ledger
from fha.study.plan import EVALUATION, TUNING, Cell, Planner, Seeds, StudyContext, extend_grid, tuning_outcome
from fha.study.report import Contrast, contrast_sentence, contrast_table, contrasts_of, write_report
from fha.study.results import RESULTS_FILE, load_results
from fha.study.runner import run_study
from fha.study.spec import load_spec, spec_from_dict
from fha.train_config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = """
dim = 32
num_layers = 1
vocab_size = 64
max_seq_len = 16
batch_size = 4
num_restarts = 0
anneal_type = "wsd"
warmup_steps = 1
cooldown_fraction = 0.25
final_flat_steps = 0
eval_interval = 2
eval_samples = 2
checkpoint_interval = 2
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
seeds = [100]
max_extensions = 0
"""
TOKENS_PER_STEP = 4 * 16
CONTEXT = StudyContext({"train": "t", "valid": "v", "test": "x"}, "tok", 64, 0)


def write_spec(
    folder: Path,
    *,
    tokens: int = 8 * TOKENS_PER_STEP,
    seeds: str = "[0, 1]",
    sweep: str = SWEEP,
    extra: str = "",
    shared: str = SHARED,
    variants: str = VARIANTS,
    data: Path | None = None,
    name: str = "study.toml",
    description: str = '"tiny"',
) -> Path:
    """A tiny study of FHA against MHA on synthetic stories (written next to the spec unless `data` has them)."""
    data = data or folder
    train, test = data / "train.txt", data / "test.txt"
    if not train.exists():
        write_corpus(train)
        write_corpus(test, num_docs=20, seed=1)
    text = (
        f'description = {description}\nbase = "tiny"\nbaseline = "mha"\nseeds = {seeds}\ntokens = {tokens}\n{extra}\n'
        f'[data]\ntrain = "{train}"\ntest = "{test}"\ntrain_sample = 10\n\n[set]\n{shared}\n{variants}\n{sweep}'
    )
    path = folder / name
    path.write_text(text)
    return path


def ledger_files(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((out / LEDGER_DIR).glob("*.json"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return reference_study(tmp_path_factory.mktemp("reference"))


def reference_study(folder: Path) -> Path:
    """A whole tiny study (tuning: 2 rates x 2 variants at seed 100; then 2 variants x 2 seeds) and its report."""
    out = folder / "study"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FHA_CACHE_DIR", str(folder / "cache"))
        run_study(load_spec(write_spec(folder)), out, jobs=1)
        write_report([out])
    return out


def spec_path_of(out: Path) -> Path:
    return out.parent / "study.toml"


# ------------------------------------------------------------------ spec
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": "colour = 1"}, "unknown key 'colour'"),
        ({"seeds": "[0, 0]"}, "seeds has repeated values: [0, 0]"),
        ({"seeds": "[0, 99999999999999999]"}, "seeds must hold whole numbers in [0, 2**32), got 99999999999999999"),
        ({"tokens": 4611686018427387904}, "tokens must be a whole number of tokens in [1, 1e+13]"),
        ({"description": "5"}, "description must be a string, got int"),
        ({"extra": 'primary = "mha"'}, "primary: 'mha' must be a variant other than the baseline"),
        ({"extra": "equivalence_margin = -1"}, "equivalence_margin must be a positive number"),
        ({"extra": "budgets = [100]"}, "budget 100 tokens is not a whole number of steps of variant fha"),
        (
            {"sweep": SWEEP.replace("seeds = [100]", "seeds = [1]")},
            "sweep.seeds [1] overlap the evaluation seeds at [1]",
        ),
        ({"sweep": SWEEP.replace("seeds = [100]", "seed = 0")}, "sweep.seed: replaced by sweep.seeds"),
        ({"sweep": SWEEP.replace("0.003, 0.01", "0.003, 1e300")}, "sweep.lr_max must hold numbers in (0, 10]"),
        ({"sweep": SWEEP.replace("0.003, 0.01", "0.003")}, "sweep.lr_max must list at least two learning rates"),
        ({"shared": SHARED + "max_steps = 5\n"}, "set.max_steps: set by the study's `tokens`, not here"),
        ({"shared": SHARED + "data_seed = 5\n"}, "set.data_seed: set by the study's `data_seeds`, not here"),
        ({"shared": SHARED + 'lr_max = "x"\n'}, "lr_max must be a number, got 'x' (variant fha)"),
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
    ],
)
def test_spec_errors_name_the_field(tmp_path, change, message):
    path = write_spec(tmp_path, **change)
    with pytest.raises(FhaError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_spec_defaults_and_budgets(tmp_path):
    spec = load_spec(write_spec(tmp_path, extra="budgets = [256]"))
    assert spec.all_budgets == (256, 512) and spec.primary == "fha"
    assert spec.sweep.seeds == (100,)
    spec = load_spec(write_spec(tmp_path, sweep=""))
    assert spec.sweep is None


# ------------------------------------------------------------------ plan: fingerprints and tuning
def test_fingerprints_follow_what_decides_a_result(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    planner = Planner(spec, CONTEXT)
    cell = Cell("fha", 0.01, Seeds(0, 0), 512, EVALUATION)
    plan = planner.plan(cell)
    assert plan.train_config.max_steps == 8 and plan.train_config.seed == 0 and plan.train_config.data_seed == 0
    assert plan.model_config.vocab_size == 64 and plan.model_config.pad_id == 0
    assert planner.plan(cell).fingerprint == plan.fingerprint  # computed once, stable
    logging_only = load_spec(write_spec(tmp_path, shared=SHARED.replace("eval_interval = 2", "eval_interval = 4")))
    assert Planner(logging_only, CONTEXT).plan(cell).fingerprint == plan.fingerprint
    wider = load_spec(write_spec(tmp_path, shared=SHARED.replace("dim = 32", "dim = 48")))
    assert Planner(wider, CONTEXT).plan(cell).fingerprint != plan.fingerprint
    other_data = StudyContext({**CONTEXT.data_digests, "test": "y"}, "tok", 64, 0)
    assert Planner(spec, other_data).plan(cell).fingerprint != plan.fingerprint
    for other in (
        Cell("fha", 0.01, Seeds(0, 1), 512, EVALUATION),
        Cell("fha", 0.01, Seeds(1, 0), 512, EVALUATION),
        Cell("fha", 0.01, Seeds(0, 0), 256, EVALUATION),
        Cell("mha", 0.01, Seeds(0, 0), 512, EVALUATION),
    ):
        assert planner.plan(other).fingerprint != plan.fingerprint, other


def test_tuning_extends_a_winning_edge_and_flags_a_rate_left_there(tmp_path):
    spec = load_spec(write_spec(tmp_path, sweep=SWEEP.replace("max_extensions = 0", "max_extensions = 2")))
    planner = Planner(spec, CONTEXT)
    best = {"fha": 0.05, "mha": 0.005}  # fha wants higher rates than the grid has; mha sits inside it

    def score(cell: Cell) -> float:
        return abs(math.log(cell.lr_max / best[cell.variant]))

    outcome = tuning_outcome(planner, score)
    assert outcome.grids["fha"] == (0.003, 0.01, 0.0333333, 0.111111)  # extended twice at the top, ratio 10/3
    assert outcome.grids["mha"] == (0.0009, 0.003, 0.01)  # 0.003 won at the bottom edge: one step lower
    assert outcome.chosen == {"fha": 0.0333333, "mha": 0.003} and outcome.at_edge == ()
    stuck = tuning_outcome(planner, lambda cell: -cell.lr_max)  # always the highest rate
    assert stuck.grids["fha"][-1] == 0.111111 and set(stuck.at_edge) == {"fha", "mha"}
    pending = tuning_outcome(planner, lambda cell: None if cell.lr_max > 0.005 else 1.0)
    assert not pending.done and {cell.lr_max for cell in pending.missing} == {0.01}
    diverged = tuning_outcome(planner, lambda cell: math.inf if cell.lr_max == 0.01 else 1.0)
    assert diverged.chosen == {"fha": 0.00027, "mha": 0.00027}  # the lowest of equal rates, twice extended
    assert extend_grid((0.01, 0.02), low=True) == (0.005, 0.01, 0.02)


# ------------------------------------------------------------------ runs
@pytest.mark.slow
def test_study_end_to_end(reference, capsys):
    rows = (reference / RESULTS_FILE).read_text().splitlines()
    assert rows[0].startswith("run,role,variant,init_seed,data_seed,lr_max,tokens,parameters,status,val_bits_per_byte")
    tuning = [row for row in rows[1:] if f",{TUNING}," in row]
    evaluation = [row for row in rows[1:] if f",{EVALUATION}," in row]
    assert len(tuning) == 4 and len(evaluation) == 4  # 2 variants x 2 rates at seed 100; 2 variants x 2 seeds
    assert not any(",100," in row for row in evaluation)  # tuning seeds are never evaluation runs
    markdown = (reference / "report.md").read_text()
    for heading in (
        "## Paired differences against the baseline",
        "## n-gram references",
        "## Learning-rate tuning",
        "## Tuning runs at every budget",
        "fha − mha (primary)",
        "80% MDE",
    ):
        assert heading in markdown
    page = (reference / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and "Verdict." in page
    assert main(["study", "report", str(reference)]) == 0
    out = capsys.readouterr().out
    assert "fha − mha" in out and "2 seeds" in out and "n-gram level" in out  # tiny runs stay above the bigram


@pytest.mark.slow
def test_same_seed_gives_both_variants_the_same_batches(tmp_path, monkeypatch):
    drawn: list[tuple[int, list]] = []
    original = PackedBatches.next_batch

    def recording(self):
        x, y = original(self)
        drawn.append((self.seed, x.tolist()))
        return x, y

    monkeypatch.setattr(PackedBatches, "next_batch", recording)
    run_study(load_spec(write_spec(tmp_path, seeds="[0, 1]", sweep="")), tmp_path / "out", jobs=1)
    per_seed = {seed: [batch for s, batch in drawn if s == seed] for seed in (0, 1)}  # training draws only
    for seed, batches in per_seed.items():
        assert len(batches) == 2 * 8  # fha then mha, 8 steps each
        assert batches[:8] == batches[8:], f"seed {seed}: the variants saw different batches"
    assert per_seed[0][:8] != per_seed[1][:8]


@pytest.mark.slow
def test_a_budget_branch_equals_a_fresh_run_of_that_budget(tmp_path):
    """With WSD and warmup in steps, the 4-step budget branches from the 8-step run's checkpoint at step 2
    (its cooldown starts at step 3) and gives the very same result as a study of 4-step runs."""
    branched = run_study(
        load_spec(write_spec(tmp_path, sweep="", seeds="[0]", extra="budgets = [256]")), tmp_path / "a", jobs=1
    )
    fresh = run_study(
        load_spec(write_spec(tmp_path, sweep="", seeds="[0]", tokens=256, name="b.toml")), tmp_path / "b", jobs=1
    )
    assert len(branched.finished) == 4 and len(fresh.finished) == 2
    a, b = Ledger.read([tmp_path / "a"]), Ledger.read([tmp_path / "b"])
    for fingerprint, entry in b.entries.items():
        twin = a.get(fingerprint)  # the same cell: the same fingerprint
        assert twin is not None and twin.data["branched_from"]["step"] == 2
        assert twin.data["metrics"] == entry.data["metrics"]
        assert entry.data["branched_from"] is None


def test_a_budget_branches_only_where_the_learning_rates_still_agree():
    def config(anneal: str, steps: int, **changes) -> TrainConfig:
        settings = {"warmup_steps": 10, "final_flat_steps": 0, "num_restarts": 0, **changes}
        return TrainConfig(max_steps=steps, anneal_type=anneal, **settings)

    checkpoints = list(range(10, 101, 10))
    assert branch_step(config("wsd", 100), config("wsd", 50), checkpoints) == 40  # its cooldown starts at 40
    assert branch_step(config("cos", 100), config("cos", 50), checkpoints) == 10  # the rates part after warmup
    fraction = {"warmup_steps": None, "warmup_fraction": 0.1}  # warmup 10 against 5 steps: no common step
    assert branch_step(config("wsd", 100, **fraction), config("wsd", 50, **fraction), checkpoints) is None
    assert branch_step(config("wsd", 100), config("wsd", 50, weight_decay=0.5), checkpoints) is None


@pytest.mark.slow
def test_a_grown_study_trains_only_the_new_runs(reference, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    before = ledger_files(copy)
    grown = write_spec(tmp_path, seeds="[0, 1, 2]", data=reference.parent, extra="budgets = [256]")
    progress = run_study(load_spec(grown), copy, jobs=1)
    new = {cell.run_id for cell in progress.finished}
    # seed 2 at both budgets, and the 256-token budget of every earlier cell (branched from its run)
    assert len(new) == 2 * 2 + 2 * 2 + 4 and all("seed-2" in name or "tokens-256" in name for name in new)
    # trained seed after seed, both variants at a seed before the next (one job: in the order given)
    evaluated = [(cell.seeds.label, cell.variant) for cell in progress.finished if cell.role == EVALUATION]
    assert list(dict.fromkeys(evaluated)) == [(seed, name) for seed in "012" for name in ("fha", "mha")]
    after = ledger_files(copy)
    assert {name: after[name] for name in before} == before  # the old results untouched


@pytest.mark.slow
def test_a_change_to_finished_runs_is_refused_naming_it(reference, tmp_path, capsys):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    changed = write_spec(tmp_path, data=reference.parent, shared=SHARED.replace("dim = 32", "dim = 48"))
    assert main(["study", "run", str(changed), "--out", str(copy), "--jobs", "1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert (
        err.startswith("fha: error: ") and "the spec changes the finished run fha/lr-0.003/seed-100/tokens-512" in err
    )
    assert "(model.dim was 32, now 48)" in err and "--out" in err
    for name in (STUDY_FILE, "tokenizer.json", "references.json"):  # a refused spec leaves the folder as it was
        assert (copy / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.slow
def test_a_vocabulary_other_than_the_study_tokenizer_is_refused(reference, tmp_path, capsys):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    changed = write_spec(tmp_path, data=reference.parent, shared=SHARED.replace("vocab_size = 64", "vocab_size = 128"))
    assert main(["study", "run", str(changed), "--out", str(copy), "--jobs", "1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert (
        "vocab_size is 128 (from the spec's base and [set]) but the study's tokenizer" in err and "has 64 tokens" in err
    )
    assert (copy / STUDY_FILE).read_bytes() == (reference / STUDY_FILE).read_bytes()


def _start_study(reference: Path, out: Path, jobs: int, **popen) -> subprocess.Popen:
    """`fha study run` of the reference spec into `out`, as its own process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "fha", "study", "run", str(spec_path_of(reference)), "--out", str(out)]
    popen.setdefault("stdout", subprocess.DEVNULL)
    return subprocess.Popen([*command, "--jobs", str(jobs)], env=env, **popen)


def _workers_once_training(process: subprocess.Popen, out: Path) -> list[int]:
    """The study's worker processes, once one of them has written a checkpoint."""
    deadline = time.monotonic() + 120
    while not list((out / "runs").rglob("step-2")) and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = _children(process.pid)
    assert workers, "no worker processes found"
    return workers


@pytest.mark.slow
def test_killed_study_resumes_to_identical_results(reference, tmp_path):
    out = tmp_path / "study"
    process = _start_study(reference, out, 1, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list((out / LEDGER_DIR).glob("*.json"))) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert 2 <= len(ledger_files(out)) < 8
    run_study(load_spec(spec_path_of(reference)), out, jobs=1)
    write_report([out])
    assert (out / RESULTS_FILE).read_text() == (reference / RESULTS_FILE).read_text()


@pytest.mark.slow
def test_sigterm_stops_the_study_and_its_workers(reference, tmp_path):
    """What `timeout` and schedulers send: the parent stops, passes it on, and no worker is left behind."""
    out = tmp_path / "study"
    process = _start_study(reference, out, 2, stderr=subprocess.PIPE, text=True)
    workers = _workers_once_training(process, out)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "interrupted" in err and f"--out {out}" in err
    time.sleep(1)
    assert not [pid for pid in workers if _alive(pid)], "workers outlived the study"
    run_study(load_spec(spec_path_of(reference)), out, jobs=1)  # resumes cleanly after it
    assert len(ledger_files(out)) == 8


@pytest.mark.slow
def test_sigusr1_finishes_the_trainings_under_way_and_starts_no_new_one(reference, tmp_path):
    """What SLURM's --signal sends before a time limit: nothing in flight is lost, the rest waits for a rerun."""
    out = tmp_path / "study"
    process = _start_study(
        reference, out, 2, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    workers = _workers_once_training(process, out)
    os.killpg(process.pid, signal.SIGUSR1)  # to the whole process group, as GNU timeout sends it
    stdout, err = process.communicate(timeout=120)
    assert process.returncode == 3, err
    assert "stopped as asked (SIGUSR1)" in stdout and f"--out {out} again" in stdout
    assert "asked to stop: the trainings under way finish, no new one starts" in err
    assert "Traceback" not in err and "resource_tracker" not in err, err
    started = list((out / "runs").glob("*/lr-*/seed-*/tokens-*"))  # variant, rate, seed, budget
    finished = ledger_files(out)
    assert 2 <= len(started) == len(finished) < 8  # every training started was finished, none after the signal
    deadline = time.monotonic() + 30
    while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)], "workers outlived the study"
    run_study(load_spec(spec_path_of(reference)), out, jobs=1)
    write_report([out])
    assert (out / RESULTS_FILE).read_text() == (reference / RESULTS_FILE).read_text()


@pytest.mark.slow
def test_sigusr1_in_one_process_stops_after_the_training_under_way(reference, tmp_path, monkeypatch, capsys):
    import fha.study.runner as runner

    train_one = runner.execute_trunk

    def then_signal(task):
        outcomes = train_one(task)
        os.kill(os.getpid(), signal.SIGUSR1)
        return outcomes

    monkeypatch.setattr(runner, "execute_trunk", then_signal)
    before = signal.getsignal(signal.SIGUSR1)
    out = tmp_path / "study"
    assert main(["study", "run", str(spec_path_of(reference)), "--out", str(out), "--jobs", "1"]) == 3
    assert "stopped as asked (SIGUSR1) after 1 run trained now" in capsys.readouterr().out
    assert len(ledger_files(out)) == 1
    assert signal.getsignal(signal.SIGUSR1) is before  # the handler is the study's only while it runs
    monkeypatch.setattr(runner, "execute_trunk", train_one)
    assert main(["study", "run", str(spec_path_of(reference)), "--out", str(out), "--jobs", "1"]) == 0
    write_report([out])
    assert (out / RESULTS_FILE).read_text() == (reference / RESULTS_FILE).read_text()


@pytest.mark.slow
def test_workers_die_with_a_killed_parent(reference, tmp_path):
    out = tmp_path / "study"
    process = _start_study(reference, out, 2, stderr=subprocess.DEVNULL)
    workers = _workers_once_training(process, out)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 30
    while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)], "workers outlived a killed parent"


def _children(pid: int) -> list[int]:
    """Child processes of `pid` (Linux /proc), waiting a little for the pool to start them."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in text:
                found.append(int(status.parent.name))
        if len(found) >= 2:
            return found
        time.sleep(0.1)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


@pytest.mark.slow
def test_two_shards_split_the_study_and_a_waiting_shard_says_so(reference, tmp_path, capsys):
    out = tmp_path / "study"
    spec = spec_path_of(reference)
    assert main(["study", "run", str(spec), "--out", str(out), "--shard", "1/2", "--jobs", "1"]) == 3
    assert "other shards' are not" in capsys.readouterr().out
    assert main(["study", "run", str(spec), "--out", str(out), "--shard", "2/2", "--jobs", "1"]) == 0
    assert main(["study", "run", str(spec), "--out", str(out), "--shard", "1/2", "--jobs", "1"]) == 0
    write_report([out])
    assert (out / RESULTS_FILE).read_text() == (reference / RESULTS_FILE).read_text()


@pytest.mark.slow
def test_report_over_several_ledgers_and_an_export_rebuilds_the_same_report(reference, tmp_path):
    exported = tmp_path / "export"
    export_study(reference, exported)
    assert not list(exported.rglob("*.safetensors")) and (exported / STUDY_FILE).is_file()
    rebuilt = write_report([exported], tmp_path / "rebuilt")
    for name in ("report.md", RESULTS_FILE, "paired_differences.png"):
        assert (tmp_path / "rebuilt" / name).read_bytes() == (reference / name).read_bytes(), name
    assert rebuilt.verdict == write_report([reference], tmp_path / "again").verdict
    shard = tmp_path / "shard"  # a study folder holding part of the ledger, the export holding the rest
    shutil.copytree(exported, shard)
    for path in list((shard / LEDGER_DIR).glob("*.json"))[:3]:
        path.unlink()
    assert write_report([shard, exported], tmp_path / "merged").verdict == rebuilt.verdict


@pytest.mark.slow
def test_export_never_drops_another_study_or_runs_it_does_not_hold(reference, tmp_path):
    with pytest.raises(FhaError, match="a study folder with runs of its own"):
        export_study(reference, _study_with_runs(tmp_path))
    target = tmp_path / "export"
    export_study(reference, target)
    (target / LEDGER_DIR / "0123456789abcdef.json").write_text("{}")
    with pytest.raises(FhaError, match="its ledger holds 1 runs that .* does not"):
        export_study(reference, target)


def _study_with_runs(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    (victim / "runs").mkdir(parents=True)
    return victim


@pytest.mark.slow
def test_ledgers_that_disagree_are_refused(reference, tmp_path):
    other = tmp_path / "other"
    export_study(reference, other)
    path = sorted((other / LEDGER_DIR).glob("*.json"))[0]
    data = json.loads(path.read_text())
    data["metrics"]["test"]["bits_per_byte"] += 0.5
    path.write_text(json.dumps(data))
    with pytest.raises(FhaError, match="ledgers disagree"):
        write_report([reference, other], tmp_path / "r")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{}", "ledger format None"),
        ("[1, 2]", "a ledger entry must be a JSON object, got list"),
        ("{bad json", "unreadable ledger entry"),
        (None, "must be a finite number, got nan"),
        ("edited", "its fingerprint does not match"),
        ("parameters", "`parameters` must be a whole number, got 'abc'"),
    ],
)
def test_a_malformed_ledger_entry_is_named_in_one_line(reference, tmp_path, capsys, content, message):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    path = sorted((copy / LEDGER_DIR).glob("*.json"))[0]
    data = json.loads(path.read_text())
    if content is None:
        data["metrics"]["test"]["bits_per_byte"] = math.nan
        content = json.dumps(data)
    elif content == "edited":
        data["identity"]["model"]["dim"] = 31
        content = json.dumps(data)
    elif content == "parameters":
        data["parameters"] = "abc"
        content = json.dumps(data)
    path.write_text(content)
    assert main(["study", "report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fha: error: {path}: ") and message in err


@pytest.mark.slow
def test_unfinished_runs_are_named_unless_partial(reference, tmp_path, capsys):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    evaluation = [
        p for p in (copy / LEDGER_DIR).glob("*.json") if json.loads(p.read_text())["cell"]["role"] == EVALUATION
    ]
    evaluation[0].unlink()
    assert main(["study", "report", str(copy)]) == 2
    assert "1 of 4 runs are not finished" in capsys.readouterr().err
    assert main(["study", "report", str(copy), "--partial"]) == 0
    assert capsys.readouterr().out.startswith("PARTIAL: 3 of 4 evaluation runs finished")
    for path in (copy / LEDGER_DIR).glob("*.json"):
        if path in evaluation or json.loads(path.read_text())["cell"]["lr_max"] == 0.01:
            path.unlink(missing_ok=True)
    assert main(["study", "report", str(copy), "--partial"]) == 0
    verdict = capsys.readouterr().out
    assert verdict.startswith("PARTIAL: tuning in progress") and "no evaluation run yet" in verdict
    assert "Budget: 512 training tokens per run; lower bits per byte" in verdict  # no "0 seeds"


@pytest.mark.slow
def test_a_diverged_run_is_shown_as_failed_never_as_a_verdict(reference, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    path = next(
        p
        for p in (copy / LEDGER_DIR).glob("*.json")
        if json.loads(p.read_text())["cell"]["role"] == EVALUATION
        and json.loads(p.read_text())["cell"]["variant"] == "fha"
    )
    data = json.loads(path.read_text())
    del data["metrics"]
    data["diverged"] = "loss became nan at step 5"
    path.write_text(json.dumps(data))
    report = write_report([copy], tmp_path / "r")
    assert "failed (loss became nan at step 5): its seed is left out of its contrasts" in report.verdict
    assert "one seed no interval" in report.verdict


@pytest.mark.slow
def test_a_truncated_training_log_is_named_not_turned_into_a_curve(reference, tmp_path, capsys):
    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    entry = sorted((copy / LEDGER_DIR).glob("*.json"))[0]
    cell = json.loads(entry.read_text())["cell"]
    entry.unlink()
    folder = next(
        (copy / "runs" / cell["variant"]).glob(f"lr-{cell['lr_max']:g}/seed-*/tokens-{cell['tokens']}-{entry.stem[:8]}")
    )
    log = folder / "log_data.csv"
    log.write_text("\n".join(log.read_text().splitlines()[:-2]) + "\n")  # the last evaluations lost
    assert main(["study", "run", str(spec_path_of(reference)), "--out", str(copy), "--jobs", "1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "failed twice" in err and f"{log}: ends at step" in err and "not at the run's last" in err
    assert not entry.exists()


@pytest.mark.parametrize(("first", "second"), [("train", "test"), ("valid", "test"), ("train", "valid")])
def test_held_out_text_equal_to_another_is_refused(tmp_path, first, second):
    write_corpus(tmp_path / "train.txt")
    write_corpus(tmp_path / "other.txt", num_docs=20, seed=1)
    files = {"train": tmp_path / "train.txt", "valid": tmp_path / "other.txt", "test": tmp_path / "other.txt"}
    if (first, second) != ("valid", "test"):
        files["valid"] = tmp_path / "valid.txt"
        write_corpus(files["valid"], num_docs=20, seed=2)
        files[second] = files[first]
    spec_text = (
        write_spec(tmp_path)
        .read_text()
        .replace(
            f'train = "{tmp_path / "train.txt"}"\ntest = "{tmp_path / "test.txt"}"',
            "\n".join(f'{name} = "{path}"' for name, path in files.items()),
        )
    )
    path = tmp_path / "bad.toml"
    path.write_text(spec_text)
    with pytest.raises(FhaError, match=f"data.{first} .* and data.{second} .* have the same contents"):
        run_study(load_spec(path), tmp_path / "out", jobs=1)
    assert not (tmp_path / "out").exists()  # refused before the folder is touched


@pytest.mark.slow
def test_shared_documents_are_warned_about(tmp_path, caplog):
    write_corpus(tmp_path / "train.txt")
    test = tmp_path / "test.txt"
    shutil.copy(tmp_path / "train.txt", test)
    test.write_text(test.read_text() + "\n\nA story of its own.\n")  # not the same file, nearly the same stories
    spec = write_spec(tmp_path, sweep="", seeds="[0]", tokens=4 * TOKENS_PER_STEP)
    caplog.set_level("WARNING")
    run_study(load_spec(spec), tmp_path / "out", jobs=1)
    assert "test documents (" in caplog.text and "also occur in the training text" in caplog.text


@pytest.mark.slow
def test_a_failed_write_is_one_line_naming_the_file_and_leaves_no_temporary(reference, tmp_path, monkeypatch, capsys):
    import fha.files

    copy = tmp_path / "study"
    shutil.copytree(reference, copy)
    real = fha.files._write_file

    def full_disk(path: Path, data: bytes) -> None:
        if path.name.startswith(".report.html."):
            path.write_bytes(data[:10])  # a part written, then the disk is full
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(fha.files, "_write_file", full_disk)
    assert main(["study", "report", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err == f"fha: error: {copy / 'report.html'}: cannot write (No space left on device)\n"
    assert (
        not list(copy.glob(".*.tmp"))
        and (copy / "report.html").read_bytes() == (reference / "report.html").read_bytes()
    )


@pytest.mark.slow
def test_report_options_and_folders_are_checked(reference, tmp_path, capsys):
    assert main(["study", "report", str(reference / STUDY_FILE)]) == 2
    assert "a file, not a study folder" in capsys.readouterr().err
    assert main(["study", "report", str(tmp_path)]) == 2
    assert "not a study folder (no study.json)" in capsys.readouterr().err
    assert main(["study", "report", str(reference), "--report-dir", str(tmp_path / "r"), "--dpi", "100000"]) == 2
    assert "--dpi must be between 50 and 1200, got 100000" in capsys.readouterr().err


def test_cli_reports_a_bad_spec_in_one_line(tmp_path, capsys):
    assert main(["study", "run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"fha: error: {tmp_path / 'missing.toml'}: study spec not found\n"
    assert main(["study", "run", str(write_spec(tmp_path)), "--out", str(tmp_path / "o"), "--shard", "3/2"]) == 2
    assert "--shard '3/2': expected I/N with 1 <= I <= N" in capsys.readouterr().err


@pytest.mark.slow
def test_plan_lists_new_and_reusable_runs_and_sizes_seeds_from_a_pilot(reference, tmp_path, capsys):
    grown = write_spec(tmp_path, seeds="[0, 1, 2]", data=reference.parent)
    assert main(["study", "plan", str(grown), "--out", str(reference), "--timing-steps", "1", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 runs to train, 8 reusable from the ledger") and "s per step" in out
    assert "estimated training time with 1 at once" in out
    assert (
        main(["study", "plan", str(grown), "--timing-steps", "0", "--pilot", str(reference), "--halfwidth", "0.5"]) == 0
    )
    assert "paired SD" in capsys.readouterr().out


def test_plan_names_missing_data_in_one_line(tmp_path, capsys):
    spec = write_spec(tmp_path)
    (tmp_path / "test.txt").unlink()
    assert main(["study", "plan", str(spec), "--timing-steps", "0"]) == 2
    assert capsys.readouterr().err == f"fha: error: data file not found: data.test ({tmp_path / 'test.txt'})\n"


@pytest.mark.slow
def test_crossed_seeds_split_the_variance(tmp_path):
    spec = write_spec(tmp_path, sweep="", seeds="[0, 1]", tokens=4 * TOKENS_PER_STEP, extra="data_seeds = [5, 6]")
    progress = run_study(load_spec(spec), tmp_path / "out", jobs=1)
    assert len(progress.finished) == 8
    markdown = write_report([tmp_path / "out"]).markdown.read_text()
    assert "## Variance by source (crossed seeds)" in markdown
    assert "fha/lr-0.01/seed-0-data-5/tokens-256" in (tmp_path / "out" / RESULTS_FILE).read_text()
    seeds = {(c.seeds.init, c.seeds.data) for c in progress.finished}
    assert seeds == {(0, 5), (0, 6), (1, 5), (1, 6)}


def test_main_and_decisive_studies_load():
    main_spec = load_spec(REPO_ROOT / "studies" / "main.toml")
    assert main_spec.baseline == "mha" and not set(main_spec.sweep.seeds) & set(main_spec.seeds)
    decisive = load_spec(REPO_ROOT / "studies" / "decisive.toml")
    assert decisive.all_budgets == (2_048_000, 4_096_000, 8_192_000) and decisive.primary == "fha"
    assert decisive.sweep.seeds == (100, 101) and decisive.seeds == tuple(range(10))


def test_secondary_budgets_are_labelled_and_not_corrected_as_if_primary():
    """The committed decisive study (three budgets): only the primary budget's primary contrast is the test at 5%."""
    table = contrast_table(load_results([REPO_ROOT / "docs" / "results" / "decisive"], partial=True)[0])
    rows = {row[0]: row for row in table.rows}
    assert set(rows) == {"8,192,000 (primary)", "4,096,000 (secondary)", "2,048,000 (secondary)"}
    holm = table.header.index("Holm p")
    assert rows["8,192,000 (primary)"][holm] == "(primary)"
    assert rows["4,096,000 (secondary)"][holm] == rows["2,048,000 (secondary)"][holm] == "not corrected"


def test_the_committed_decisive_report_is_what_its_export_rebuilds(tmp_path):
    """The published report is the report of the published ledger: rebuilt now, byte for byte (after a
    change to the report's wording, export the study again)."""
    decisive = REPO_ROOT / "docs" / "results" / "decisive"
    write_report([decisive], tmp_path)
    for name in ("report.md", RESULTS_FILE):
        assert (tmp_path / name).read_bytes() == (decisive / name).read_bytes(), name


def _contrast(differences: list[float], margin: float = 0.02) -> Contrast:
    """fha (the primary) against mha, which scores 0 at every seed."""
    values = {"mha": dict.fromkeys(range(len(differences)), 0.0), "fha": dict(enumerate(differences))}
    return contrasts_of(values, "mha", "fha", 1000, margin)[0]


def test_the_verdict_says_when_the_sign_flip_test_does_not_confirm_the_t_test():
    six = _contrast([-0.010, -0.011, -0.009, -0.010, -0.012, 0.001])  # one pair the other way
    assert six.paired.p_value < 0.01 and six.paired.sign_flip_p == 4 / 64
    sentence = contrast_sentence(six, None, primary=True)
    assert sentence.startswith("fha is better than mha by 0.0085 bits/byte")
    assert "sign-flip test p = 0.0625); the sign-flip test, which does not assume normal differences, does not " in (
        sentence
    )
    assert sentence.endswith("confirm it at the 5% level; fha was better at 5 of 6 seeds.")
    four = _contrast([-0.010, -0.011, -0.009, -0.010])  # four signs: the sign-flip p is 2/16 at best
    assert four.paired.p_value < 0.001 and four.paired.sign_flip_p == 0.125
    assert contrast_sentence(four, None, primary=True).endswith(
        "sign-flip test p = 0.1250); with 4 seeds the sign-flip test cannot go below p = 0.125, so it cannot confirm "
        "a difference at the 5% level; fha was better at 4 of 4 seeds."
    )
    ten = _contrast([-0.010, -0.011, -0.009, -0.010, -0.012, -0.008, -0.010, -0.011, -0.009, -0.010])
    sentence = contrast_sentence(ten, None, primary=True)
    assert "sign-flip test p = 0.0020); fha was better at 10 of 10 seeds." in sentence


def test_a_secondary_contrast_is_confirmed_by_its_holm_adjusted_sign_flip_p():
    ten = _contrast([-0.010, -0.011, -0.009, -0.010, -0.012, -0.008, -0.010, -0.011, -0.009, 0.001])
    assert ten.paired.sign_flip_p < ALPHA
    corrected = dataclasses.replace(ten, adjusted_p=0.01, sign_flip_adjusted_p=0.06)  # as if among many contrasts
    sentence = contrast_sentence(corrected, None, primary=False)
    assert f"sign-flip test p = {ten.paired.sign_flip_p:.4f}, Holm-adjusted 0.0600)" in sentence
    assert "does not confirm it at the 5% level" in sentence
    assert "does not confirm" not in contrast_sentence(
        dataclasses.replace(corrected, sign_flip_adjusted_p=0.01), None, False
    )


def test_a_secondary_contrast_names_the_floor_holm_puts_under_its_sign_flip_p():
    """6 seeds all one way give sign-flip p = 2/64 alone, but at least 3 x 2/64 among 3 contrasts:
    the test could not have confirmed anything, and the sentence says so rather than 'does not confirm'."""
    six = _contrast([-0.010, -0.011, -0.009, -0.010, -0.012, -0.008])
    among_three = dataclasses.replace(six, adjusted_p=0.003, sign_flip_adjusted_p=3 * 2 / 64, family_size=3)
    assert among_three.sign_flip_floor == 3 * 2 / 64
    assert contrast_sentence(among_three, None, primary=False).endswith(
        "Holm-adjusted 0.0938); with 6 seeds and Holm's correction over 3 contrasts the sign-flip test cannot go "
        "below p = 0.09375, so it cannot confirm a difference at the 5% level; fha was better at 6 of 6 seeds."
    )
    with_a_zero = _contrast([-0.010, -0.011, -0.009, -0.010, 0.0])  # a zero difference takes no sign
    assert with_a_zero.paired.sign_flip_floor == 2 / 16


def test_contrasts_adjust_every_test_of_the_secondary_variants_among_themselves():
    baseline = dict.fromkeys(range(6), 1.0)
    shifts = {
        "fha": [-0.010, -0.011, -0.009, -0.010, -0.012, 0.001],
        "a": [-0.02, -0.03, -0.01, -0.02, -0.025, -0.015],
        "b": [0.004, -0.003, 0.001, -0.002, 0.002, 0.000],
        "c": [0.01, -0.02, 0.03, 0.00, -0.01, 0.02],
    }
    values = {"mha": baseline} | {name: {seed: 1.0 + d for seed, d in enumerate(ds)} for name, ds in shifts.items()}
    found = {contrast.variant: contrast for contrast in contrasts_of(values, "mha", "fha", 1000, margin=0.02)}
    assert list(found) == ["fha", "a", "b", "c"]
    pairs = {name: paired_difference(values[name], baseline) for name in shifts}
    primary = found["fha"]
    assert (primary.adjusted_p, primary.sign_flip_adjusted_p, primary.family_size) == (
        pairs["fha"].p_value,
        pairs["fha"].sign_flip_p,
        1,
    )
    assert primary.equivalence_adjusted_p == equivalence_p(pairs["fha"].interval, 0.02)
    others = ["a", "b", "c"]
    t = holm_bonferroni({name: pairs[name].p_value for name in others})
    flip = holm_bonferroni({name: pairs[name].sign_flip_p for name in others})
    tost = holm_bonferroni({name: equivalence_p(pairs[name].interval, 0.02) for name in others})
    for name in others:
        assert found[name].adjusted_p == t[name] > pairs[name].p_value
        assert found[name].sign_flip_adjusted_p == flip[name] >= pairs[name].sign_flip_p
        assert found[name].equivalence_adjusted_p == tost[name] and found[name].family_size == 3
    assert math.isnan(contrasts_of(values, "mha", "fha", 1000, margin=None)[1].equivalence_adjusted_p)


def test_equivalence_is_called_only_inside_the_margin_and_gives_the_tests():
    close = _contrast([0.004, -0.003, 0.001, -0.002, 0.002, 0.000])
    sentence = contrast_sentence(close, 0.02, primary=True)
    interval = close.paired.interval
    assert sentence == (
        f"fha and mha are equivalent within ±0.02 bits/byte: fha − mha = +0.0003, 95% CI [{interval.low:+.4f}, "
        f"{interval.high:+.4f}] (half-width {close.halfwidth:.4f}) lies inside the margin (two one-sided tests "
        f"against ±0.02, each at the 2.5% level of a 95% interval: p < 0.0001; tests of a zero difference: p = "
        f"{close.paired.p_value:.4f}, sign-flip test p = {close.paired.sign_flip_p:.4f}); fha was better at 2 of 6 "
        "seeds."
    )
    assert contrast_sentence(close, 0.001, primary=True).startswith("fha − mha is inconclusive: +0.0003 bits/byte")


def test_a_secondary_contrast_inside_the_margin_is_equivalent_only_after_holm():
    close = _contrast([0.004, -0.003, 0.001, -0.002, 0.002, 0.000])
    tost = equivalence_p(close.paired.interval, 0.02)
    shown = dataclasses.replace(close, equivalence_adjusted_p=3 * tost, family_size=3)
    assert contrast_sentence(shown, 0.02, primary=False).startswith("fha and mha are equivalent within ±0.02")
    assert "p < 0.0001, Holm-adjusted" in contrast_sentence(shown, 0.02, primary=False)
    not_shown = dataclasses.replace(close, equivalence_adjusted_p=0.03, family_size=3)
    sentence = contrast_sentence(not_shown, 0.02, primary=False)
    assert sentence.startswith("fha − mha is inconclusive: +0.0003 bits/byte")
    assert (
        "; it lies inside ±0.02 but is not shown equivalent after Holm's correction (two one-sided tests against "
        in (sentence)
    )
    assert "p < 0.0001, Holm-adjusted 0.0300)" in sentence


def test_the_paired_table_gives_the_sign_flip_p_of_each_contrast():
    results = load_results([REPO_ROOT / "docs" / "results" / "decisive"], partial=True)[0]
    table = contrast_table(results)
    assert len(table.rows) == 3  # one contrast at each of three budgets
    column = table.header.index("sign-flip p")
    for row, tokens in zip(table.rows, reversed(results.spec.all_budgets)):
        paired = paired_difference(results.values("fha", tokens), results.values("mha", tokens))
        assert row[column] == f"{paired.sign_flip_p:.4f}" and paired.n >= 6


@pytest.mark.slow
def test_quick_study_runs_on_the_sample(sample_dir, tmp_path):
    """The shipped quick study, end to end on the sample text, cut to 2 seeds of 3 small steps."""
    from fha.study.spec import tomllib  # tomli on Python 3.10

    data = tomllib.loads((REPO_ROOT / "studies" / "quick.toml").read_text())
    assert data["data"]["train"] == "../shared/data/tinystories-sample/train.txt"
    test_text = tmp_path / "test.txt"  # a slice of the test text keeps the evaluations short
    test_text.write_text("\n<|endoftext|>\n".join(load_documents(sample_dir / "valid.txt")[:10]))
    data["data"] = {"train": str(sample_dir / "train.txt"), "test": str(test_text), "train_sample": 10}
    data["tokens"], data["seeds"] = 8 * 8 * 128, [0, 1]  # 8 steps of 8 sequences of the tiny preset's 128 tokens
    data["budgets"] = [4 * 8 * 128]
    data["sweep"]["lr_max"] = data["sweep"]["lr_max"][:2]
    data["sweep"]["max_extensions"] = 0
    data["set"].update(batch_size=8, eval_samples=1, eval_interval=4, warmup_steps=1, cooldown_fraction=0.25)
    spec = spec_from_dict(data, REPO_ROOT / "studies", label="quick.toml")
    run_study(spec, tmp_path / "quick", jobs=1)
    report = write_report([tmp_path / "quick"])
    assert "fha − mha" in report.verdict and "8,192 training tokens per run, 2 seeds" in report.verdict
