"""Before any run: the study's data checked, its tokenizer fixed, its evaluation texts tokenised.

Data that would make the answer meaningless is refused: a test or validation file with the
same bytes as the training file, or a validation file equal to the test file (a sweep would
then choose its rate on the test text). Documents shared between the training text and a
held-out text are counted, and a warning names the share when it is large.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fha.config import ModelConfig
from fha.data import TokenData, cached_tokens
from fha.data.sources import load_documents, load_splits
from fha.errors import FhaError, writing
from fha.files import read_json, write_if_changed, write_json_atomic
from fha.ngram import ngram_references
from fha.runs.info import file_digest
from fha.study.layout import REFERENCES_FILE, STUDY_FILE, STUDY_FORMAT, TOKENIZER_FILE, context_to_dict
from fha.study.ledger import Ledger
from fha.study.plan import TUNING, Planner, StudyContext, configs_for, evaluation_seeds
from fha.study.spec import StudySpec
from fha.tokenizer import Tokenizer
from fha.train.corpus import train_tokenizer
from fha.train_config import TrainConfig

log = logging.getLogger(__name__)

EVAL_SPLITS = ("valid", "test", "train_sample")
REFERENCE_ORDERS = (1, 2, 3)
OVERLAP_WARNING = 0.01  # share of a held-out text's documents also in the training text that earns a warning


@dataclass(frozen=True)
class Prepared:
    context: StudyContext
    tokenizer: Tokenizer
    texts: dict[str, TokenData]  # valid, test and (if asked) train_sample


def first_configs(spec: StudySpec) -> tuple[ModelConfig, TrainConfig]:
    """The configs of the spec's first evaluation run: the settings every run shares (vocabulary size,
    validation split) are read from them."""
    first = spec.variant_names[0]
    return configs_for(
        spec, first, spec.base_lr_max(first), evaluation_seeds(spec)[0], spec.tokens, spec.points[0].label
    )


def _split_settings(spec: StudySpec) -> tuple[float, int]:
    _, config = first_configs(spec)
    return config.val_fraction, config.split_seed


def data_digests(spec: StudySpec) -> dict[str, str]:
    """What the fingerprints record of the data: file digests, or the rule that split validation off train."""
    digests = {name: file_digest(path) for name, path in spec.data.files().items()}
    if spec.data.valid is None:
        val_fraction, split_seed = _split_settings(spec)
        digests["valid"] = f"split of train: val_fraction={val_fraction} split_seed={split_seed}"
    return digests


def check_data(spec: StudySpec, digests: dict[str, str]) -> None:
    """Refuse held-out texts that are the training text (or each other); warn on shared documents."""
    files = spec.data.files()
    for first, second in (("train", "test"), ("train", "valid"), ("valid", "test")):
        if first in files and second in files and digests[first] == digests[second]:
            raise FhaError(
                f"data.{first} ({files[first]}) and data.{second} ({files[second]}) have the same contents "
                f"(sha256 {digests[first]}): the {second} text must be held out"
                + ("; a sweep would choose its rate on the test text" if first == "valid" else "")
            )


def warn_on_overlap(documents: dict[str, list[str]]) -> None:
    seen = {_document_key(doc) for doc in documents["train"]}
    for split in ("valid", "test"):
        held_out = documents.get(split) or []
        shared = sum(1 for doc in held_out if _document_key(doc) in seen)
        if held_out and shared / len(held_out) >= OVERLAP_WARNING:
            log.warning(
                "%d of %d %s documents (%.1f%%) also occur in the training text: the %s score partly measures "
                "memorisation",
                shared,
                len(held_out),
                split,
                100 * shared / len(held_out),
                split,
            )


def _document_key(document: str) -> str:
    return hashlib.sha256(" ".join(document.split()).encode("utf-8")).hexdigest()


def train_sample(documents: list[str], count: int) -> list[str]:
    """`count` training documents spread evenly over the text (all of them when there are fewer)."""
    if count >= len(documents):
        return list(documents)
    return [documents[i * len(documents) // count] for i in range(count)]


def prepare_study(spec: StudySpec, out_dir: Path) -> Prepared:
    """Check the data, fix the tokenizer, check the finished runs, then write study.json, the tokenizer
    and the references and tokenise the evaluation texts. A refused spec leaves the folder as it was."""
    digests = checked_digests(spec)
    documents = study_documents(spec)
    warn_on_overlap(documents)
    tokenizer = _tokenizer(spec, out_dir, documents["train"])
    context = StudyContext(digests, tokenizer.fingerprint, tokenizer.vocab_size, tokenizer.pad_id)
    check_finished_runs(out_dir, spec, context)
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    write_if_changed(out_dir / TOKENIZER_FILE, tokenizer.to_str().encode("utf-8"))
    record = {"format": STUDY_FORMAT, "spec": spec.to_dict(), "context": context_to_dict(context)}
    write_if_changed(out_dir / STUDY_FILE, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    texts = evaluation_texts(spec, tokenizer, documents, digests)
    _write_references(out_dir, spec, context, tokenizer, documents, texts)
    return Prepared(context, tokenizer, texts)


def checked_digests(spec: StudySpec) -> dict[str, str]:
    """The data digests, once every file is there and no held-out text is the training text."""
    missing = spec.data.missing_files()
    if missing:
        raise FhaError(f"data file not found: {', '.join(missing)}")
    for name, path in spec.data.files().items():
        if not Path(path).is_file():
            raise FhaError(f"data.{name} ({path}): not a file")
    digests = data_digests(spec)
    check_data(spec, digests)
    return digests


def check_finished_runs(out_dir: Path, spec: StudySpec, context: StudyContext) -> None:
    """Refuse a spec that would give a finished run of `out_dir` another result (another fingerprint for
    the same variant, rate, seeds, budget and role), naming the first setting that differs."""
    ledger = Ledger.read([out_dir])
    planner = Planner(spec, context)
    order = {name: index for index, name in enumerate(spec.variant_names)}
    points = {point.label: index for index, point in enumerate(spec.points)}
    entries = sorted(
        (entry for entry in ledger.entries.values() if entry.cell.variant in order and entry.cell.point in points),
        key=lambda e: (
            points[e.cell.point],
            e.cell.role != TUNING,
            order[e.cell.variant],
            e.cell.lr_max,
            e.cell.seeds,
            e.cell.tokens,
        ),
    )
    for entry in entries:
        try:
            plan = planner.plan(entry.cell)
        except ValueError as err:
            change = str(err)
        else:
            if plan.fingerprint == entry.fingerprint:
                continue
            change = first_difference(entry.data["identity"], plan.identity, "")
        raise FhaError(
            f"{out_dir}: the spec changes the finished run {entry.cell.run_id} ({change}); its result would no "
            "longer be this spec's: restore the setting, or use another `out` to start afresh"
        )


def first_difference(old: Any, new: Any, where: str) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
    return f"{where} was {old!r}, now {new!r}"


def _write_references(
    out_dir: Path,
    spec: StudySpec,
    context: StudyContext,
    tokenizer: Tokenizer,
    documents: dict[str, list[str]],
    texts: dict[str, TokenData],
) -> None:
    """references.json: Kneser-Ney n-gram bits per byte of every evaluation text (once per tokenizer, data
    and training sample)."""
    path = out_dir / REFERENCES_FILE
    existing = read_json(path, "n-gram references")
    key = {
        "tokenizer": context.tokenizer_fingerprint,
        "data": context.data_digests,
        "train_sample": spec.data.train_sample,
    }
    if isinstance(existing, dict) and all(existing.get(name) == value for name, value in key.items()):
        return
    train = cached_tokens(
        documents["train"], tokenizer, "study-train", f"study train text: {context.data_digests['train']}"
    )
    log.info("fitting n-gram references (orders %s)", ", ".join(map(str, REFERENCE_ORDERS)))
    references = ngram_references(train, texts, tokenizer.vocab_size, REFERENCE_ORDERS, pad_id=tokenizer.pad_id)
    write_json_atomic(path, {**key, "bits_per_byte": references})


def study_documents(spec: StudySpec) -> dict[str, list[str]]:
    """The training, validation and test documents exactly as training and evaluation read them."""
    val_fraction, split_seed = _split_settings(spec)
    splits = load_splits(spec.data.train, spec.data.valid, val_fraction=val_fraction, seed=split_seed)
    return {"train": splits["train"], "valid": splits["val"], "test": load_documents(spec.data.test)}


def _tokenizer(spec: StudySpec, out_dir: Path, train_documents: list[str]) -> Tokenizer:
    """The spec's tokenizer, the folder's, or one trained now on the training documents; its size must be
    the vocabulary size the spec asks for."""
    model, _ = first_configs(spec)
    path = out_dir / TOKENIZER_FILE
    if spec.data.tokenizer is not None:
        tokenizer, source = Tokenizer.load(spec.data.tokenizer), f"data.tokenizer ({spec.data.tokenizer})"
    elif path.is_file():
        tokenizer, source = Tokenizer.load(path), f"the study's tokenizer ({path})"
    else:
        log.info("training the study's tokenizer (%d tokens)", model.vocab_size)
        return train_tokenizer(train_documents, model.vocab_size)
    if tokenizer.vocab_size != model.vocab_size:
        raise FhaError(
            f"vocab_size is {model.vocab_size} (from the spec's base and [set]) but {source} has "
            f"{tokenizer.vocab_size} tokens; set vocab_size = {tokenizer.vocab_size}, or use another `out` for "
            "another tokenizer"
        )
    return tokenizer


def evaluation_texts(
    spec: StudySpec, tokenizer: Tokenizer, documents: dict[str, list[str]], digests: dict[str, str]
) -> dict[str, TokenData]:
    """The validation and test texts and the training sample as token arrays (cached like training data)."""
    texts = {"valid": (documents["valid"], digests["valid"]), "test": (documents["test"], digests["test"])}
    if spec.data.train_sample:
        sample = train_sample(documents["train"], spec.data.train_sample)
        texts["train_sample"] = (sample, f"{digests['train']} sample of {spec.data.train_sample} documents")
    return {
        split: cached_tokens(docs, tokenizer, f"study-{split}", f"study {split} text: {source}")
        for split, (docs, source) in texts.items()
    }
