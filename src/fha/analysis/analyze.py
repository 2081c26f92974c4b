"""`analyze_subheads`: what every sub-head of a model does, measured on a text.

Three passes over the model:

1. the text, window by window as `fha.evaluate` cuts it: the attention weights of every
   sub-head (recomputed from hooked inputs by `fha.inspection.level_weights`) give entropy,
   mean distance, previous-token and first-token weight; the sub-heads' outputs give their
   mean (for mean ablation);
2. the text again: for each layer, every sub-head zero-ablated and mean-ablated, all copies
   of a batch stacked and run from that layer up (`fha.analysis.ablation`);
3. repeated random token sequences: the induction score.

The copying score comes from the weights alone. Everything runs without gradients, in the
model's precision, on the device the model is on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from fha.analysis.ablation import (
    ablated_losses,
    ablation_plan,
    recorded_inputs,
    subheads,
    summed_losses,
)
from fha.analysis.metrics import (
    ATTENTION_METRICS,
    FIRST_ORDINARY_ID,
    AttentionSums,
    copying_score,
    induction_weight,
    repeated_sequences,
)
from fha.analysis.table import SubheadRow, SubheadTable
from fha.choices import ANALYSIS_ABLATION_TOKENS as DEFAULT_ABLATION_TOKENS
from fha.choices import ANALYSIS_BATCH_SIZE as DEFAULT_BATCH_SIZE
from fha.choices import ANALYSIS_INDUCTION_SEQUENCES as DEFAULT_INDUCTION_SEQUENCES
from fha.data import TokenData, eval_windows
from fha.errors import FhaValueError
from fha.evaluation import encode_documents
from fha.inspection.attention_weights import attention_modules, capture_attention, level_weights
from fha.model.loss import counted_targets
from fha.model.modes import eval_mode
from fha.progress import track
from fha.tokenizer import PAD_ID, Tokenizer

if TYPE_CHECKING:
    from fha.model.gpt import GPT

log = logging.getLogger(__name__)

DEFAULT_INDUCTION_LENGTH = 50  # random tokens before the repeat, as in TransformerLens's induction demos
MIN_INDUCTION_LENGTH = 2  # with one token, the induction target would be the query itself


def _text_tokens(data: TokenData | Sequence[str] | np.ndarray | Tensor, tokenizer: Tokenizer | None) -> np.ndarray:
    if isinstance(data, TokenData):
        return np.asarray(data.tokens, dtype=np.int64)
    if isinstance(data, (np.ndarray, Tensor)):
        return np.asarray(data.cpu() if isinstance(data, Tensor) else data, dtype=np.int64)
    if isinstance(data, str):
        raise TypeError("data must be a list of documents, not one string (wrap it in a list)")
    if tokenizer is None:
        raise FhaValueError("analysing documents needs their `tokenizer`")
    return encode_documents(data, tokenizer)[0]


def induction_length_for(model: GPT, length: int | None) -> int:
    """The random sequence length: `length`, checked, or the default that fits the context."""
    limit = (model.config.max_seq_len - 1) // 2
    if length is None:
        length = min(DEFAULT_INDUCTION_LENGTH, limit)
    if not MIN_INDUCTION_LENGTH <= length <= limit:
        raise FhaValueError(
            f"`induction_length` must be between {MIN_INDUCTION_LENGTH} and {limit} (a sequence and its repeat "
            f"after <bos> fill at most max_seq_len={model.config.max_seq_len}), got {length}"
        )
    return length


def _check_arguments(model: GPT, **values: int | None) -> None:
    """Each of `values` (batch_size, induction_sequences, max_tokens, ablation_tokens) is at least
    its minimum, or None where that means "all of the text"."""
    minimum = {"batch_size": 1, "induction_sequences": 1, "max_tokens": 2, "ablation_tokens": 1}
    for name, value in values.items():
        if value is not None and value < minimum[name]:
            raise FhaValueError(f"`{name}` must be at least {minimum[name]}, got {value}")
    if model.config.vocab_size <= FIRST_ORDINARY_ID:
        raise FhaValueError(f"a vocabulary of {model.config.vocab_size} tokens has no ordinary token to repeat")


def _model_device(model: GPT) -> torch.device:
    return next(model.parameters()).device


class _TextPass:
    """What passes 1 and 2 add up over the batches of the text."""

    def __init__(self, model: GPT) -> None:
        self.model = model
        self.layers = [subheads(model.config, layer) for layer in range(model.config.num_layers)]
        self.attention = [AttentionSums() for _ in self.layers]
        self.output_sums: list[Tensor | None] = [None] * len(self.layers)  # (D,) per layer
        self.positions = 0
        self.clean = torch.zeros((), dtype=torch.float64)
        self.ablated = [torch.zeros(2 * len(found), dtype=torch.float64) for found in self.layers]
        self.scored = 0

    def measure(self, x: Tensor, y: Tensor) -> None:
        """Pass 1 on one batch: attention weights and the sub-heads' summed outputs."""
        model = self.model
        queries = counted_targets(y, model.config.pad_id)  # (B, T): real tokens with a next token
        modules = dict(attention_modules(model))
        projections = [block.attn.out for block in model.block_list()]
        with capture_attention(model) as calls, recorded_inputs(projections) as outs:
            model(x)
        for layer, call in enumerate(calls):
            self.attention[layer].add(level_weights(modules[call.name], model.config, call), queries)
            total = (outs[layer][0] * queries[..., None]).sum(dim=(0, 1)).double()  # (D,)
            self.output_sums[layer] = total if self.output_sums[layer] is None else self.output_sums[layer] + total
        self.positions += int(queries.sum())

    def ablate(self, x: Tensor, y: Tensor) -> None:
        """Pass 2 on one batch: the clean loss and the loss of every ablated copy."""
        model = self.model
        blocks = model.block_list()
        outs = [block.attn.out for block in blocks]
        with recorded_inputs([*blocks, model.norm]) as inputs, recorded_inputs(outs) as outputs:
            model(x)
        self.clean += summed_losses(model, inputs[-1][0], y)[0].cpu()
        for layer, found in enumerate(self.layers):
            sub_outputs = outputs[layer][0]  # (B, T, D)
            output_sum = self.output_sums[layer]
            assert output_sum is not None, "pass 1 (measure) sums every layer's outputs before pass 2 (ablate)"
            keep, replacement = ablation_plan(found, (output_sum / self.positions).to(sub_outputs))
            losses = ablated_losses(model, layer, inputs[layer], sub_outputs, y, keep, replacement)
            self.ablated[layer] += losses.cpu()
        self.scored += int(counted_targets(y, model.config.pad_id).sum())


