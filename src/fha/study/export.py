"""`fha study export DIR --to PATH`: what a study's result rests on, for publishing (no weights).

The export holds study.json, the tokenizer, the n-gram references, the ledger and the report
(report.md, report.html, results.csv, figures), with the mechanisms files of ``fha analyze
STUDY_DIR`` and the sub-head tables it kept of each run (``analysed/``) where there are any.
`fha study report PATH` rebuilds the same report from it, so a committed export can be checked
and grown by later sessions: run the spec with ``--out`` a new folder and report over both
folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fha.errors import FhaError, writing
from fha.files import write_bytes_atomic
from fha.study.layout import REFERENCES_FILE, RUNS_DIR, STUDY_FILE, TOKENIZER_FILE, load_record
from fha.study.ledger import LEDGER_DIR, Ledger
from fha.study.mechanisms import ANALYSED_DIR
from fha.study.mechanisms import FILES as MECHANISMS_FILES
from fha.study.report import HTML_FILE, MARKDOWN_FILE
from fha.study.results import RESULTS_FILE

REPORT_SUFFIXES = (".png", ".svg", ".pdf")


def _check_target(out_dir: Path, to: Path) -> None:
    """Refuse a target that is a study being run, or whose ledger holds runs the export would drop."""
    if (to / RUNS_DIR).is_dir():
        raise FhaError(f"`to` {to}: a study folder with runs of its own; export into a new or an export folder")
    if not (to / LEDGER_DIR).is_dir():
        return
    ours = {path.name for path in (out_dir / LEDGER_DIR).glob("*.json")}
    lost = sorted(path.name for path in (to / LEDGER_DIR).glob("*.json") if path.name not in ours)
    if lost:
        raise FhaError(
            f"`to` {to}: its ledger holds {len(lost)} runs that {out_dir} does not (e.g. {lost[0]}); exporting "
            "would drop them: copy them into the study's ledger first, or export elsewhere"
        )


def export_study(out_dir: Path, to: Path) -> list[Path]:
    """Copy the study's record, tokenizer, references, ledger and report into `to`; returns the files written."""
    load_record(out_dir)
    Ledger.read([out_dir])  # refuse to publish a damaged ledger
    if to.resolve() == out_dir.resolve():
        raise FhaError(f"`to` {to}: the study folder itself; export into another folder")
    _check_target(out_dir, to)
    names = [STUDY_FILE, TOKENIZER_FILE, REFERENCES_FILE, RESULTS_FILE, MARKDOWN_FILE, HTML_FILE, *MECHANISMS_FILES]
    sources = [out_dir / name for name in names if (out_dir / name).is_file()]
    sources += sorted(path for path in out_dir.iterdir() if path.suffix in REPORT_SUFFIXES)
    sources += sorted((out_dir / LEDGER_DIR).glob("*.json"))
    sources += sorted((out_dir / ANALYSED_DIR).glob("*.csv"))  # each run's sub-heads, for analyses without weights
    written = []
    with writing(to):
        to.mkdir(parents=True, exist_ok=True)
        stale = to / LEDGER_DIR
        if stale.is_dir():
            shutil.rmtree(stale)  # the export mirrors the ledger (`_check_target` made sure nothing is lost)
    for source in sources:
        target = to / source.relative_to(out_dir)
        write_bytes_atomic(target, source.read_bytes())
        written.append(target)
    return written
