"""A study as SLURM jobs: rounds of a job array, each task one shard, then the report.

Shard I of N trains every N-th trunk of each phase (`fha.study.runner`). Tuning must finish
before the evaluation rates, and each grid extension before the next tuning round, are
known, so one array cannot run a study with a sweep: a shard whose part of a tuning round is
done while other shards' is not exits with `WAITING_EXIT`. The study therefore runs as a
chain of rounds of the same array: round r+1 starts once every task of round r has ended,
whatever its status (``afterany``: a waiting shard, or a failed run that the next round
retries), and the report once every task of the last round has succeeded (``afterok``).
A study without a sweep, or of one shard, needs one round; otherwise a round per tuning step
(the grid, then each of up to ``max_extensions`` extensions) and one for evaluation. A shard
that finishes the last part of a round goes on into the next, so a round after the study is
done ends at once.

Three files are written: ``shard.sbatch`` (the array), ``report.sbatch`` and ``submit.sh``,
which submits the chain with ``sbatch --parsable`` and prints the job ids.

A task's time limit would stop its trainings at a checkpoint, and a next round resumes them.
With ``drain_minutes`` SLURM signals the task (SIGUSR1) that many minutes before the limit
instead: the shard script passes the signal on, and ``fha study run`` lets the trainings under
way finish and starts no new one (exit status `WAITING_EXIT`), so the next round starts from
finished runs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from fha.device import DEVICE_CHOICES, DEVICE_PATTERN
from fha.errors import FhaValueError, writing
from fha.study import WAITING_EXIT
from fha.study.plan import evaluation_seeds
from fha.study.spec import StudySpec

SHARD_SCRIPT, REPORT_SCRIPT, SUBMIT_SCRIPT = "shard.sbatch", "report.sbatch", "submit.sh"
LOGS_FOLDER = "logs"
MAX_ARRAY_TASKS = 1000  # SLURM's default MaxArraySize is 1001 (task ids 0 to 1000)
MAX_ROUNDS = 100
MAX_SIGNAL_SECONDS = 65535  # the largest lead time of SLURM's --signal
REPORT_SECONDS = 3600  # the report job's time limit, unless the shards' is shorter
REPORT_CPUS = 1
SECONDS_PER = {"day": 86400, "hour": 3600, "minute": 60}
EXECUTABLE = 0o755
WORD = re.compile(r"[A-Za-z0-9_.,:+=@-]+")  # what an #SBATCH value may hold without quoting
OUTPUT_PATH = re.compile(r"[^\s%'\"\\]+")  # SLURM reads % in --output as a pattern
MEMORY = re.compile(r"([0-9]+)([KMGT]?)")
TIME_FORMS = (
    "MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS, DAYS-HOURS:MINUTES or "
    "DAYS-HOURS:MINUTES:SECONDS, e.g. 2:00:00"
)


def time_limit_seconds(text: str) -> int:
    """Seconds in a SLURM time limit (the forms `TIME_FORMS` lists); FhaValueError if it is not one."""
    days, dash, clock = text.partition("-") if "-" in text else ("0", "", text)
    parts = clock.split(":")
    if not all(part.isdigit() for part in [days, *parts]) or len(parts) > 3:
        raise FhaValueError(f"`time` {text!r}: expected a SLURM time limit: {TIME_FORMS}")
    numbers = [int(part) for part in parts]
    if dash:  # DAYS-HOURS[:MINUTES[:SECONDS]]
        hours, minutes, seconds = (numbers + [0, 0])[:3]
    else:  # MINUTES, MINUTES:SECONDS or HOURS:MINUTES:SECONDS
        hours, minutes, seconds = numbers if len(numbers) == 3 else [0, *numbers, 0][:3]
    total = int(days) * SECONDS_PER["day"] + hours * SECONDS_PER["hour"]
    total += minutes * SECONDS_PER["minute"] + seconds
    if total <= 0:
        raise FhaValueError(f"`time` {text!r}: must be longer than 0")
    return total


def time_limit_text(seconds: int) -> str:
    """A time limit as SLURM writes it: HOURS:MM:SS, or DAYS-HH:MM:SS from a day on."""
    days, rest = divmod(seconds, SECONDS_PER["day"])
    hours, rest = divmod(rest, SECONDS_PER["hour"])
    minutes, seconds = divmod(rest, SECONDS_PER["minute"])
    clock = f"{minutes:02d}:{seconds:02d}"
    return f"{days}-{hours:02d}:{clock}" if days else f"{hours}:{clock}"


def rounds_needed(spec: StudySpec, shards: int) -> int:
    """Array rounds that finish `spec` when no run fails or hits the time limit (see the module's docstring);
    one shard alone never waits for another."""
    return 1 if spec.sweep is None or shards == 1 else spec.sweep.max_extensions + 2


def default_shards(spec: StudySpec) -> int:
    """One shard per evaluation trunk (a variant at one seed pair, every budget): the study's widest phase
    but for a large sweep, capped at what an array holds."""
    return min(len(spec.variant_names) * len(evaluation_seeds(spec)), MAX_ARRAY_TASKS)


def job_name_for(spec_path: Path) -> str:
    """``fha-`` and the spec's name, in the characters a job name may hold."""
    return "fha-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", spec_path.stem).strip("-")