def _induction_scores(model: GPT, length: int, count: int, seed: int) -> list[Tensor]:
    """Per layer, (sub-heads,) mean induction weight over the repeats of `count` random sequences."""
    sequences = repeated_sequences(count, length, model.config.vocab_size, seed).to(_model_device(model))
    modules = dict(attention_modules(model))
    with capture_attention(model) as calls:
        model(sequences)
    scores = []
    for call in calls:
        weights = level_weights(modules[call.name], model.config, call)
        scores.append(torch.cat([induction_weight(w, length).mean(dim=(0, 2)) for w in weights]).cpu())
    return scores


def _gain(norm: nn.Module | None, width: int, like: Tensor) -> Tensor:
    """A norm's per-dimension gain (ones when it has none, or there is no norm)."""
    weight = getattr(norm, "weight", None)
    return torch.ones(width, dtype=like.dtype, device=like.device) if weight is None else weight


def _copying_scores(model: GPT, layer: int) -> list[float]:
    """The copying score of every sub-head of `layer`, in `subheads` order."""
    config = model.config
    block = model.block_list()[layer]
    embedding = model.embedding.weight.double()  # (V, C), also the unembedding (tied)
    width = config.dim
    out_gain = _gain(model.norm, width, embedding) * _gain(block.attn_out_norm, width, embedding)
    circuit = (
        _gain(block.attn_norm, width, embedding)[:, None] * (embedding.t() @ embedding) * out_gain[None, :]
    )  # (C, C)
    q_width, kv_width = config.num_q_heads * config.head_dim, config.num_kv_heads * config.head_dim
    values = block.attn.qkv.weight[q_width + kv_width :]  # (Hkv * hd, C)
    return [
        copying_score(values[sub.value_rows], block.attn.out.weight[:, sub.columns], circuit)
        for sub in subheads(config, layer)
    ]


