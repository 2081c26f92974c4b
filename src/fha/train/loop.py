"""The training loop: `train(request)` turns configs and data into a run folder.

One optimiser step (index ``s``, 0-based) takes ``grad_accum_steps`` micro-batches of
``batch_size`` sequences per process, averages their losses, clips the gradient norm and
applies AdamW at the rate ``schedule(s)``. After it, ``step = s + 1`` updates are done;
a row goes into log_data.csv when ``step`` is a multiple of `eval_interval` (and at 0 and
at the end), and a checkpoint is written when it is a multiple of `checkpoint_interval`
(and at the end, and on Ctrl-C). Everything the next step depends on is in the checkpoint,
so resuming from ``step-N`` on CPU reproduces the uninterrupted run's numbers exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from fha.config import ModelConfig
from fha.data import PackedBatches, PaddedBatches, TokenData
from fha.data.sources import TINYSTORIES
from fha.device import autocast, autocast_dtype, check_precision, setup_device
from fha.errors import FhaError, one_line
from fha.model.gpt import GPT
from fha.model.loss import counted_targets
from fha.model.modes import eval_mode
from fha.runs.checkpoint import Checkpoint, TrainingState, list_checkpoints, save_checkpoint
from fha.runs.folder import (
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    TRAIN_CONFIG_FILE,
    LoadedRun,
    load_run,
    read_weights_into,
)
from fha.runs.info import describe_data, write_run_info
from fha.runs.logbook import LogRow, RunLog
from fha.runs.writer import RunFolder, check_out_dir
from fha.tokenizer import PAD_ID, Tokenizer
from fha.train import distributed as dist_util
from fha.train.corpus import (
    DataSources,
    DataSpec,
    read_documents,
    resolve_data_sources,
    tokenize_splits,
    train_tokenizer,
)
from fha.train.distributed import DistInfo
from fha.train.divergence import describe_last_good
from fha.train.optim import make_optimizer, set_learning_rate
from fha.train.preflight import check_model_fits
from fha.train.schedule import LRSchedule, describe_schedule_change
from fha.train_config import TrainConfig
from fha.wording import counted

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1_000_003  # evaluation windows are drawn apart from the training stream
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingDiverged(FhaError):
    """The loss or the gradient norm stopped being a finite number."""


@dataclass
class TrainRequest:
    """Everything `train` needs; the CLI builds one from its arguments.

    `tokenizer`: use this one (its vocabulary size becomes the model's); None trains one of
    ``model_config.vocab_size`` tokens on the training documents. `resume`: continue from
    this checkpoint (its configs, tokenizer and data sources are used unless changed here).
    `precision`: the autocast dtype (`fha.device.PRECISIONS`; fp16 is not offered for
    training, which would need loss scaling). `trackers`: names from
    `fha.runs.trackers.TRACKERS` that receive the metrics beside the CSV files.
    `continue_hint`: what a stop tells the user to do to continue (a study says to rerun itself).
    """

    model_config: ModelConfig
    train_config: TrainConfig
    data: str
    out_dir: Path
    val_data: str | None = None
    tokenizer: Tokenizer | None = None
    device: str = "auto"
    overwrite: bool = False
    resume: Checkpoint | None = None
    precision: str = "auto"
    trackers: tuple[str, ...] = ()
    continue_hint: str | None = None  # how to continue after a stop; None: resume from the run folder


@dataclass
class TrainResult:
    """The run folder a training wrote, its last step, and the evaluations of this call."""

    run_dir: Path
    step: int
    val_loss: float | None = None  # the last evaluation's: a mean over the eval windows, not the whole text
    history: list[LogRow] = field(default_factory=list)

    def load(self, device: str | torch.device = "cpu") -> LoadedRun:
        """(model, tokenizer, configs) of the run, as `fha.load_run` reads them."""
        return load_run(self.run_dir, device)


def train(request: TrainRequest) -> TrainResult:
    """Train, writing the run folder (on rank 0); raises FhaError for problems the user can fix.

    Everything that can be checked before training (data, configs, the model's size against
    the memory) is checked before the run folder is touched; see `fha.runs.writer` for
    what a failure or a crash afterwards can cost.
    """
    info = DistInfo.from_env()
    check_precision(request.precision)
    if request.precision == "fp16":
        raise FhaError("`precision` fp16 is not offered for training (it needs loss scaling); use bf16 or fp32")
    resume = request.resume
    if resume is not None:
        finished = _check_resume(request, resume)
        if finished is not None:
            return finished
    if not info.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    check_out_dir(request.out_dir)
    spec = DataSpec(request.data, request.val_data, request.train_config.val_fraction, request.train_config.split_seed)
    documents = read_documents(spec)  # before anything else: bad data fails fast and touches nothing
    sources = resolve_data_sources(spec, documents, resume)
    device = dist_util.local_device(info, setup_device(request.device, request.precision))
    autocast_dtype(device, request.precision)  # the card chosen for this process supports it
    check_model_fits(request.model_config, request.train_config, device)
    folder: RunFolder | None = None
    if info.is_main:
        resume_step = None
        if resume is not None and resume.run_dir is not None and resume.run_dir.resolve() == request.out_dir.resolve():
            resume_step = resume.step  # resuming in the checkpoint's own folder
        folder = RunFolder(request.out_dir, overwrite=request.overwrite, resume_step=resume_step)
    with folder if folder is not None else contextlib.nullcontext():
        dist_util.init_process_group(info, device)
        try:
            setup = set_up(request, info, device, folder, sources, spec, documents)
            try:
                return _Loop(setup).run()
            finally:
                setup.run_log.close()
        finally:
            dist_util.destroy_process_group()


def _check_resume(request: TrainRequest, resume: Checkpoint) -> TrainResult | None:
    """Whether the request can continue its checkpoint: every check of a resume that needs no documents,
    in one place (the checkpoint's own entries are checked when it is read, `TrainingState.load`, and the
    documents against its fingerprints once read, `resolve_data_sources`).

    A run that has done its `max_steps` and has its final weights has nothing to do: its result is
    returned (one stopped while publishing them goes on to publish them). A resume that changes the
    budget says how the learning-rate schedule changes.
    """
    config = request.train_config
    saved = resume.state.data
    for name, source in (("data", request.data), ("val_data", request.val_data)):
        recorded = saved.get("source" if name == "data" else "val_source")
        if source is not None and source == recorded and source != TINYSTORIES and not Path(source).exists():
            raise FhaError(
                f"{resume.path}: the run's `{name}` {source} is not there any more; pass `{name}` with "
                "the same documents (they are checked against the fingerprint the checkpoint holds)"
            )
    if config.max_steps < resume.step:
        raise FhaError(
            f"{resume.path}: max_steps={config.max_steps} is below the checkpoint's step {resume.step}; a resume "
            f"continues up to max_steps, so pass `overrides` max_steps={resume.step} or more (or resume an earlier "
            "checkpoint)"
        )
    if resume.step >= config.max_steps and (request.out_dir / MODEL_FILE).is_file():
        log.info(
            "%s: the run is complete (step %d of max_steps=%d); nothing to do. To train further, raise the "
            "budget with the setting max_steps=N (the learning-rate schedule changes with it)",
            resume.path,
            resume.step,
            config.max_steps,
        )
        return TrainResult(request.out_dir, resume.step)
    change = describe_schedule_change(resume.train_config, config, resume.step)
    if change is not None:
        log.warning("%s", change)
    return None


class _StopRequest:
    """Turns the first Ctrl-C (or SIGTERM) into a flag checked between steps; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


@dataclass(frozen=True)
class TrainSetup:
    """The fixed parts of one training call, built once by `set_up` and read by every step.

    The objects it holds change as training goes (the weights, the optimizer's moments, the
    sampler's position); which objects they are does not.
    """

    request: TrainRequest
    info: DistInfo
    device: torch.device
    folder: RunFolder | None  # rank 0's hold on the run folder; None on the other ranks
    sources: DataSources
    schedule: LRSchedule
    tokenizer: Tokenizer
    model_config: ModelConfig  # the requested one with the tokenizer's vocabulary size and padding id
    tokens: dict[str, TokenData]  # "train" and "val"
    model: GPT
    train_model: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    sampler: PackedBatches | PaddedBatches
    run_log: RunLog
    start_step: int  # 0, or the step of the checkpoint resumed from
    start_elapsed: float  # seconds of training before this call (from the checkpoint)

    @property
    def config(self) -> TrainConfig:
        return self.request.train_config

    @property
    def run_dir(self) -> Path:
        return self.request.out_dir

    @property
    def global_batch(self) -> int:
        """Sequences per optimiser step, over micro-batches and processes."""
        return self.config.batch_size * self.config.grad_accum_steps * self.info.world_size

    def sampler_of(self, data: TokenData, seed: int) -> PackedBatches | PaddedBatches:
        return _sampler(data, seed, self.config, self.model_config, self.info)


@dataclass
class _Counters:
    """What changes from step to step (and is saved in a checkpoint or only reported)."""

    step: int
    elapsed: float  # seconds of training so far, across resumes
    last_real_fraction: float = 1.0  # share of the last global batch's targets that count in the loss
    last_real_tokens: int = 0  # targets of the last global batch that count in the loss (not padding)
    last_grad_norm: float = math.nan  # of the last update, before clipping
    checkpointed_step: int | None = None  # step of the last checkpoint this process took part in


# ---------------------------------------------------------------------- setup
def set_up(
    request: TrainRequest,
    info: DistInfo,
    device: torch.device,
    folder: RunFolder | None,
    sources: DataSources,
    spec: DataSpec,
    documents: dict[str, list[str]],
) -> TrainSetup:
    """Tokenizer, model config, token data, model, optimizer, sampler and logs, in that order, with
    the run folder's description written and a resumed checkpoint's state loaded."""
    config, run_dir, resume = request.train_config, request.out_dir, request.resume
    dist_util.barrier()  # rank 0 has prepared the run folder
    tokenizer = _tokenizer(request, info, documents["train"])
    model_config = _model_config(request.model_config, tokenizer)
    if info.is_main:
        _describe_run(request, info, device, spec, tokenizer, model_config)
        tokens = tokenize_splits(documents, tokenizer, spec)
    dist_util.barrier()  # rank 0 has filled the token cache; the others reuse it
    if not info.is_main:
        tokens = tokenize_splits(documents, tokenizer, spec)

    torch.manual_seed(config.seed)
    try:
        model = GPT(model_config).to(device)
    except (RuntimeError, MemoryError) as err:  # what allocators raise when memory runs out
        raise FhaError(f"cannot allocate the model ({one_line(err)}); make it smaller") from None
    optimizer = make_optimizer(model, config, device)
    sampler = _sampler(tokens["train"], config.batch_seed, config, model_config, info)
    global_batch = config.batch_size * config.grad_accum_steps * info.world_size
    log.info(
        "model: %s attention, %s parameters (%s without embeddings); %s of %s x %s",
        model_config.attention,
        f"{model.num_parameters():,}",
        f"{model.num_parameters(non_embedding=True):,}",
        counted(config.max_steps, "step", thousands=True),
        counted(global_batch, "sequence"),
        counted(model_config.max_seq_len, "token"),
    )
    run_log = RunLog(
        run_dir,
        log_interval=config.log_interval,
        tokens_per_step=global_batch * model_config.max_seq_len,
        eval_windows=config.eval_samples * config.batch_size * info.world_size,
        show_padding=config.batching == "padded",
        trackers=request.trackers,
        enabled=info.is_main,
    )
    step, elapsed = 0, 0.0
    if resume is not None:
        step, elapsed = _restore(resume, model, optimizer, sampler, run_log, info.rank)
    elif info.rank:
        torch.manual_seed(config.seed + info.rank)  # different dropout masks per process
    run_log.start(
        step,
        resume.run_dir if resume is not None else None,
        lambda: {**model_config.to_dict(), **config.to_dict(), "data": request.data},
    )
    train_model: torch.nn.Module = model
    if config.compile:
        model.compile()
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        with dist_util.peers_alive():
            train_model = DistributedDataParallel(model, device_ids=ids)
    return TrainSetup(
        request=request,
        info=info,
        device=device,
        folder=folder,
        sources=sources,
        schedule=LRSchedule.from_config(config),
        tokenizer=tokenizer,
        model_config=model_config,
        tokens=tokens,
        model=model,
        train_model=train_model,
        optimizer=optimizer,
        sampler=sampler,
        run_log=run_log,
        start_step=step,
        start_elapsed=elapsed,
    )


def _tokenizer(request: TrainRequest, info: DistInfo, train_documents: list[str]) -> Tokenizer:
    """The resumed run's tokenizer, the requested one, or one trained on the documents (by rank 0)."""
    if request.resume is not None:
        return request.resume.tokenizer
    if request.tokenizer is not None:
        return request.tokenizer
    path = request.out_dir / TOKENIZER_FILE
    if info.is_main:
        tokenizer = train_tokenizer(train_documents, request.model_config.vocab_size)
        tokenizer.save(path)
    dist_util.barrier()
    return tokenizer if info.is_main else Tokenizer.load(path)


def _model_config(config: ModelConfig, tokenizer: Tokenizer) -> ModelConfig:
    """The requested config with the tokenizer's vocabulary size and padding id."""
    vocab, pad_id = tokenizer.vocab_size, tokenizer.pad_id
    if (vocab, pad_id) == (config.vocab_size, config.pad_id):
        return config  # a resume's, or a tokenizer of the requested size: nothing to change or check again
    if vocab != config.vocab_size:
        log.warning("vocab_size: %d -> %d (the tokenizer's size)", config.vocab_size, vocab)
    try:
        return config.replace(vocab_size=vocab, pad_id=pad_id)
    except ValueError as err:
        raise FhaError(f"invalid configuration: {err}") from None


def _describe_run(
    request: TrainRequest,
    info: DistInfo,
    device: torch.device,
    spec: DataSpec,
    tokenizer: Tokenizer,
    model_config: ModelConfig,
) -> None:
    """Write the tokenizer, both configs and run_info.json into the run folder (rank 0)."""
    run_dir = request.out_dir
    tokenizer.save(run_dir / TOKENIZER_FILE)
    model_config.to_json(run_dir / MODEL_CONFIG_FILE)
    request.train_config.to_json(run_dir / TRAIN_CONFIG_FILE)
    data = describe_data(request.data, request.val_data, val_fraction=spec.val_fraction, split_seed=spec.split_seed)
    write_run_info(
        run_dir,
        device=device,
        world_size=info.world_size,
        tokenizer_fingerprint=tokenizer.fingerprint,
        data=data,
        resumed=request.resume is not None,
        precision=request.precision,
    )


def _sampler(
    data: TokenData, seed: int, config: TrainConfig, model_config: ModelConfig, info: DistInfo
) -> PackedBatches | PaddedBatches:
    seq_len, rank, world_size = model_config.max_seq_len, info.rank, info.world_size
    if config.batching == "padded":
        return PaddedBatches(
            data.tokens,
            data.doc_offsets,
            config.batch_size,
            seq_len,
            pad_id=PAD_ID if model_config.pad_id is None else model_config.pad_id,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
    return PackedBatches(data.tokens, config.batch_size, seq_len, seed=seed, rank=rank, world_size=world_size)


def _restore(
    checkpoint: Checkpoint,
    model: GPT,
    optimizer: torch.optim.Optimizer,
    sampler: PackedBatches | PaddedBatches,
    run_log: RunLog,
    rank: int,
) -> tuple[int, float]:
    """Load the checkpoint's weights and states into the objects; returns its (step, elapsed seconds)."""
    state = checkpoint.state
    checkpoint.load_weights_into(model)
    state.restore(optimizer, sampler, run_log, rank, checkpoint.path)
    log.info("resuming from %s at step %d", checkpoint.path, state.step)
    return state.step, state.elapsed


# ---------------------------------------------------------------------- loop
class _Loop:
    """The optimiser steps, evaluations and checkpoints over one `TrainSetup`."""

    def __init__(self, setup: TrainSetup) -> None:
        self.setup = setup
        self.progress = _Counters(setup.start_step, setup.start_elapsed)
        self.stop = _StopRequest()

    def run(self) -> TrainResult:
        setup, progress, config = self.setup, self.progress, self.setup.config
        result = TrainResult(setup.run_dir, progress.step)
        if progress.step == 0:
            result.history.append(self._evaluate_and_log())
        with self.stop.installed():
            with setup.run_log.progress_bar(config.max_steps):
                self._steps(result)
            self._finish()  # still under the stop handler: a Ctrl-C now cannot cut the final save short
        result.step = progress.step
        result.val_loss = result.history[-1].val_loss if result.history else None
        return result

    def _steps(self, result: TrainResult) -> None:
        """Optimiser steps up to `max_steps`, with their evaluations and checkpoints."""
        setup, progress, config = self.setup, self.progress, self.setup.config
        while progress.step < config.max_steps:
            started = time.perf_counter()
            lr, loss, stop_requested = self._optimizer_step()
            seconds = time.perf_counter() - started
            progress.elapsed += seconds
            done = progress.step == config.max_steps
            setup.run_log.step(
                progress.step,
                learning_rate=lr,
                loss=loss,
                grad_norm=progress.last_grad_norm,
                seconds=seconds,
                elapsed=progress.elapsed,
                real_tokens=progress.last_real_tokens,
                real_fraction=progress.last_real_fraction,
                final=done,
            )
            if progress.step % config.eval_interval == 0 or done:
                result.history.append(self._evaluate_and_log())
            if progress.step % config.checkpoint_interval == 0 or done or stop_requested:
                self._checkpoint()
            if stop_requested and not done:  # a stop during the last step still finishes the run
                hint = setup.request.continue_hint or f"continue with `resume` {setup.run_dir}"
                log.warning("stopped at step %d; %s", progress.step, hint)
                raise KeyboardInterrupt

    def _optimizer_step(self) -> tuple[float, float, bool]:
        """One update; returns (its learning rate, mean loss per target, whether to stop).

        Each micro-batch's mean loss is weighted by its share of the global batch's real
        targets, so the update is that of one batch of ``global_batch`` rows even when
        padding makes the micro-batches' target counts differ (packed: a weight of 1/accum).
        """
        setup, progress = self.setup, self.progress
        device, world_size = setup.device, setup.info.world_size
        lr = setup.schedule(progress.step)
        set_learning_rate(setup.optimizer, lr)
        accum = setup.config.grad_accum_steps
        batches = [setup.sampler.next_batch() for _ in range(accum)]
        counts = [int(counted_targets(y, setup.model_config.pad_id).sum()) for _, y in batches]
        global_count = int(dist_util.all_reduce_sum(torch.tensor(sum(counts), device=device)))
        progress.last_real_tokens = global_count
        progress.last_real_fraction = global_count / (setup.global_batch * setup.model_config.max_seq_len)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        setup.model.train()
        for micro, ((x, y), count) in enumerate(zip(batches, counts, strict=True)):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            last = micro == accum - 1
            ddp = setup.train_model if isinstance(setup.train_model, DistributedDataParallel) else None
            sync = contextlib.nullcontext() if last or ddp is None else ddp.no_sync()
            with sync:
                with autocast(device, setup.request.precision):
                    _, loss = setup.train_model(x, y, return_logits=False)
                # DDP averages gradients over processes, hence the world_size.
                (loss * (count * world_size / global_count)).backward()
            loss_sum += loss.detach().double() * count
        # Mean loss per target over micro-batches and processes, and whether any process was asked to stop.
        totals = torch.stack([loss_sum, torch.tensor(float(self.stop.requested), dtype=torch.float64, device=device)])
        dist_util.all_reduce_sum(totals)
        mean_loss = float(totals[0]) / global_count
        stop_requested = bool(totals[1] > 0)
        max_norm = setup.config.grad_clip if setup.config.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(setup.model.parameters(), max_norm))
        progress.last_grad_norm = grad_norm  # before clipping
        step_number = progress.step + 1
        if not math.isfinite(mean_loss) or not math.isfinite(grad_norm):
            what = f"loss became {mean_loss}" if not math.isfinite(mean_loss) else f"gradient norm became {grad_norm}"
            raise TrainingDiverged(f"{what} at step {step_number}; {self._last_good_checkpoint()}")
        setup.optimizer.step()
        setup.optimizer.zero_grad(set_to_none=True)
        progress.step = step_number
        return lr, mean_loss, stop_requested

    def _last_good_checkpoint(self) -> str:
        return describe_last_good(
            list_checkpoints(self.setup.run_dir), self._checkpoint_validation_loss, self.setup.model_config.vocab_size
        )

    def _checkpoint_validation_loss(self, path: Path) -> float | None:
        """The validation loss of a checkpoint's weights (the run is over: its model is free), None if not finite."""
        try:
            read_weights_into(self.setup.model, path / MODEL_FILE, label="checkpoint weights")
        except FhaError:
            return None
        (val_loss,) = _evaluate(self.setup, self.setup.tokens["val"])
        return val_loss

    def _evaluate_and_log(self) -> LogRow:
        setup, step = self.setup, self.progress.step
        train_loss, val_loss = _evaluate(setup, setup.tokens["train"], setup.tokens["val"])
        return setup.run_log.evaluation(
            step,
            learning_rate=setup.schedule(max(step - 1, 0)),  # the rate of the update that led here
            train_loss=train_loss,
            val_loss=val_loss,
            elapsed=self.progress.elapsed,
        )

    def _checkpoint(self) -> None:
        setup, progress = self.setup, self.progress
        if setup.info.is_main:
            state = TrainingState.capture(
                progress.step,
                optimizer=setup.optimizer,
                sampler=setup.sampler,
                elapsed=progress.elapsed,
                data=setup.sources.to_state(),
                metrics_window=setup.run_log.state_dict(),
                world_size=setup.info.world_size,
            )
            path = save_checkpoint(
                setup.run_dir,
                model=setup.model,
                train_config=setup.config,
                tokenizer=setup.tokenizer,
                state=state,
            )
            if setup.folder is not None:  # only rank 0 holds the run folder
                setup.folder.checkpoint_written()
            log.debug("checkpoint %s", path)
        progress.checkpointed_step = progress.step
        dist_util.barrier()

    def _finish(self) -> None:
        """Publish the final checkpoint's weights as the run's model.safetensors."""
        setup, step = self.setup, self.progress.step
        if self.progress.checkpointed_step != step:
            self._checkpoint()  # a resume that had no step left to take still leaves its folder complete
        if setup.info.is_main:
            if setup.folder is not None:  # only rank 0 holds the run folder
                setup.folder.publish_final_weights(step)
            log.info("finished %s; run folder: %s", counted(step, "step"), setup.run_dir)
            whole_text = setup.request.val_data or (TINYSTORIES if setup.request.data == TINYSTORIES else None)
            if whole_text is not None:
                log.info(
                    "the losses above are means over random windows; the loss over the whole validation text: "
                    "fha eval %s --data %s",
                    setup.run_dir,
                    whole_text,
                )
        dist_util.barrier()


@torch.no_grad()
def _evaluate(setup: TrainSetup, *splits: TokenData) -> list[float]:
    """The mean loss per target of each split over `eval_samples` global batches (the same windows every
    time), summed over the processes in one all-reduce."""
    model, device, pad_id = setup.model, setup.device, setup.model_config.pad_id
    totals = torch.zeros(len(splits), 2, dtype=torch.float64, device=device)  # per split: (sum of losses, targets)
    with eval_mode(model), autocast(device, setup.request.precision):
        for split, data in enumerate(splits):
            sampler = setup.sampler_of(data, setup.config.seed + EVAL_SEED_OFFSET)
            for _ in range(setup.config.eval_samples):
                x, y = (t.to(device, non_blocking=True) for t in sampler.next_batch())
                _, loss = model(x, y, return_logits=False)
                count = counted_targets(y, pad_id).sum()
                if count:
                    totals[split] += torch.stack([loss.double() * count, count.double()])
    dist_util.all_reduce_sum(totals)
    return [float(loss_sum / count) if count > 0 else math.nan for loss_sum, count in totals]