@dataclass(frozen=True)
class SlurmJobs:
    """What the study's jobs ask SLURM for and run. None leaves a setting to the cluster's default."""

    spec: Path  # absolute, like every path here: the jobs run from `workdir`
    out_dir: Path
    workdir: Path  # where the spec's relative data paths are read from
    scripts: Path  # the folder of the three scripts and their logs
    python: str  # the interpreter that runs ``-m fha``
    shards: int
    rounds: int
    min_rounds: int = 1
    job_name: str = "fha-study"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    cpus: int = 1
    gpus: int = 0
    mem: str | None = None
    max_running: int | None = None
    drain_minutes: int | None = None  # SIGUSR1 this long before the time limit: finish, start nothing new
    jobs: int | None = None  # trainings at once in a task; None: one per CPU, or one on a GPU
    device: str | None = None
    setup: tuple[str, ...] = field(default_factory=tuple)  # shell lines run before fha (module load, ...)

    def __post_init__(self) -> None:
        for name in ("spec", "out_dir", "workdir", "scripts"):
            if not getattr(self, name).is_absolute():
                raise FhaValueError(f"`{name}` must be an absolute path, got {getattr(self, name)}")
        _check_count("shards", self.shards, MAX_ARRAY_TASKS)
        _check_count("rounds", self.rounds, MAX_ROUNDS)
        if self.rounds < self.min_rounds:
            raise FhaValueError(
                f"`rounds` {self.rounds}: this spec needs at least {self.min_rounds} (a round per tuning step of "
                "its sweep, then one for evaluation)"
            )
        _check_count("cpus", self.cpus, None)
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise FhaValueError(f"`gpus` must be a whole number, 0 or more, got {self.gpus!r}")
        for name in ("max_running", "jobs"):
            if getattr(self, name) is not None:
                _check_count(name, getattr(self, name), None)
        if self.drain_minutes is not None:
            _check_count("drain_minutes", self.drain_minutes, MAX_SIGNAL_SECONDS // SECONDS_PER["minute"])
            if self.time is not None and self.drain_minutes * SECONDS_PER["minute"] >= time_limit_seconds(self.time):
                raise FhaValueError(
                    f"`drain_minutes` {self.drain_minutes}: must be shorter than the time limit `time` {self.time}"
                )
        for name in ("job_name", "partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None and not WORD.fullmatch(value):
                raise FhaValueError(f"`{name}` {value!r}: expected one word of letters, digits and _ . , : + = @ -")
        if self.device is not None and not DEVICE_PATTERN.fullmatch(self.device):
            raise FhaValueError(f"`device` {self.device!r}: unknown device (use {', '.join(DEVICE_CHOICES)})")
        if self.time is not None:
            time_limit_seconds(self.time)
        if self.mem is not None and not ((amount := MEMORY.fullmatch(self.mem)) and int(amount[1]) > 0):
            raise FhaValueError(f"`mem` {self.mem!r}: expected a positive amount, in megabytes or with K, M, G or T")
        if not OUTPUT_PATH.fullmatch(str(self.logs)):
            raise FhaValueError(
                f"`scripts` {self.scripts}: SLURM's #SBATCH --output cannot hold this path (a space, a quote, "
                "a backslash or %); choose a folder without them"
            )
        if not self.python.strip():
            raise FhaValueError("`python` must name an interpreter")
        for line in self.setup:
            if "\n" in line or not line.strip():
                raise FhaValueError(f"`setup` {line!r}: expected one non-empty shell line")

    @property
    def logs(self) -> Path:
        return self.scripts / LOGS_FOLDER

    @property
    def trainings_at_once(self) -> str:
        """The --jobs of every task, as the shard script computes it: given, one on a GPU, or one per CPU."""
        if self.jobs is not None:
            return str(self.jobs)
        return "1" if self.gpus else '"$cpus"'

    def sbatch_headers(self, *, report: bool) -> list[str]:
        """The #SBATCH lines of the shard array, or of the report job (one CPU, no GPU, at most an hour)."""
        where = {"partition": self.partition, "account": self.account, "qos": self.qos}
        if report:
            limit = None if self.time is None else time_limit_text(min(time_limit_seconds(self.time), REPORT_SECONDS))
            options = {
                "job-name": f"{self.job_name}-report",
                "cpus-per-task": str(REPORT_CPUS),
                "time": limit,
                **where,
                "output": str(self.logs / "report-%j.out"),
                "kill-on-invalid-dep": "yes",  # cancelled, rather than pending for ever, when a shard failed
            }
        else:
            options = {
                "job-name": self.job_name,
                "array": f"1-{self.shards}" + (f"%{self.max_running}" if self.max_running else ""),
                "cpus-per-task": str(self.cpus),
                "gres": f"gpu:{self.gpus}" if self.gpus else None,
                "mem": self.mem,
                "time": self.time,
                "signal": None
                if self.drain_minutes is None
                else f"B:USR1@{self.drain_minutes * SECONDS_PER['minute']}",
                **where,
                "output": str(self.logs / "shard-%A_%a.out"),  # array job id and task id
            }
        return [f"#SBATCH --{key}={value}" for key, value in options.items() if value is not None]


def _check_count(name: str, value: object, most: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (most is not None and value > most):
        allowed = f"between 1 and {most}" if most is not None else "1 or more"
        raise FhaValueError(f"`{name}` must be a whole number {allowed}, got {value!r}")


def _about(jobs: SlurmJobs) -> list[str]:
    return ["# Written by fha study sbatch for", f"#   the spec   {jobs.spec}", f"#   the study  {jobs.out_dir}"]


def _setup_lines(jobs: SlurmJobs) -> list[str]:
    if not jobs.setup:
        return []
    return ["set -e  # a failing setup line stops the job", *jobs.setup, "set +e"]


def shard_script(jobs: SlurmJobs) -> str:
    q = shlex.quote
    run = [jobs.python, "-m", "fha", "study", "run", str(jobs.spec), "--out", str(jobs.out_dir)]
    device = f" --device {q(jobs.device)}" if jobs.device else ""
    lines = [
        "#!/usr/bin/env bash",
        *jobs.sbatch_headers(report=False),
        "#",
        *_about(jobs),
        f"# Array task I runs shard I of {jobs.shards}. {SUBMIT_SCRIPT} submits {jobs.rounds} rounds of this array, "
        "each once every",
        f"# task of the round before has ended, then {REPORT_SCRIPT}. A shard whose part of tuning is",
        "# done while other shards' is not, or that was asked to stop starting trainings (SIGUSR1), exits",
        f"# with status {WAITING_EXIT}: before the last round that is no failure, as the next round goes on with it.",
        f"round=${{1:?usage: sbatch {SHARD_SCRIPT} ROUND, 1 to {jobs.rounds} ({SUBMIT_SCRIPT} gives it)}}",
        f"task=${{SLURM_ARRAY_TASK_ID:?not a SLURM array task: submit with {SUBMIT_SCRIPT}}}",
        f"shards={jobs.shards}",
        f"rounds={jobs.rounds}",
        f"cd {q(str(jobs.workdir))} || exit 1",
        "# SIGUSR1 (SLURM's --signal=B:USR1, or scancel --batch --signal=USR1) reaches this shell alone: it",
        "# passes it on to the study, which finishes the trainings under way and starts no new one.",
        "asked=0",
        'trap \'asked=$((asked + 1)); [ -n "${study:-}" ] && kill -USR1 "$study" 2>/dev/null\' USR1',
        *_setup_lines(jobs),
        f"cpus=${{SLURM_CPUS_PER_TASK:-{jobs.cpus}}}",
        f"jobs={jobs.trainings_at_once}",
        "threads=$((cpus / jobs > 0 ? cpus / jobs : 1))  # each training's share of the task's CPUs",
        "export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads",
        'if [ "$asked" -gt 0 ]; then  # asked before the study started: nothing starts',
        f"    status={WAITING_EXIT}",
        "else",
        "    " + " ".join(q(word) for word in run) + f' --shard "$task/$shards" --jobs "$jobs"{device} &',
        "    study=$!",
        '    [ "$asked" -gt 0 ] && kill -USR1 "$study" 2>/dev/null  # asked while it was being started',
        "    while true; do",
        "        seen=$asked",
        '        wait "$study"',
        "        status=$?",
        '        [ "$status" -gt 128 ] && [ "$asked" != "$seen" ] || break  # cut short by the signal: wait again',
        "    done",
        "fi",
        f'if [ "$status" -eq {WAITING_EXIT} ] && [ "$round" -lt "$rounds" ]; then',
        "    echo \"shard $task/$shards has runs left (other shards' tuning, or stopped before the time limit):"
        ' round $((round + 1)) goes on with it"',
        "    exit 0",
        "fi",
        'exit "$status"',
    ]
    return "\n".join(lines) + "\n"


def report_script(jobs: SlurmJobs) -> str:
    q = shlex.quote
    report = [jobs.python, "-m", "fha", "study", "report", str(jobs.out_dir)]
    lines = [
        "#!/usr/bin/env bash",
        *jobs.sbatch_headers(report=True),
        "#",
        *_about(jobs),
        f"# The study's report; {SUBMIT_SCRIPT} submits it to run once every task of the last round of",
        f"# {SHARD_SCRIPT} has succeeded.",
        f"cd {q(str(jobs.workdir))} || exit 1",
        *_setup_lines(jobs),
        f"export OMP_NUM_THREADS={REPORT_CPUS} MKL_NUM_THREADS={REPORT_CPUS}",
        "exec " + " ".join(q(word) for word in report),
    ]
    return "\n".join(lines) + "\n"


def submit_script(jobs: SlurmJobs) -> str:
    q = shlex.quote
    lines = [
        "#!/usr/bin/env bash",
        *_about(jobs),
        f"# Submits the study to SLURM: {jobs.rounds} rounds of the {jobs.shards}-task array {SHARD_SCRIPT}, each once",
        "# every task of the round before has ended whatever its status (afterany: a shard waiting for",
        "# other shards' tuning, or a failed run that the next round retries), then",
        f"# {REPORT_SCRIPT} once every task of the last round has succeeded (afterok).",
        "# Its arguments are passed to every sbatch call, e.g. bash submit.sh --mail-type=END.",
        "set -euo pipefail",
        f"cd {q(str(jobs.workdir))}",
        f"scripts={q(str(jobs.scripts))}",
        f"rounds={jobs.rounds}",
        f'mkdir -p "$scripts/{LOGS_FOLDER}"',
        'after=""',
        "for ((round = 1; round <= rounds; round++)); do",
        f'    job=$(sbatch --parsable ${{after:+"$after"}} "$@" "$scripts/{SHARD_SCRIPT}" "$round")',
        "    job=${job%%;*}  # --parsable prints ID or ID;CLUSTER",
        '    echo "round $round of $rounds: array job $job"',
        '    after="--dependency=afterany:$job"',
        "done",
        f'report=$(sbatch --parsable --dependency="afterok:$job" "$@" "$scripts/{REPORT_SCRIPT}")',
        'echo "report: job ${report%%;*}, once every task of round $rounds has succeeded"',
        'echo "logs: $scripts/logs; the jobs: squeue -u $(id -un)"',
    ]
    return "\n".join(lines) + "\n"


SCRIPTS = {SHARD_SCRIPT: shard_script, REPORT_SCRIPT: report_script, SUBMIT_SCRIPT: submit_script}


def write_scripts(jobs: SlurmJobs) -> list[Path]:
    """Write the three scripts (and the logs folder SLURM needs before a job starts) into `jobs.scripts`."""
    written = []
    with writing(jobs.scripts):
        jobs.logs.mkdir(parents=True, exist_ok=True)
        for name, render in SCRIPTS.items():
            path = jobs.scripts / name
            path.write_text(render(jobs), encoding="utf-8")
            path.chmod(EXECUTABLE)
            written.append(path)
    return written
