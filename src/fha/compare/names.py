"""Names for the runs of a comparison: unique, and saying what tells the runs apart.

A run is named after its folder. When folder names repeat (a study's
``runs/*/lr-0.01/seed-*`` gives "seed-0" once per variant), every run is named by what
differs between the runs instead, the first of these that tells them all apart:

1. the settings that differ, the attention type first and the seed last (``mha seed=0``,
   ``fha rope_layout=subhead seed=1``);
2. the components of their paths that differ (``study-a/seed-0``, ``study-b/seed-0``);
3. the folder name numbered (``seed-0 #2``), with a warning that `names` is needed.

Seed groups are labelled by their members' common start, cut at a component boundary
(``fha`` for ``fha seed=0`` and ``fha seed=1``), and also made unique.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fha.errors import FhaError

if TYPE_CHECKING:  # runs.py labels its seed groups with this module
    from fha.compare.runs import RunSummary

log = logging.getLogger(__name__)

PATH_JOIN = "/"
SETTING_JOIN = " "
COMPONENT_BOUNDARIES = (PATH_JOIN, SETTING_JOIN)  # group labels are cut back to one of these
LABEL_TRIM = "-_. /="  # stripped from the end of a group label
FIRST_SETTING = "attention"  # what tells runs apart first, shown as its bare value
LAST_SETTING = "seed"  # shown last: runs usually differ in it within an experiment
NUMBER_MARK = " #"


def check_names(names: Sequence[str]) -> None:
    """Names given by the user must tell the runs apart."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise FhaError(f"`names` repeats {', '.join(map(repr, repeated))}: every run needs a name of its own")


def derived_names(runs: Sequence[RunSummary]) -> list[str]:
    """Unique names for `runs` (see the module docstring); their folder names when those are unique."""
    folders = [run.path.resolve().name for run in runs]
    if _unique(folders):
        return folders
    for candidate in (_setting_names(runs), _path_names(runs)):
        if candidate is not None and _unique(candidate):
            log.info(
                "runs share folder names (%s); naming them by what differs: %s (`names` chooses others)",
                ", ".join(sorted({name for name in folders if folders.count(name) > 1})),
                ", ".join(candidate),
            )
            return candidate
    numbered = _numbered(folders)
    log.warning(
        "runs share folder names and settings: %s; pass `names` to tell them apart in the report",
        ", ".join(numbered),
    )
    return numbered


def group_labels(member_names: Sequence[Sequence[str]]) -> list[str]:
    """One label per group of member names: their common start, or the first name and a count;
    unique across groups."""
    labels = [_common_label(names) for names in member_names]
    return [
        label if labels.count(label) == 1 else _counted_label(names)
        for label, names in zip(labels, member_names, strict=True)
    ]


def _common_label(names: Sequence[str]) -> str:
    prefix = os.path.commonprefix(list(names))
    whole_components = all(len(name) == len(prefix) or name[len(prefix)] in COMPONENT_BOUNDARIES for name in names)
    if not whole_components:
        cut = max(prefix.rfind(boundary) for boundary in COMPONENT_BOUNDARIES)
        if cut > 0:
            prefix = prefix[:cut]
    prefix = prefix.rstrip(LABEL_TRIM)
    return prefix if prefix else _counted_label(names)


def _counted_label(names: Sequence[str]) -> str:
    return f"{names[0]} (+{len(names) - 1})"


def _unique(names: Sequence[str]) -> bool:
    return len(set(names)) == len(names)


def _path_names(runs: Sequence[RunSummary]) -> list[str] | None:
    """The path components, counted from the end, in which the runs' folders differ."""
    parts = [run.path.resolve().parts for run in runs]
    depth = max(len(p) for p in parts)
    padded = [(None,) * (depth - len(p)) + tuple(p) for p in parts]  # aligned at the run folder
    differing = [i for i in range(depth) if len({p[i] for p in padded}) > 1]
    if not differing:
        return None
    return [PATH_JOIN.join(part for i in differing if (part := p[i]) is not None) for p in padded]


def _setting_names(runs: Sequence[RunSummary]) -> list[str] | None:
    """The settings in which the runs differ (model settings, then training settings, in the
    order of their configs), the attention type first and the seed last. Unset settings
    (None) are left out of a name."""
    settings = [_settings(run) for run in runs]
    keys = sorted(dict.fromkeys(key for s in settings for key in s), key=_setting_rank)  # stable: config order
    differing = [key for key in keys if len({_value(s.get(key)) for s in settings}) > 1]
    if not differing:
        return None
    return [SETTING_JOIN.join(_show(key, s[key]) for key in differing if s.get(key) is not None) for s in settings]


def _settings(run: RunSummary) -> dict[str, Any]:
    model = run.model_config.to_dict()
    train = {key: value for key, value in (run.train_config or {}).items() if key not in model}
    return {**model, **train}


def _setting_rank(key: str) -> int:
    return 0 if key == FIRST_SETTING else 2 if key == LAST_SETTING else 1


def _value(value: Any) -> str:
    """A setting as --set writes it: ``1,2,4`` for a head cut; no spaces, so names split cleanly."""
    if isinstance(value, (list, tuple)):
        if all(isinstance(item, (int, float, str)) for item in value):
            return ",".join(str(item) for item in value)
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _show(key: str, value: Any) -> str:
    return _value(value) if key == FIRST_SETTING else f"{key}={_value(value)}"


def _numbered(folders: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for name in folders:
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}{NUMBER_MARK}{seen[name]}")
    return names
