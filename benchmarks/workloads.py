"""The training step that the benchmarks time: forward, backward and an AdamW update of a GPT."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fha import GPT, ModelConfig


def training_step(
    config: ModelConfig,
    batch_size: int,
    *,
    device: torch.device | str = "cpu",
    compiled: bool = False,
    return_logits: bool = False,
    bf16_autocast: bool = False,
) -> tuple[GPT, Callable[[], None]]:
    """A seeded model and a function that runs one training step on a fixed random batch of
    `batch_size` sequences of `max_seq_len` tokens. `return_logits=False` is the chunked output
    loss that training uses; `compiled` runs the forward through `torch.compile`."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = GPT(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    forward = torch.compile(model) if compiled else model
    idx = torch.randint(0, config.vocab_size, (batch_size, config.max_seq_len + 1), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_autocast)

    def step() -> None:
        with autocast:
            _, loss = forward(idx[:, :-1], idx[:, 1:], return_logits=return_logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step
