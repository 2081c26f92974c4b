"""The study folder, shared by `fha study run` (any number of shards), `report` and `export`.

::

    DIR/
      study.json              the spec (its base resolved), the data files' digests, the tokenizer's fingerprint
      tokenizer.json          the one tokenizer every run uses
      references.json         n-gram reference bits per byte on the validation and test texts
      ledger/FINGERPRINT.json one small file per finished cell: the study's results (fha.study.ledger)
      runs/VARIANT/lr-LR/seed-S/tokens-N-FP/   a run folder (weights, checkpoints, logs, eval.json);
                              with a [grid], under its grid point: runs/POINT/VARIANT/...
      logs/...                 the output of runs trained by parallel workers (--jobs > 1)

Only the ledger, study.json, tokenizer.json and references.json are needed to rebuild the
report; the run folders can be deleted once their cells are in the ledger (a budget added
later then trains from scratch instead of branching from a checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fha.errors import FhaError
from fha.files import read_json
from fha.study.plan import CellPlan, StudyContext
from fha.study.spec import StudySpec, spec_from_dict

STUDY_FILE = "study.json"
TOKENIZER_FILE = "tokenizer.json"
REFERENCES_FILE = "references.json"
EVAL_FILE = "eval.json"  # in a run folder: its whole-text metrics by split (the ledger holds them too)
RUNS_DIR = "runs"
LOGS_DIR = "logs"  # outside the run folders, which hold only what training writes
STUDY_FORMAT = 2


def run_dir(out_dir: Path, plan: CellPlan) -> Path:
    return out_dir / RUNS_DIR / plan.folder_name


def worker_log(out_dir: Path, plan: CellPlan) -> Path:
    return out_dir / LOGS_DIR / f"{plan.folder_name}.log"


def load_record(out_dir: Path) -> dict[str, Any]:
    """study.json of a study folder, checked to be one."""
    if out_dir.is_file():
        raise FhaError(f"{out_dir}: a file, not a study folder (give the folder fha study run wrote)")
    record = read_json(out_dir / STUDY_FILE, "study record")
    if record is None:
        raise FhaError(
            f"{out_dir}: not a study folder (no {STUDY_FILE}); create it with fha study run SPEC --out {out_dir}"
        )
    if not isinstance(record, dict) or record.get("format") != STUDY_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise FhaError(
            f"{out_dir / STUDY_FILE}: study record format {found!r}, this fha reads {STUDY_FORMAT} (a study "
            "folder of an older fha: run its spec into a new folder)"
        )
    for key in ("spec", "context"):
        if not isinstance(record.get(key), dict):
            raise FhaError(f"{out_dir / STUDY_FILE}: `{key}` missing or not an object")
    return record


def spec_of(out_dir: Path, record: dict[str, Any]) -> StudySpec:
    return spec_from_dict(record["spec"], out_dir, label=str(out_dir / STUDY_FILE))


def context_of(out_dir: Path, record: dict[str, Any]) -> StudyContext:
    context = record["context"]
    try:
        return StudyContext(
            data_digests={str(k): str(v) for k, v in context["data_digests"].items()},
            tokenizer_fingerprint=str(context["tokenizer_fingerprint"]),
            vocab_size=int(context["vocab_size"]),
            pad_id=None if context["pad_id"] is None else int(context["pad_id"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise FhaError(f"{out_dir / STUDY_FILE}: malformed context ({err})") from None


def context_to_dict(context: StudyContext) -> dict[str, Any]:
    return {
        "data_digests": dict(context.data_digests),
        "tokenizer_fingerprint": context.tokenizer_fingerprint,
        "vocab_size": context.vocab_size,
        "pad_id": context.pad_id,
    }
