"""The ledger: one small JSON file per finished cell, enough to rebuild every report without weights.

``DIR/ledger/FINGERPRINT.json`` holds the cell (variant, rate, seeds, budget, role, and its
grid point when the spec has a grid), its
identity (what the fingerprint hashes), the metrics on the validation text, the test text
and the training sample, the loss, learning-rate and gradient-norm curves, the run's
environment, its parameter count and where it branched from. A cell whose training diverged
has an entry too, with the reason and no metrics: tuning counts it as the worst rate.

Entries keep the metric and curve names they have always had (``loss``, ``num_tokens``,
``val_loss``...): ledgers written by earlier versions, and by studies still running them, read
and merge unchanged. `ledger_metrics` and `Entry.metric` translate from and to the names of
`fha.metric_names` that everything shown from a ledger uses.

Entries are checked when read (format, fingerprint against identity, every metric a finite
number); a malformed one is an FhaError naming the file. Several ledgers (shards trained on
other machines, a ledger committed under docs/results/) are read together; two entries of
one fingerprint must agree, or the ledgers are refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fha import metric_names as names
from fha.errors import FhaError, one_line
from fha.files import read_json, write_json_atomic
from fha.study.plan import Cell, CellPlan, Seeds, fingerprint_of

LEDGER_DIR = "ledger"
LEDGER_FORMAT = 1
SPLITS = ("valid", "test", "train_sample")
REQUIRED_SPLITS = ("valid", "test")
METRICS = ("loss", "bits_per_byte", "top1_accuracy", "num_tokens", "num_bytes")  # as stored
# fha.metric_names' names of a text's metrics -> the ledger's, where they differ
STORED_NAMES = {names.LOSS: "loss", names.TOKENS_SCORED: "num_tokens", names.BYTES_SCORED: "num_bytes"}
CURVE_KEYS = ("step", "val_loss", "train_loss", "learning_rate", "grad_norm_step", "grad_norm")


@dataclass(frozen=True)
class Entry:
    """One finished cell, as read from the ledger."""

    cell: Cell
    fingerprint: str
    data: dict[str, Any]
    path: Path

    @property
    def diverged(self) -> str | None:
        return self.data.get("diverged")

    def metric(self, split: str, name: str = names.BITS_PER_BYTE) -> float:
        """A metric of a split (named as in `fha.metric_names`); inf for a diverged cell, NaN for a split the
        cell was not scored on."""
        if self.diverged:
            return math.inf
        split_metrics = self.data["metrics"].get(split)
        return math.nan if split_metrics is None else float(split_metrics[STORED_NAMES.get(name, name)])

    @property
    def parameters(self) -> int:
        return int(self.data.get("parameters", 0))

    @property
    def wall_time_s(self) -> float:
        return float(self.data.get("wall_time_s", math.nan))

    @property
    def curve(self) -> dict[str, list[float]]:
        return self.data.get("curve", {})

    @property
    def run_info(self) -> dict[str, Any]:
        return self.data.get("run_info", {})


def ledger_metrics(metrics: Mapping[str, float | int]) -> dict[str, float | int]:
    """A text's metrics (`fha.evaluation.EvalResult.to_dict`) under the names the ledger stores."""
    return {STORED_NAMES.get(name, name): value for name, value in metrics.items()}


def entry_path(out_dir: Path, fingerprint: str) -> Path:
    return out_dir / LEDGER_DIR / f"{fingerprint}.json"


def cell_to_dict(cell: Cell) -> dict[str, Any]:
    """The cell as its entry records it; `point` only for a grid point, so entries of studies without a
    grid stay as they were."""
    data: dict[str, Any] = {
        "variant": cell.variant,
        "lr_max": cell.lr_max,
        "init_seed": cell.seeds.init,
        "data_seed": cell.seeds.data,
        "tokens": cell.tokens,
        "role": cell.role,
    }
    if cell.point:
        data["point"] = cell.point
    return data


def cell_from_dict(data: Mapping[str, Any]) -> Cell:
    return Cell(
        str(data["variant"]),
        float(data["lr_max"]),
        Seeds(int(data["init_seed"]), int(data["data_seed"])),
        int(data["tokens"]),
        str(data["role"]),
        str(data.get("point", "")),
    )


