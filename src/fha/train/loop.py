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
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from fha.config import ModelConfig
from fha.data import PackedBatches, PaddedBatches, TokenData
from fha.device import autocast, autocast_dtype, check_precision, setup_device
from fha.errors import FhaError, one_line
from fha.model.gpt import GPT
from fha.model.loss import counted_targets
from fha.model.modes import eval_mode
from fha.progress import Progress, short_count
from fha.run import (
    LOG_FILE,
    MODEL_CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    TRAIN_CONFIG_FILE,
    LoadedRun,
    load_run,
    read_weights_into,
)
from fha.run_info import describe_data, write_run_info
from fha.tokenizer import Tokenizer
from fha.train import distributed as dist_util
from fha.train.checkpoint import Checkpoint, checkpoint_path, list_checkpoints, save_checkpoint
from fha.train.config import TrainConfig
from fha.train.corpus import DataSpec, read_documents, tokenize_splits, train_tokenizer
from fha.train.distributed import DistInfo
from fha.train.divergence import describe_last_good
from fha.train.logbook import LogBook
from fha.train.metrics import RunLogger
from fha.train.optim import make_optimizer, set_learning_rate
from fha.train.preflight import check_model_fits, check_resume_steps
from fha.train.resume_data import DataSources, resolve_data_sources
from fha.train.run_folder import RunFolder, check_out_dir
from fha.train.schedule import LRSchedule, describe_schedule_change
from fha.train.trackers import open_trackers

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1_000_003  # evaluation windows are drawn apart from the training stream
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SPEED_SMOOTHING = 0.9  # weight of the running average of tokens/s shown in the progress bar


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
    `fha.train.trackers.TRACKERS` that receive the metrics beside the CSV files.
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


@dataclass
class TrainResult:
    """The run folder a training wrote, its last step, and the evaluations of this call."""

    run_dir: Path
    step: int
    val_loss: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def load(self, device: str | torch.device = "cpu") -> LoadedRun:
        """(model, tokenizer, configs) of the run, as `fha.load_run` reads them."""
        return load_run(self.run_dir, device)


def train(request: TrainRequest) -> TrainResult:
    """Train, writing the run folder (on rank 0); raises FhaError for problems the user can fix.

    Everything that can be checked before training (data, configs, the model's size against
    the memory) is checked before the run folder is touched; see `fha.train.run_folder` for
    what a failure or a crash afterwards can cost.
    """
    info = DistInfo.from_env()
    check_precision(request.precision)
    if request.precision == "fp16":
        raise FhaError("`precision` fp16 is not offered for training (it needs loss scaling); use bf16 or fp32")
    resume = request.resume
    if resume is not None:
        resume.check_resumable()
        check_resume_steps(resume, request.train_config)
        finished = _finished_run(request)
        if finished is not None:
            return finished
    if not info.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    check_out_dir(request.out_dir)
    spec = DataSpec(request.data, request.val_data, request.train_config.val_fraction,
                    request.train_config.split_seed)
    documents = read_documents(spec)  # before anything else: bad data fails fast and touches nothing
    sources = resolve_data_sources(request, documents)
    device = dist_util.local_device(info, setup_device(request.device, request.precision))
    autocast_dtype(device, request.precision)  # the card chosen for this process supports it
    check_model_fits(request.model_config, request.train_config, device)
    folder: RunFolder | None = None
    if info.is_main:
        same_dir = (resume is not None and resume.run_dir is not None
                    and resume.run_dir.resolve() == request.out_dir.resolve())
        folder = RunFolder(request.out_dir, overwrite=request.overwrite, resume_step=resume.step if same_dir else None)
    with folder if folder is not None else contextlib.nullcontext():
        dist_util.init_process_group(info, device)
        try:
            return _Trainer(request, info, device, folder, sources).run(spec, documents)
        finally:
            dist_util.destroy_process_group()


