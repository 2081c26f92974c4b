"""The study folder, shared by `fha study run` (any number of shards) and `fha study report`.

::

    DIR/
      study.json              the spec, the data files' digests, the tokenizer's fingerprint
      tokenizer.json          the one tokenizer every run uses
      runs/VARIANT/lr-LR/seed-K/   a run folder, plus eval.json once it is evaluated
      logs/VARIANT/lr-LR/seed-K.log   the output of a run trained by a parallel worker (--jobs > 1)

A run counts as finished when its eval.json exists: it is written last, after training and
the evaluations on the whole validation and test texts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fha.errors import FhaError
from fha.study.spec import RunPlan, StudySpec, spec_from_dict

STUDY_FILE = "study.json"
TOKENIZER_FILE = "tokenizer.json"
RUNS_DIR = "runs"
LOGS_DIR = "logs"  # outside the run folders, which hold only what training writes
EVAL_FILE = "eval.json"


def run_dir(out_dir: Path, run: RunPlan) -> Path:
    return out_dir / RUNS_DIR / run.run_id


def worker_log(out_dir: Path, run: RunPlan) -> Path:
    return out_dir / LOGS_DIR / f"{run.run_id}.log"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write under a temporary name, then rename: readers see the old file or the whole new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FhaError(f"{path}: damaged ({err}); delete it to redo that step") from None


def read_eval(out_dir: Path, run: RunPlan) -> dict[str, Any] | None:
    """The run's eval.json (``{"test": {...}, "valid": {...}}``), or None while it is not finished."""
    return read_json(run_dir(out_dir, run) / EVAL_FILE)


def load_record(out_dir: Path) -> dict[str, Any]:
    record = read_json(out_dir / STUDY_FILE)
    if record is None:
        raise FhaError(
            f"{out_dir}: not a study folder (no {STUDY_FILE}); create it with fha study run SPEC --out {out_dir}"
        )
    return record


def spec_of(out_dir: Path, record: dict[str, Any]) -> StudySpec:
    return spec_from_dict(record["spec"], Path(record.get("spec_folder", ".")), label=str(out_dir / STUDY_FILE))


def chosen_learning_rates(spec: StudySpec, out_dir: Path) -> dict[str, float] | None:
    """Per variant, the swept peak rate with the lowest validation bits per byte (the first of equals);
    the base rate without a sweep; None while a sweep run is unfinished."""
    if spec.sweep is None:
        return {variant.name: spec.base_lr_max(variant.name) for variant in spec.variants}
    chosen = {}
    for variant in spec.variants:
        best, best_value = None, math.inf
        for lr in spec.sweep.lr_max:
            result = read_eval(out_dir, RunPlan(variant.name, spec.sweep.seed, lr))
            if result is None:
                return None
            value = result["valid"]["bits_per_byte"]
            if best is None or value < best_value:
                best, best_value = lr, value
        chosen[variant.name] = best
    return chosen