def write_entry(out_dir: Path, plan: CellPlan, record: dict[str, Any]) -> Path:
    """Record a finished cell: `record` holds metrics (or diverged), curve, run_info, parameters, ..."""
    entry = {
        "format": LEDGER_FORMAT,
        "fingerprint": plan.fingerprint,
        "cell": cell_to_dict(plan.cell),
        "identity": plan.identity,
        **record,
    }
    path = entry_path(out_dir, plan.fingerprint)
    write_json_atomic(path, entry)
    return path


def _check_number(path: Path, where: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise FhaError(f"{path}: {where} must be a finite number, got {value!r}")


def read_entry(path: Path) -> Entry:
    """One ledger file, checked; an FhaError names the file and what is wrong with it."""
    try:
        data = read_json(path, "ledger entry")
    except FhaError as err:
        raise FhaError(f"{err}; delete it to train that run again") from None
    if not isinstance(data, dict):
        raise FhaError(f"{path}: a ledger entry must be a JSON object, got {type(data).__name__}")
    if data.get("format") != LEDGER_FORMAT:
        raise FhaError(
            f"{path}: ledger format {data.get('format')!r}, this fha reads {LEDGER_FORMAT}; delete it to train "
            "that run again"
        )
    for key, kind in (("fingerprint", str), ("cell", dict), ("identity", dict)):
        if not isinstance(data.get(key), kind):
            raise FhaError(f"{path}: `{key}` missing or not a {kind.__name__}")
    if fingerprint_of(data["identity"]) != data["fingerprint"] or path.stem != data["fingerprint"]:
        raise FhaError(f"{path}: its fingerprint does not match its identity or its file name (edited by hand?)")
    try:
        cell = cell_from_dict(data["cell"])
    except (KeyError, TypeError, ValueError) as err:
        raise FhaError(f"{path}: malformed cell ({one_line(err)})") from None
    if data.get("diverged") is None:
        metrics = data.get("metrics")
        if not isinstance(metrics, dict):
            raise FhaError(f"{path}: `metrics` missing or not an object")
        for split in REQUIRED_SPLITS:
            if not isinstance(metrics.get(split), dict):
                raise FhaError(f"{path}: no `{split}` metrics")
        for split, values in metrics.items():
            if not isinstance(values, dict):
                raise FhaError(f"{path}: metrics.{split} must be an object")
            for name in METRICS:
                _check_number(path, f"metrics.{split}.{name}", values.get(name))
    elif not isinstance(data["diverged"], str) or not data["diverged"]:
        raise FhaError(f"{path}: `diverged` must be the reason, a non-empty string")
    if "parameters" in data and not (isinstance(data["parameters"], int) and data["parameters"] >= 0):
        raise FhaError(f"{path}: `parameters` must be a whole number, got {data['parameters']!r}")
    if "wall_time_s" in data:
        _check_number(path, "wall_time_s", data["wall_time_s"])
    return Entry(cell, data["fingerprint"], data, path)


class Ledger:
    """The entries of one or more ledger folders, by fingerprint."""

    def __init__(self, entries: Mapping[str, Entry]) -> None:
        self.entries = dict(entries)

    @classmethod
    def read(cls, folders: Iterable[Path]) -> Ledger:
        entries: dict[str, Entry] = {}
        for folder in folders:
            for path in sorted((folder / LEDGER_DIR).glob("*.json")):
                entry = read_entry(path)
                known = entries.get(entry.fingerprint)
                if known is not None and _result(known) != _result(entry):
                    raise FhaError(
                        f"ledgers disagree: {known.path} and {entry.path} hold different results for "
                        f"{entry.cell.run_id} (fingerprint {entry.fingerprint})"
                    )
                entries.setdefault(entry.fingerprint, entry)
        return cls(entries)

    def get(self, fingerprint: str) -> Entry | None:
        return self.entries.get(fingerprint)

    def add(self, entry: Entry) -> None:
        self.entries[entry.fingerprint] = entry

    def __len__(self) -> int:
        return len(self.entries)


def _result(entry: Entry) -> Any:
    return entry.data.get("diverged") or entry.data.get("metrics")