def _finished_run(request: TrainRequest) -> TrainResult | None:
    """A resume of a run that has done its `max_iters` and has its final weights does nothing and
    says so (one stopped while publishing them goes on to publish them); a resume that changes
    the budget says how the learning-rate schedule changes."""
    resume, config = request.resume, request.train_config
    if resume.step >= config.max_iters and (request.out_dir / MODEL_FILE).is_file():
        log.info("%s: the run is complete (step %d of max_iters=%d); nothing to do. To train further, raise the "
                 "budget with the setting max_iters=N (the learning-rate schedule changes with it)",
                 resume.path, resume.step, config.max_iters)
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


class _Trainer:
    def __init__(self, request: TrainRequest, info: DistInfo, device: torch.device, folder: RunFolder | None,
                 sources: DataSources) -> None:
        self.request = request
        self.folder = folder  # rank 0's hold on the run folder; None on the other ranks
        self.sources = sources
        self.info = info
        self.device = device
        self.config = request.train_config
        self.run_dir = request.out_dir
        self.schedule = LRSchedule.from_config(self.config)
        self.step = 0
        self.elapsed = 0.0  # seconds of training so far, across resumes
        self.last_real_fraction = 1.0  # share of the last global batch's targets that count in the loss
        self.last_real_tokens = 0  # targets of the last global batch that count in the loss (not padding)
        self.checkpointed_step: int | None = None  # step of the last checkpoint this process took part in
        self.last_grad_norm = math.nan  # of the last update, before clipping
        self.stop = _StopRequest()

    # ------------------------------------------------------------------ setup
    def _setup(self, spec: DataSpec, documents: dict[str, list[str]]) -> None:
        request, info = self.request, self.info
        resume = request.resume
        dist_util.barrier()  # rank 0 has prepared the run folder
        self.tokenizer = self._tokenizer(documents["train"])
        self.model_config = self._model_config()
        if info.is_main:
            self.tokenizer.save(self.run_dir / TOKENIZER_FILE)
            self.model_config.to_json(self.run_dir / MODEL_CONFIG_FILE)
            self.config.to_json(self.run_dir / TRAIN_CONFIG_FILE)
            data = describe_data(request.data, request.val_data, val_fraction=spec.val_fraction,
                                 split_seed=spec.split_seed)
            write_run_info(self.run_dir, device=self.device, world_size=info.world_size,
                           tokenizer_fingerprint=self.tokenizer.fingerprint, data=data, resumed=resume is not None,
                           precision=request.precision)
            self.tokens = tokenize_splits(documents, self.tokenizer, spec)
        dist_util.barrier()  # rank 0 has filled the token cache; the others reuse it
        if not info.is_main:
            self.tokens = tokenize_splits(documents, self.tokenizer, spec)

        torch.manual_seed(self.config.seed)
        try:
            self.model = GPT(self.model_config).to(self.device)
        except (RuntimeError, MemoryError) as err:  # what allocators raise when memory runs out
            raise FhaError(f"cannot allocate the model ({one_line(err)}); make it smaller") from None
        self.optimizer = make_optimizer(self.model, self.config, self.device)
        self.sampler = self._sampler(self.tokens["train"], self.config.seed)
        log.info(
            "model: %s attention, %s parameters (%s without embeddings); %s steps of %d sequences x %d tokens",
            self.model_config.attention, f"{self.model.num_parameters():,}",
            f"{self.model.num_parameters(non_embedding=True):,}", f"{self.config.max_iters:,}", self.global_batch,
            self.model_config.max_seq_len,
        )
        self.logbook = LogBook(self.run_dir / LOG_FILE)
        self.metrics = RunLogger(self.run_dir, self.config.log_interval,
                                 self.global_batch * self.model_config.max_seq_len, enabled=info.is_main)
        if resume is not None:
            self._restore(resume)
        elif info.rank:
            torch.manual_seed(self.config.seed + info.rank)  # different dropout masks per process
        if info.is_main:
            previous_run = resume.run_dir if resume is not None else None
            previous_log = previous_run / LOG_FILE if previous_run is not None else None
            self.logbook.start(previous_log, self.step)
            self.metrics.start(previous_run, self.step)
            tracker_config = {**self.model_config.to_dict(), **self.config.to_dict(), "data": request.data}
            self.metrics.trackers = open_trackers(request.trackers, self.run_dir, tracker_config, self.step)
        self.train_model: torch.nn.Module = self.model
        if self.config.compile:
            self.model.compile()
        if info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            with dist_util.peers_alive():
                self.train_model = DistributedDataParallel(self.model, device_ids=ids)

    def _tokenizer(self, train_documents: list[str]) -> Tokenizer:
        if self.request.resume is not None:
            return self.request.resume.tokenizer
        if self.request.tokenizer is not None:
            return self.request.tokenizer
        if self.info.is_main:
            tokenizer = train_tokenizer(train_documents, self.request.model_config.vocab_size)
            tokenizer.save(self.run_dir / TOKENIZER_FILE)
        dist_util.barrier()
        if not self.info.is_main:
            tokenizer = Tokenizer.load(self.run_dir / TOKENIZER_FILE)
        return tokenizer

    def _model_config(self) -> ModelConfig:
        """The requested config with the tokenizer's vocabulary size and padding id."""
        config = self.request.model_config
        vocab = self.tokenizer.vocab_size
        if vocab != config.vocab_size:
            log.warning("vocab_size: %d -> %d (the tokenizer's size)", config.vocab_size, vocab)
        try:
            return config.replace(vocab_size=vocab, pad_id=self.tokenizer.pad_id)
        except ValueError as err:
            raise FhaError(f"invalid configuration: {err}") from None

    def _sampler(self, data: TokenData, seed: int) -> PackedBatches | PaddedBatches:
        seq_len, rank, world_size = self.model_config.max_seq_len, self.info.rank, self.info.world_size
        if self.config.batching == "padded":
            return PaddedBatches(data.tokens, data.doc_offsets, self.config.batch_size, seq_len,
                                 pad_id=self.tokenizer.pad_id, seed=seed, rank=rank, world_size=world_size)
        return PackedBatches(data.tokens, self.config.batch_size, seq_len, seed=seed, rank=rank, world_size=world_size)

    @property
    def global_batch(self) -> int:
        return self.config.batch_size * self.config.grad_accum_steps * self.info.world_size

    def _restore(self, checkpoint: Checkpoint) -> None:
        state = checkpoint.state
        checkpoint.load_weights_into(self.model)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.sampler.load_state_dict(state["sampler"])
            self.step = int(state["step"])
            self.elapsed = float(state["elapsed"])
            self.metrics.load_state_dict(state.get("metrics_window", {}))  # absent in older checkpoints
            _set_rng_states(state["rng"], self.info.rank)
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as err:
            raise FhaError(f"{checkpoint.path}: cannot resume from this checkpoint ({err})") from None
        log.info("resuming from %s at step %d", checkpoint.path, self.step)

    # ------------------------------------------------------------------ loop
    def run(self, spec: DataSpec, documents: dict[str, list[str]]) -> TrainResult:
        self._setup(spec, documents)
        try:
            return self._run()
        finally:
            self.metrics.close()

    def _run(self) -> TrainResult:
        result = TrainResult(self.run_dir, self.step)
        start_step = self.step
        if start_step == 0:
            result.history.append(self._evaluate_and_log(tokens_per_s=0.0))
        interval_tokens, interval_time = 0, 0.0
        speed: float | None = None  # smoothed tokens/s for the progress bar
        with (
            self.stop.installed(),
            Progress(self.config.max_iters, "step", unit="step", initial=start_step, enabled=self.info.is_main) as bar,
        ):
            while self.step < self.config.max_iters:
                started = time.perf_counter()
                lr, loss, stop_requested = self._optimizer_step()
                seconds = time.perf_counter() - started
                self.elapsed += seconds
                tokens = self.last_real_tokens
                interval_tokens += tokens
                interval_time += seconds
                done = self.step == self.config.max_iters
                self.metrics.record_step(self.step, lr, loss, self.last_grad_norm, seconds, self.elapsed, final=done)
                speed = tokens / seconds if speed is None else _smooth(speed, tokens / seconds)
                fields = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "tok/s": short_count(speed)}
                if self.config.batching == "padded":
                    fields["real"] = f"{self.last_real_fraction:.0%}"  # share of positions that are not padding
                bar.set_fields(**fields)
                bar.update(1)
                if self.step % self.config.eval_interval == 0 or done:
                    result.history.append(self._evaluate_and_log(interval_tokens / max(interval_time, 1e-9)))
                    interval_tokens, interval_time = 0, 0.0
                if self.step % self.config.checkpoint_interval == 0 or done or stop_requested:
                    self._checkpoint()
                if stop_requested and not done:  # a stop during the last step still finishes the run
                    log.warning("stopped at step %d; resume with: fha train --resume %s", self.step, self.run_dir)
                    raise KeyboardInterrupt
            self._finish()  # still under the stop handler: a Ctrl-C now cannot cut the final save short
        result.step = self.step
        result.val_loss = result.history[-1]["Validation Loss"] if result.history else None
        return result

    def _optimizer_step(self) -> tuple[float, float, bool]:
        """One update; returns (its learning rate, mean loss per target, whether to stop).

        Each micro-batch's mean loss is weighted by its share of the global batch's real
        targets, so the update is that of one batch of ``global_batch`` rows even when
        padding makes the micro-batches' target counts differ (packed: a weight of 1/accum).
        """
        lr = self.schedule(self.step)
        set_learning_rate(self.optimizer, lr)
        accum = self.config.grad_accum_steps
        batches = [self.sampler.next_batch() for _ in range(accum)]
        counts = [int(counted_targets(y, self.tokenizer.pad_id).sum()) for _, y in batches]
        global_count = int(dist_util.all_reduce_sum(torch.tensor(sum(counts), device=self.device)))
        self.last_real_tokens = global_count
        self.last_real_fraction = global_count / (self.global_batch * self.model_config.max_seq_len)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.model.train()
        for micro, ((x, y), count) in enumerate(zip(batches, counts, strict=True)):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = micro == accum - 1
            sync = contextlib.nullcontext() if last or not self.info.enabled else self.train_model.no_sync()
            with sync:
                with autocast(self.device, self.request.precision):
                    _, loss = self.train_model(x, y, return_logits=False)
                # DDP averages gradients over processes, hence the world_size.
                (loss * (count * self.info.world_size / global_count)).backward()
            loss_sum += loss.detach().double() * count
        # Mean loss per target over micro-batches and processes, and whether any process was asked to stop.
        totals = torch.stack([loss_sum, torch.tensor(float(self.stop.requested), dtype=torch.float64,
                                                     device=self.device)])
        dist_util.all_reduce_sum(totals)
        mean_loss = float(totals[0]) / global_count
        stop_requested = bool(totals[1] > 0)
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        self.last_grad_norm = grad_norm  # before clipping
        step_number = self.step + 1
        if not math.isfinite(mean_loss) or not math.isfinite(grad_norm):
            what = f"loss became {mean_loss}" if not math.isfinite(mean_loss) else f"gradient norm became {grad_norm}"
            raise TrainingDiverged(f"{what} at step {step_number}; {self._last_good_checkpoint()}")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = step_number
        return lr, mean_loss, stop_requested

    def _last_good_checkpoint(self) -> str:
        return describe_last_good(list_checkpoints(self.run_dir), self._checkpoint_validation_loss,
                                  self.model_config.vocab_size)

    def _checkpoint_validation_loss(self, path: Path) -> float | None:
        """The validation loss of a checkpoint's weights (the run is over: its model is free), None if not finite."""
        try:
            read_weights_into(self.model, path / MODEL_FILE, label="checkpoint weights")
        except FhaError:
            return None
        return self._evaluate(self.tokens["val"])

    @torch.no_grad()
    def _evaluate(self, data: TokenData) -> float:
        """Mean loss per target over `eval_samples` global batches (the same windows every time)."""
        sampler = self._sampler(data, self.config.seed + EVAL_SEED_OFFSET)
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # (sum of losses, number of targets)
        with eval_mode(self.model):
            for _ in range(self.config.eval_samples):
                x, y = (t.to(self.device, non_blocking=True) for t in sampler.next_batch())
                with autocast(self.device, self.request.precision):
                    _, loss = self.model(x, y, return_logits=False)
                count = counted_targets(y, self.tokenizer.pad_id).sum()
                if count:
                    totals += torch.stack([loss.double() * count, count.double()])
        dist_util.all_reduce_sum(totals)
        return float(totals[0] / totals[1]) if totals[1] > 0 else math.nan

    def _evaluate_and_log(self, tokens_per_s: float) -> dict[str, float]:
        train_loss = self._evaluate(self.tokens["train"])
        val_loss = self._evaluate(self.tokens["val"])
        lr = self.schedule(max(self.step - 1, 0))  # the rate of the update that led here
        perplexity = math.exp(min(val_loss, math.log(sys.float_info.max)))
        row = {"Step": self.step, "Learning Rate": lr, "Train Loss": train_loss, "Validation Loss": val_loss,
               "Perplexity": perplexity, "Time Elapsed": self.elapsed, "Tokens/s": tokens_per_s}
        if self.info.is_main:
            self.logbook.append(self.step, lr, train_loss, val_loss, perplexity, self.elapsed, tokens_per_s)
            self.metrics.record_eval(row)
            log.info("step %d: train loss %.4f, val loss %.4f, perplexity %.2f, lr %.3g, %s tokens/s",
                     self.step, train_loss, val_loss, perplexity, lr, f"{tokens_per_s:,.0f}")
        return row

    def _checkpoint(self) -> None:
        if self.info.is_main:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "sampler": self.sampler.state_dict(),
                "rng": _rng_states(),
                "elapsed": self.elapsed,
                "metrics_window": self.metrics.state_dict(),
                "world_size": self.info.world_size,
                "data": self.sources.to_state(),
            }
            path = save_checkpoint(self.run_dir, self.step, model=self.model, train_config=self.config,
                                   tokenizer=self.tokenizer, state=state)
            self.folder.checkpoint_written()
            log.debug("checkpoint %s", path)
        self.checkpointed_step = self.step
        dist_util.barrier()

    def _finish(self) -> None:
        """Publish the final checkpoint's weights as the run's model.safetensors."""
        if self.checkpointed_step != self.step:
            self._checkpoint()  # a resume that had no step left to take still leaves its folder complete
        if self.info.is_main:
            self.folder.publish_final_weights(checkpoint_path(self.run_dir, self.step))
            log.info("finished %d steps; run folder: %s", self.step, self.run_dir)
        dist_util.barrier()


def _smooth(average: float, value: float) -> float:
    return SPEED_SMOOTHING * average + (1.0 - SPEED_SMOOTHING) * value


def _rng_states() -> dict[str, Any]:
    """Every random generator the run touches (rank 0's; other ranks re-derive theirs)."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
        "numpy_pos": int(numpy_state["state"]["pos"]),
    }


def _set_rng_states(states: dict[str, Any], rank: int) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(("MT19937", states["numpy_key"].numpy().astype(np.uint32), states["numpy_pos"], 0, 0.0))
    if rank:
        torch.manual_seed(int(torch.randint(2**31, (1,))) + rank)  # different dropout masks per process
