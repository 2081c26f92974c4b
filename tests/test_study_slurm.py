"""fha study sbatch: the options, the scripts' text, each script run as SLURM would run it (a stand-in
interpreter and a stand-in sbatch record what they are given), the whole tiny study run task by task
with the environment of SLURM array tasks, and, where a SLURM cluster accepts jobs, the study submitted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_study import REPO_ROOT, SWEEP, reference_study, spec_path_of, write_spec

from fha.cli import main
from fha.errors import FhaValueError
from fha.study.layout import STUDY_FILE
from fha.study.results import RESULTS_FILE
from fha.study.slurm import (
    REPORT_SCRIPT,
    SHARD_SCRIPT,
    SUBMIT_SCRIPT,
    SlurmJobs,
    default_shards,
    rounds_needed,
    time_limit_seconds,
    time_limit_text,
    write_scripts,
)
from fha.study.spec import load_spec

REAL_SLURM = "FHA_TEST_SLURM"  # set to 1 where sbatch submits to a cluster (or a one-node SLURM) that may run tests
FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for the interpreter: records where and how it was started, exits with $FAKE_STATUS;
# with $FAKE_WAIT set, first waits for SIGUSR1 (writing $FAKE_WAIT once it does).
{ pwd; echo "$OMP_NUM_THREADS"; printf '%s\\n' "$@"; } > "$FAKE_RECORD"
if [ -n "${FAKE_WAIT:-}" ]; then
    trap 'echo "got USR1" >> "$FAKE_RECORD"; exit "${FAKE_STATUS:-0}"' USR1
    touch "$FAKE_WAIT"
    while true; do sleep 1 > /dev/null 2>&1 & wait $!; done  # a trap cuts wait short: it exits at once
fi
echo "fha ran"
exit "${FAKE_STATUS:-0}"
"""
FAKE_SBATCH = """#!/usr/bin/env bash
# Stands in for sbatch: records its arguments one call a line, answers job ids from 501 (the second as
# ID;CLUSTER, as --parsable prints on a federation), and fails on call number $FAKE_FAIL_AT.
calls="$FAKE_DIR/calls"
echo "$(pwd) $*" >> "$calls"
count=$(wc -l < "$calls")
[ "$count" -eq "${FAKE_FAIL_AT:-0}" ] && { echo "sbatch: error: invalid partition" >&2; exit 1; }
[ "$count" -eq 2 ] && echo "$((500 + count));cluster" || echo "$((500 + count))"
"""


def slurm_jobs(tmp_path: Path, **changes) -> SlurmJobs:
    """The jobs of a study whose spec and folder have a space and a quote in their names."""
    settings = {
        "spec": tmp_path / "my spec's.toml",
        "out_dir": tmp_path / "the study",
        "workdir": tmp_path / "project",
        "scripts": tmp_path / "scripts",
        "python": str(tmp_path / "python"),
        "shards": 3,
        "rounds": 2,
        "min_rounds": 2,
        "job_name": "fha-quick",
        **changes,
    }
    return SlurmJobs(**settings)


def run_script(path: Path, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(path), *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=as_slurm_starts_it,
    )


def as_slurm_starts_it() -> None:
    """A batch script starts with SIGUSR1 at its default: bash cannot trap a signal ignored when it starts,
    and a test process may have inherited it ignored."""
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def task_env(task: int, shards: int, cpus: int = 1) -> dict[str, str]:
    """What SLURM sets in the environment of array task `task` of `shards` (job ids made up)."""
    return {
        "SLURM_JOB_ID": str(1000 + task),
        "SLURM_ARRAY_JOB_ID": "1000",
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_COUNT": str(shards),
        "SLURM_ARRAY_TASK_MIN": "1",
        "SLURM_ARRAY_TASK_MAX": str(shards),
        "SLURM_CPUS_PER_TASK": str(cpus),
        "SLURM_SUBMIT_DIR": "/nonexistent",  # the scripts go to their own working folder
    }


# ------------------------------------------------------------------ options
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        ("30:15", 1815),
        ("2:00:00", 7200),
        ("1-0", 86400),
        ("1-12", 129600),
        ("1-2:3", 93780),
        ("1-2:3:4", 93784),
        ("0:0:1", 1),
    ],
)
def test_slurm_time_limits(text, seconds):
    assert time_limit_seconds(text) == seconds