@torch.inference_mode()
def analyze_subheads(
    model: GPT,
    data: TokenData | Sequence[str] | np.ndarray | Tensor,
    *,
    tokenizer: Tokenizer | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_tokens: int | None = None,
    ablation_tokens: int | None = DEFAULT_ABLATION_TOKENS,
    induction_length: int | None = None,
    induction_sequences: int = DEFAULT_INDUCTION_SEQUENCES,
    seed: int = 0,
    run: str = "",
    step: int | None = None,
    show_progress: bool = False,
) -> SubheadTable:
    """Measure every sub-head of `model` (a GPT) on a text; one `SubheadRow` per sub-head.

    data: a `TokenData`, token ids (an array of a tokenised text), or documents with their
    `tokenizer` (encoded as `fha.evaluate` encodes them). max_tokens: use only the first so
    many tokens. ablation_tokens: measure the ablations on the first so many predicted tokens
    (None: all of them; the ablations cost about a forward pass per sub-head, everything else
    one pass in all). induction_length, induction_sequences, seed: the random repeated
    sequences of the induction score (default length: 50, or what fits the context). run and
    step label the rows. docs/analysis.md defines every column.
    """
    _check_arguments(
        model,
        batch_size=batch_size,
        induction_sequences=induction_sequences,
        max_tokens=max_tokens,
        ablation_tokens=ablation_tokens,
    )
    length = induction_length_for(model, induction_length)
    tokens = _text_tokens(data, tokenizer)[:max_tokens]
    if len(tokens) < 2:
        raise FhaValueError(f"need at least 2 tokens to predict one, got {len(tokens)}")
    device = _model_device(model)
    seq_len, pad_id = model.config.max_seq_len, model.config.pad_id
    text = _TextPass(model)

    def batches(part: np.ndarray, desc: str) -> Iterator[tuple[Tensor, Tensor]]:
        num_windows = -(-(len(part) - 1) // seq_len)
        num_batches = -(-num_windows // batch_size)
        windows = eval_windows(part, seq_len, batch_size, pad_id=PAD_ID if pad_id is None else pad_id)
        for x, y in track(windows, num_batches, desc, unit="batch", enabled=show_progress):
            yield x.to(device), y.to(device)

    with eval_mode(model):
        for x, y in batches(tokens, "attention batch"):
            text.measure(x, y)
        ablation_text = tokens if ablation_tokens is None else tokens[: ablation_tokens + 1]
        for x, y in batches(ablation_text, "ablation batch"):
            text.ablate(x, y)
        induction = _induction_scores(model, length, induction_sequences, seed)
    clean = float(text.clean) / text.scored
    rows = []
    for layer, found in enumerate(text.layers):
        attention = text.attention[layer].means()  # (sub-heads, metrics)
        increase = text.ablated[layer] / text.scored - clean  # (2 * sub-heads,)
        copying = _copying_scores(model, layer)
        for index, sub in enumerate(found):
            measured = dict(zip(ATTENTION_METRICS, attention[index].tolist()))
            rows.append(
                SubheadRow(
                    run=run,
                    step=step,
                    layer=layer,
                    head=sub.head,
                    subhead=sub.subhead,
                    subhead_dim=sub.dim,
                    num_subheads=sub.num_subheads,
                    **measured,
                    induction=float(induction[layer][index]),
                    copying=copying[index],
                    zero_ablation=float(increase[index]),
                    mean_ablation=float(increase[len(found) + index]),
                    clean_loss=clean,
                    ablation_tokens=text.scored,
                )
            )
    log.debug("analysed %d sub-heads on %d tokens", len(rows), text.scored)
    return SubheadTable(tuple(rows))
