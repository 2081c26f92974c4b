"""Norms, the MLP and the transformer block; variants are picked by name from registries."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fha.config import MLP_NONLINEARITIES, NORM_TYPES
from fha.model.attention import Attention
from fha.model.dtypes import at_least_float32

if TYPE_CHECKING:
    from fha.config import ModelConfig
    from fha.model.kv_cache import LayerCache


class Norm(nn.Module):
    """Shared parameters: an optional learnable gain and bias over the last dimension."""

    def __init__(self, dim: int, eps: float, affine: bool, bias: bool) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def _affine(self, x: Tensor) -> Tensor:
        if self.weight is not None:
            x = x * self.weight
        if self.bias is not None:
            x = x + self.bias
        return x


class RMSNorm(Norm):
    """x / sqrt(mean(x**2) + eps), then the gain and bias.

    Computed as x * rsqrt(|x|**2 / dim + eps) with one vector norm, one addcmul and one rsqrt:
    `F.rms_norm` runs as about eight separate operators on a CPU, and a decoding step calls
    the norm 2 * num_layers + 1 times. Like `F.rms_norm` it normalises in at least float32
    and returns the input's dtype.
    """

    eps_tensor: Tensor  # the buffer of constant_buffers(), declared for type checkers

    def __init__(self, dim: int, eps: float, affine: bool, bias: bool) -> None:
        super().__init__(dim, eps, affine, bias)
        for name, value in self.constant_buffers().items():
            self.register_buffer(name, value, persistent=False)

    def constant_buffers(self) -> dict[str, Tensor]:
        return {"eps_tensor": torch.tensor(self.eps)}

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=at_least_float32(x.dtype))  # (..., 1)
        mean_square = torch.addcmul(self.eps_tensor, norm, norm, value=1 / x.shape[-1])  # (..., 1)
        normed = x * mean_square.rsqrt()
        return self._affine(normed if normed.dtype == x.dtype else normed.to(x.dtype))


class LayerNorm(Norm):
    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, eps=self.eps)


class CosineNorm(Norm):
    """Scales each vector to unit L2 length (then the optional gain and bias)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._affine(F.normalize(x, dim=-1, eps=self.eps))


# The registries under the config's names (`fha.config`), in their order.
NORMS: dict[str, type[Norm]] = dict(zip(NORM_TYPES, (RMSNorm, LayerNorm, CosineNorm), strict=True))
NONLINEARITIES: dict[str, Callable[[Tensor], Tensor]] = dict(
    zip(MLP_NONLINEARITIES, (F.gelu, F.silu, F.relu), strict=True)
)


def make_dropout(p: float) -> nn.Dropout | None:
    """A dropout module, or None for p == 0 (nothing to register, nothing to call)."""
    return nn.Dropout(p) if p > 0 else None


def apply_dropout(dropout: nn.Dropout | None, x: Tensor) -> Tensor:
    """x through `dropout` while it is active (training), else x itself without a module call:
    a decoding step would otherwise make 2 * num_layers + 1 calls that do nothing."""
    return dropout(x) if dropout is not None and dropout.training else x


def make_norm(config: ModelConfig) -> Norm:
    return NORMS[config.norm_type](config.dim, config.eps, config.norm_affine, config.norm_bias)


class MLP(nn.Module):
    """Feed-forward layer; the gated form computes act(x W_gate) * (x W_up) with one fused matmul."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = config.mlp_hidden_dim
        self.gated = config.mlp_gated
        self.act = NONLINEARITIES[config.mlp_nonlinearity]
        self.up = nn.Linear(config.dim, 2 * hidden if self.gated else hidden, bias=config.mlp_bias)
        self.down = nn.Linear(hidden, config.dim, bias=config.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.up(x)  # (B, T, 2*hidden) or (B, T, hidden)
        if self.gated:
            gate, h = h.chunk(2, dim=-1)  # (B, T, hidden) each
            h = self.act(gate) * h
        else:
            h = self.act(h)
        return self.down(h)  # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block; `second_resid_norm` also normalises each branch's output."""

    def __init__(self, config: ModelConfig, layer: int = 0) -> None:
        super().__init__()
        self.attn_norm = make_norm(config)
        self.attn = Attention(config, layer)
        self.mlp_norm = make_norm(config)
        self.mlp = MLP(config)
        self.attn_out_norm = make_norm(config) if config.second_resid_norm else None
        self.mlp_out_norm = make_norm(config) if config.second_resid_norm else None
        self.dropout = make_dropout(config.dropout)

    def forward(
        self, x: Tensor, rotation: Tensor, cache: LayerCache | None = None, attn_mask: Tensor | None = None
    ) -> Tensor:
        x = x + self._branch_output(self.attn(self.attn_norm(x), rotation, cache, attn_mask), self.attn_out_norm)
        return x + self._branch_output(self.mlp(self.mlp_norm(x)), self.mlp_out_norm)

    def _branch_output(self, y: Tensor, out_norm: Norm | None) -> Tensor:
        """What a branch adds to the residual stream: its output, normalised if configured, then dropout."""
        return apply_dropout(self.dropout, y if out_norm is None else out_norm(y))