@pytest.mark.parametrize("text", ["1h", "", "1:2:3:4", "-1", "1-", "1:-5", "1-2:3:4:5", "1.5", "0", "0-0:00:00"])
def test_a_time_limit_slurm_would_not_take_is_refused(text):
    with pytest.raises(FhaValueError, match=rf"^`time` {text!r}: (expected a SLURM time limit|must be longer than 0)"):
        time_limit_seconds(text)


def test_time_limits_are_written_as_slurm_writes_them():
    assert [time_limit_text(s) for s in (1, 3600, 5400, 86399, 93784)] == [
        "0:00:01",
        "1:00:00",
        "1:30:00",
        "23:59:59",
        "1-02:03:04",
    ]


def test_rounds_and_shards_follow_the_spec(tmp_path):
    with_sweep = load_spec(write_spec(tmp_path))
    assert (rounds_needed(with_sweep, 4), default_shards(with_sweep)) == (2, 4)  # tuning, then evaluation
    assert rounds_needed(with_sweep, 1) == 1  # one shard never waits for another
    extended = load_spec(write_spec(tmp_path, sweep=SWEEP.replace("max_extensions = 0", "max_extensions = 2")))
    assert rounds_needed(extended, 2) == 4  # the grid, two extensions, evaluation
    crossed = load_spec(write_spec(tmp_path, sweep="", seeds="[0, 1, 2]", extra="data_seeds = [5, 6]"))
    assert (rounds_needed(crossed, 12), default_shards(crossed)) == (1, 2 * 3 * 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--time", "1h"], "--time '1h': expected a SLURM time limit: MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS"),
        (["--time", "0:00"], "--time '0:00': must be longer than 0"),
        (["--cpus", "0"], "--cpus must be a whole number 1 or more, got 0"),
        (["--gpus", "-1"], "--gpus must be a whole number, 0 or more, got -1"),
        (["--shards", "0"], "--shards must be a whole number between 1 and 1000, got 0"),
        (["--shards", "1001"], "--shards must be a whole number between 1 and 1000, got 1001"),
        (["--rounds", "1"], "--rounds 1: this spec needs at least 2 (a round per tuning step of its sweep, then one"),
        (["--max-running", "0"], "--max-running must be a whole number 1 or more, got 0"),
        (["--jobs", "0"], "--jobs must be a whole number 1 or more, got 0"),
        (["--mem", "16GB"], "--mem '16GB': expected a positive amount, in megabytes or with K, M, G or T"),
        (["--mem", "0G"], "--mem '0G': expected a positive amount"),
        (["--partition", "gpu a100"], "--partition 'gpu a100': expected one word of letters, digits and"),
        (["--account", ""], "--account '': expected one word"),
        (["--device", "gpu"], "--device 'gpu': unknown device (use auto, cpu, cuda, cuda:N, mps)"),
        (["--setup", " "], "--setup ' ': expected one non-empty shell line"),
        (["--scripts", "my scripts"], "SLURM's #SBATCH --output cannot hold this path (a space, a quote"),
        (["--drain", "0"], "--drain must be a whole number between 1 and 1092, got 0"),
        (["--drain", "1093"], "--drain must be a whole number between 1 and 1092, got 1093"),
        (["--drain", "30", "--time", "30"], "--drain 30: must be shorter than the time limit --time 30"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, options, message):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path)
    assert main(["study", "sbatch", str(spec), "--out", "study", *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fha: error: --") and message in error and error.count("\n") == 1, error
    assert not (tmp_path / "study").exists()


def test_the_command_prepares_the_study_and_says_how_to_submit(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path)
    assert main(["study", "sbatch", spec.name, "--out", "study", "--shards", "2", "--time", "30"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "study" / STUDY_FILE).is_file() and (tmp_path / "study" / "tokenizer.json").is_file()
    scripts = tmp_path / "study" / "slurm"
    assert sorted(path.name for path in scripts.iterdir()) == ["logs", REPORT_SCRIPT, SHARD_SCRIPT, SUBMIT_SCRIPT]
    assert out.splitlines()[-4:] == [
        "submit with: bash study/slurm/submit.sh, which runs",
        "  sbatch --parsable study/slurm/shard.sbatch 1  # array of 2 shards, round 1",
        "  sbatch --parsable --dependency=afterany:ROUND1 study/slurm/shard.sbatch 2  # array of 2 shards, round 2",
        "  sbatch --parsable --dependency=afterok:ROUND2 study/slurm/report.sbatch",
    ]
    shard = (scripts / SHARD_SCRIPT).read_text()
    assert f"{sys.executable} -m fha study run {spec} --out {tmp_path / 'study'} --shard" in shard
    assert f"cd {tmp_path}" in shard  # the spec's relative data paths are read from here


# ------------------------------------------------------------------ the scripts' text
def test_the_headers_ask_for_what_was_given(tmp_path):
    jobs = slurm_jobs(
        tmp_path, partition="gpu", account="proj-7", qos="long", time="2-0", cpus=8, gpus=2, mem="32G", max_running=2
    )
    write_scripts(jobs)
    headers = {
        name: [line for line in (tmp_path / "scripts" / name).read_text().splitlines() if "#SBATCH" in line]
        for name in (SHARD_SCRIPT, REPORT_SCRIPT)
    }
    logs = tmp_path / "scripts" / "logs"
    assert headers[SHARD_SCRIPT] == [
        "#SBATCH --job-name=fha-quick",
        "#SBATCH --array=1-3%2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --mem=32G",
        "#SBATCH --time=2-0",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj-7",
        "#SBATCH --qos=long",
        f"#SBATCH --output={logs}/shard-%A_%a.out",
    ]
    assert headers[REPORT_SCRIPT] == [  # one CPU, no GPU, an hour at most
        "#SBATCH --job-name=fha-quick-report",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --time=1:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj-7",
        "#SBATCH --qos=long",
        f"#SBATCH --output={logs}/report-%j.out",
        "#SBATCH --kill-on-invalid-dep=yes",
    ]
    drained = slurm_jobs(tmp_path, time="2:00:00", drain_minutes=40).sbatch_headers(report=False)
    assert "#SBATCH --signal=B:USR1@2400" in drained  # to the batch shell, which passes it on
    assert not any("--signal" in line for line in slurm_jobs(tmp_path).sbatch_headers(report=False))
    assert not any("--signal" in line for line in slurm_jobs(tmp_path, drain_minutes=40).sbatch_headers(report=True))
    short = slurm_jobs(tmp_path, time="20").sbatch_headers(report=True)
    assert "#SBATCH --time=0:20:00" in short and not any("--gres" in line or "--mem" in line for line in short)
    assert not any("--time" in line for line in slurm_jobs(tmp_path).sbatch_headers(report=False))


def test_the_scripts_are_bash_that_parses(tmp_path):
    for path in write_scripts(slurm_jobs(tmp_path, setup=("module load cuda/12", "source 'my env'/bin/activate"))):
        assert path.read_text().startswith("#!/usr/bin/env bash\n") and os.access(path, os.X_OK)
        subprocess.run(["bash", "-n", str(path)], check=True)


# ------------------------------------------------------------------ the shard and report scripts
@pytest.fixture
def fake_python(tmp_path) -> dict[str, str]:
    (tmp_path / "project").mkdir()
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return {"FAKE_RECORD": str(tmp_path / "record")}


def recorded(tmp_path: Path) -> list[str]:
    return (tmp_path / "record").read_text().splitlines()


def test_a_shard_task_runs_its_shard_from_the_working_folder(tmp_path, fake_python):
    write_scripts(slurm_jobs(tmp_path, device="cuda"))
    result = run_script(
        tmp_path / "scripts" / SHARD_SCRIPT, "1", env={**fake_python, **task_env(2, 3, cpus=4)}, cwd=tmp_path
    )
    assert result.returncode == 0 and "fha ran" in result.stdout
    assert recorded(tmp_path) == [
        str(tmp_path / "project"),
        "1",  # OMP_NUM_THREADS: 4 CPUs, 4 trainings at once (the default on CPU)
        "-m",
        "fha",
        "study",
        "run",
        str(tmp_path / "my spec's.toml"),
        "--out",
        str(tmp_path / "the study"),
        "--shard",
        "2/3",
        "--jobs",
        "4",
        "--device",
        "cuda",
    ]


@pytest.mark.parametrize(("gpus", "jobs", "threads"), [(0, None, "1"), (0, 2, "4"), (1, None, "8"), (1, 3, "2")])
def test_each_training_gets_its_share_of_the_cpus(tmp_path, fake_python, gpus, jobs, threads):
    write_scripts(slurm_jobs(tmp_path, gpus=gpus, jobs=jobs))
    run_script(tmp_path / "scripts" / SHARD_SCRIPT, "1", env={**fake_python, **task_env(1, 3, cpus=8)}, cwd=tmp_path)
    record = recorded(tmp_path)
    assert record[1] == threads and record[record.index("--jobs") + 1] == str(jobs or (1 if gpus else 8))


@pytest.mark.parametrize(
    ("status", "round_number", "expected"),
    [(3, "1", 0), (3, "2", 3), (2, "1", 2), (2, "2", 2), (0, "1", 0), (0, "2", 0)],
)
def test_waiting_for_other_shards_fails_only_the_last_round(tmp_path, fake_python, status, round_number, expected):
    write_scripts(slurm_jobs(tmp_path))
    env = {**fake_python, **task_env(1, 3), "FAKE_STATUS": str(status)}
    result = run_script(tmp_path / "scripts" / SHARD_SCRIPT, round_number, env=env, cwd=tmp_path)
    assert result.returncode == expected
    waiting = (
        "shard 1/3 has runs left (other shards' tuning, or stopped before the time limit): round 2 goes on with it"
    )
    assert (waiting in result.stdout) == (status == 3 and round_number == "1")


@pytest.mark.parametrize(("round_number", "expected"), [("1", 0), ("2", 3)])
def test_the_shard_script_passes_sigusr1_on_to_the_study(tmp_path, fake_python, round_number, expected):
    """SLURM's --signal=B:USR1 reaches the batch shell alone: the study must hear it and its exit status
    count, also when it ends while the shell is still in its trap (tried several times)."""
    write_scripts(slurm_jobs(tmp_path, drain_minutes=10))
    for attempt in range(8):
        ready = tmp_path / f"fha started {attempt}"
        env = {**os.environ, **fake_python, **task_env(1, 3), "FAKE_WAIT": str(ready), "FAKE_STATUS": "3"}
        shard = subprocess.Popen(
            ["bash", str(tmp_path / "scripts" / SHARD_SCRIPT), round_number],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=as_slurm_starts_it,
            start_new_session=True,  # so that a failure below leaves no stand-in running
        )
        try:
            deadline = time.monotonic() + 30
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ready.exists(), "the stand-in study never started"
            shard.send_signal(signal.SIGUSR1)
            stdout, _ = shard.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shard.pid, signal.SIGKILL)
        assert recorded(tmp_path)[-1] == "got USR1"
        assert shard.returncode == expected, (attempt, stdout)


def test_a_shard_asked_to_stop_during_its_setup_starts_no_study(tmp_path, fake_python):
    write_scripts(slurm_jobs(tmp_path, setup=("kill -USR1 $$",)))  # the signal comes while the job sets up
    result = run_script(tmp_path / "scripts" / SHARD_SCRIPT, "2", env={**fake_python, **task_env(1, 3)}, cwd=tmp_path)
    assert result.returncode == 3 and not (tmp_path / "record").exists()


def test_a_shard_script_outside_an_array_or_without_a_round_says_so(tmp_path, fake_python):
    write_scripts(slurm_jobs(tmp_path))
    shard = tmp_path / "scripts" / SHARD_SCRIPT
    env = {name: value for name, value in os.environ.items() if not name.startswith("SLURM_")}
    result = subprocess.run(["bash", str(shard), "1"], env={**env, **fake_python}, capture_output=True, text=True)
    assert (
        result.returncode != 0 and "SLURM_ARRAY_TASK_ID: not a SLURM array task: submit with submit.sh" in result.stderr
    )
    result = run_script(shard, env={**fake_python, **task_env(1, 3)}, cwd=tmp_path)
    assert result.returncode != 0 and "usage: sbatch shard.sbatch ROUND, 1 to 2" in result.stderr
    assert not (tmp_path / "record").exists()


def test_a_failing_setup_line_stops_the_job(tmp_path, fake_python):
    write_scripts(slurm_jobs(tmp_path, setup=("echo first setup", "false", "echo never")))
    result = run_script(tmp_path / "scripts" / SHARD_SCRIPT, "1", env={**fake_python, **task_env(1, 3)}, cwd=tmp_path)
    assert result.returncode != 0 and result.stdout == "first setup\n" and not (tmp_path / "record").exists()


def test_the_report_job_reports_the_study(tmp_path, fake_python):
    write_scripts(slurm_jobs(tmp_path, setup=("echo ready",)))
    result = run_script(tmp_path / "scripts" / REPORT_SCRIPT, env={**fake_python, "FAKE_STATUS": "2"}, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == "ready\nfha ran\n"  # a report that fails fails the job
    assert recorded(tmp_path) == [
        str(tmp_path / "project"),
        "1",
        "-m",
        "fha",
        "study",
        "report",
        str(tmp_path / "the study"),
    ]


# ------------------------------------------------------------------ the submit script
@pytest.fixture
def fake_sbatch(tmp_path) -> dict[str, str]:
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "sbatch").write_text(FAKE_SBATCH)
    (folder / "sbatch").chmod(0o755)
    (tmp_path / "project").mkdir(exist_ok=True)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "FAKE_DIR": str(tmp_path)}


def test_submit_chains_the_rounds_and_the_report(tmp_path, fake_sbatch):
    jobs = slurm_jobs(tmp_path, rounds=3)
    write_scripts(jobs)
    shutil.rmtree(jobs.logs)  # submit.sh makes it again: SLURM writes no log into a missing folder
    result = run_script(tmp_path / "scripts" / SUBMIT_SCRIPT, "--mail-type=END", env=fake_sbatch, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project, shard, report = tmp_path / "project", jobs.scripts / SHARD_SCRIPT, jobs.scripts / REPORT_SCRIPT
    assert (tmp_path / "calls").read_text().splitlines() == [
        f"{project} --parsable --mail-type=END {shard} 1",
        f"{project} --parsable --dependency=afterany:501 --mail-type=END {shard} 2",
        f"{project} --parsable --dependency=afterany:502 --mail-type=END {shard} 3",  # 502;cluster
        f"{project} --parsable --dependency=afterok:503 --mail-type=END {report}",
    ]
    assert result.stdout.splitlines()[:4] == [
        "round 1 of 3: array job 501",
        "round 2 of 3: array job 502",
        "round 3 of 3: array job 503",
        "report: job 504, once every task of round 3 has succeeded",
    ]
    assert jobs.logs.is_dir()


def test_submit_stops_at_a_refused_job(tmp_path, fake_sbatch):
    write_scripts(slurm_jobs(tmp_path, rounds=3))
    result = run_script(tmp_path / "scripts" / SUBMIT_SCRIPT, env={**fake_sbatch, "FAKE_FAIL_AT": "2"}, cwd=tmp_path)
    assert result.returncode != 0 and "sbatch: error: invalid partition" in result.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 2  # neither round 3 nor the report


# ------------------------------------------------------------------ the study, task by task
@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    """The tiny study of test_study, run by `fha study run` in one process, without shards."""
    return reference_study(tmp_path_factory.mktemp("reference"))


@pytest.mark.slow
def test_slurm_tasks_give_the_study_of_one_process(finished_study, tmp_path, monkeypatch, capsys):
    """Every round's tasks run as SLURM would run them, one after another, then the report: the same
    results as `fha study run` without shards (`finished_study`)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "study"
    assert main(["study", "sbatch", str(spec_path_of(finished_study)), "--out", str(out), "--shards", "2"]) == 0
    env = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outputs = {}
    for round_number in (1, 2):
        for task in (1, 2):
            result = run_script(
                out / "slurm" / SHARD_SCRIPT, str(round_number), env={**env, **task_env(task, 2)}, cwd=elsewhere
            )
            assert result.returncode == 0, result.stdout + result.stderr
            outputs[round_number, task] = result.stdout
    assert (
        "shard 1/2 has runs left (other shards' tuning, or stopped before the time limit): round 2 goes on with it"
        in outputs[1, 1]
    )
    assert "0 runs trained now" in outputs[2, 2]  # shard 2 ended round 1 with its part of the evaluation
    result = run_script(out / "slurm" / REPORT_SCRIPT, env=env, cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / RESULTS_FILE).read_text() == (finished_study / RESULTS_FILE).read_text()


@pytest.mark.slow
def test_a_real_slurm_runs_the_study(finished_study, tmp_path, monkeypatch):
    """Submitted to SLURM with sbatch --wait; needs a cluster (or a one-node SLURM with munge) that runs
    jobs from this machine and sees its files."""
    if shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed here (no sbatch on PATH); the scripts are tested with SLURM's environment")
    if os.environ.get(REAL_SLURM) != "1":
        pytest.skip(f"sbatch found; set {REAL_SLURM}=1 to submit this test's jobs to its cluster")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "study"
    assert (
        main(["study", "sbatch", str(spec_path_of(finished_study)), "--out", str(out), "--shards", "2", "--time", "30"])
        == 0
    )
    result = run_script(out / "slurm" / SUBMIT_SCRIPT, "--wait", env={}, cwd=tmp_path)  # each call waits for its job
    logs = "\n".join(path.read_text() for path in sorted((out / "slurm" / "logs").glob("*.out")))
    assert result.returncode == 0, result.stdout + result.stderr + logs
    assert (out / RESULTS_FILE).read_text() == (finished_study / RESULTS_FILE).read_text()
