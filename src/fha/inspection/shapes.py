"""A tree of tensor shapes through one forward pass, recorded with forward hooks.

    with trace_shapes(model, include=["blocks.0*"]) as trace:
        model(idx)
    print(trace.render())

Hooks are attached on entry and removed on exit, so the model is unchanged afterwards and
its outputs are the same with tracing on (the hooks only read). The tree follows the calls:
a module appears under the traced module that was running when it was called (grouped under
its ModuleList, such as ``blocks``, when that is traced too). Under each
traced attention module the kernel and its levels are added as derived lines (the kernel is
a function, so there is nothing to hook); their shapes use the notation of
`fha.model.attention`: q (B, L, T, hd), k/v (B, Hkv, S, hd), one head's sub-heads (B, n, T, d).
A layer that cuts no head (ordinary multi-head attention) shows its heads as heads: one
query head (B, T, hd) and the key/value head it reads (B, S, hd).
Likewise the output layer, tied to the embedding and applied as a function, is a derived
line at the end of a traced GPT.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from fha.config import ModelConfig
from fha.errors import FhaValueError
from fha.inspection.attention_weights import attention_arguments
from fha.inspection.layout import level_layouts
from fha.model.attention import Attention
from fha.model.gpt import GPT
from fha.wording import counted

ROOT_LABEL = "<model>"  # shown for the root module, whose name is ""
BRANCH, LAST_BRANCH, PIPE, SPACE = "├─ ", "└─ ", "│  ", "   "
CONTAINERS = (nn.ModuleList, nn.ModuleDict)  # hold modules but are never called: shown as grouping lines
OUT_PROJECTION = "out"  # the attention child the kernel runs just before
OUTPUT_LAYER, TIED_OUTPUT_KIND = "output", "Linear (tied to embedding)"  # a function call, so a derived line


@dataclass
class ShapeNode:
    """One line of the tree: a module call, or a derived kernel / level / output-layer line."""

    name: str
    kind: str  # class name for modules; "kernel", "level" or TIED_OUTPUT_KIND for derived lines
    inputs: str = ""
    outputs: str = ""
    derived: bool = False
    children: list[ShapeNode] = field(default_factory=list)

    def label(self) -> str:
        shapes = f"{self.inputs} -> {self.outputs}" if self.outputs else self.inputs
        return f"{self.name or ROOT_LABEL}  {self.kind}  {shapes}".rstrip()


@dataclass
class ShapeTrace:
    """What `trace_shapes` recorded: top-level nodes in call order, each with its children."""

    roots: list[ShapeNode] = field(default_factory=list)
    _open: list[ShapeNode] = field(default_factory=list, repr=False)
    _containers: dict[str, str] = field(default_factory=dict, repr=False)  # name -> "ModuleList[4]"

    def walk(self) -> Iterator[ShapeNode]:
        """Every node, depth first in call order."""
        stack = list(reversed(self.roots))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def module_names(self) -> list[str]:
        """Names of the module calls recorded (derived lines left out), in call order."""
        return [node.name for node in self.walk() if not node.derived]

    def render(self) -> str:
        """The tree as text, one line per module call."""
        lines: list[str] = []
        for node in self.roots:
            lines.append(node.label())
            _render_children(node, "", lines)
        return "\n".join(lines)

    __str__ = render  # print(trace) shows the tree

    def _enter(self, name: str, module: nn.Module, args: tuple, kwargs: dict) -> None:
        node = ShapeNode(name, type(module).__name__, inputs=format_shapes([*args, *kwargs.values()]))
        self._siblings(name).append(node)
        self._open.append(node)

    def _siblings(self, name: str) -> list[ShapeNode]:
        """The list a new call of module `name` joins: its container's line if it sits in a traced
        ModuleList or ModuleDict (which are never called themselves), else the running module's."""
        siblings = self._open[-1].children if self._open else self.roots
        container_name = name.rpartition(".")[0]
        if container_name not in self._containers:
            return siblings
        container = next((node for node in siblings if node.name == container_name), None)
        if container is None:
            container = ShapeNode(container_name, self._containers[container_name])
            siblings.append(container)
        return container.children

    def _exit(
        self, name: str, config: ModelConfig | None, module: nn.Module, args: tuple, kwargs: dict, output: Any
    ) -> None:
        node = self._open.pop()
        node.outputs = format_shape(output)
        if isinstance(module, Attention) and config is not None:
            given = attention_arguments(module, args, kwargs)
            _add_kernel_lines(node, config, module.layer, given["x"], given["cache"] is not None)
        if isinstance(module, GPT) and isinstance(output[0], Tensor):
            logits = output[0]  # (B, T, V)
            node.children.append(
                ShapeNode(
                    OUTPUT_LAYER,
                    TIED_OUTPUT_KIND,
                    inputs=_dims(*logits.shape[:-1], module.config.dim),
                    outputs=format_shape(logits),
                    derived=True,
                )
            )


def _render_children(node: ShapeNode, prefix: str, lines: list[str]) -> None:
    for i, child in enumerate(node.children):
        last = i == len(node.children) - 1
        lines.append(prefix + (LAST_BRANCH if last else BRANCH) + child.label())
        _render_children(child, prefix + (SPACE if last else PIPE), lines)


def format_shape(value: Any) -> str:
    """ "(2, 16, 64)" for a tensor, a parenthesised list for tuples, "None", else the type's name."""
    if isinstance(value, Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(format_shape(item) for item in value) + ")"
    return repr(value) if value is None else type(value).__name__


def format_shapes(values: Sequence[Any]) -> str:
    """The shapes of the tensors among a call's arguments, comma separated."""
    return ", ".join(format_shape(v) for v in values if isinstance(v, Tensor))


def _dims(*sizes: int | str) -> str:
    return "(" + ", ".join(str(size) for size in sizes) + ")"


def _add_kernel_lines(attn_node: ShapeNode, config: ModelConfig, layer: int, x: Tensor, has_cache: bool) -> None:
    """Insert the kernel line, with one line per query head, before the output projection's line."""
    B, T = x.shape[0], x.shape[1]
    S = "S" if has_cache else T  # keys held in a KV cache are not visible from the inputs
    L, Hk, Hkv, hd = config.num_q_heads, config.key_heads, config.num_kv_heads, config.head_dim
    variant = config.variant
    kv = f"k/v {_dims(B, Hkv, S, hd)}" if Hk == Hkv else f"k {_dims(B, Hk, S, hd)}, v {_dims(B, Hkv, S, hd)}"
    kernel = ShapeNode(
        f"{attn_node.name}.kernel",
        "kernel",
        inputs=f"{variant.kernel_name}({variant.kernel_label(config, config.layer_splits[layer])}) "
        f"q {_dims(B, L, T, hd)}, {kv}",
        outputs=_dims(B, L, T, hd),
        derived=True,
    )
    layouts = level_layouts(config, layer)
    whole_heads = all(layout.num_subheads == 1 for layout in layouts)  # ordinary attention: no head is cut
    for layout in layouts:
        n, d = layout.num_subheads, layout.subhead_dim
        reads = (
            f"kv head {layout.value_head}"
            if layout.key_head == layout.value_head
            else f"key head {layout.key_head}, value head {layout.value_head}"
        )
        if whole_heads:
            node = ShapeNode(
                f"{attn_node.name}.head{layout.level}",
                "head",
                inputs=f"{reads}: q {_dims(B, T, d)}, k/v {_dims(B, S, d)}",
                outputs=_dims(B, T, d),
                derived=True,
            )
        else:
            node = ShapeNode(
                f"{attn_node.name}.level{layout.level}",
                "level",
                inputs=f"{reads}, {counted(n, 'sub-head')} of {d}: q {_dims(B, n, T, d)}, k/v {_dims(B, n, S, d)}",
                outputs=_dims(B, n, T, d),
                derived=True,
            )
        kernel.children.append(node)
    names = [child.name for child in attn_node.children]
    out_name = f"{attn_node.name}.{OUT_PROJECTION}"
    position = names.index(out_name) if out_name in names else len(names)
    attn_node.children.insert(position, kernel)


def is_selected(name: str, include: Sequence[str] | None) -> bool:
    """True when no patterns are given or `name` matches one (fnmatch globs; `*` also spans dots)."""
    return not include or any(fnmatch.fnmatchcase(name, pattern) for pattern in include)


@contextlib.contextmanager
def trace_shapes(
    model: nn.Module, include: Sequence[str] | None = None, config: ModelConfig | None = None
) -> Iterator[ShapeTrace]:
    """Record input and output shapes of the modules of `model` called inside the block.

    include: glob patterns on module names (``"blocks.*.attn"``, ``"blocks.0*"`` for block 0
    and everything in it, ``"norm"``); the root module's name is "". None traces everything.
    config: for the derived kernel and level lines; defaults to ``model.config`` if present.
    """
    config = config if config is not None else getattr(model, "config", None)
    trace = ShapeTrace()
    handles = []
    try:
        for name, module in model.named_modules():
            if not is_selected(name, include):
                continue
            if isinstance(module, CONTAINERS):
                trace._containers[name] = f"{type(module).__name__}[{len(module)}]"
            else:
                handles.append(module.register_forward_pre_hook(partial(trace._enter, name), with_kwargs=True))
                handles.append(module.register_forward_hook(partial(trace._exit, name, config), with_kwargs=True))
        yield trace
    finally:
        for handle in handles:
            handle.remove()


def example_input(config: ModelConfig, batch_size: int, seq_len: int, seed: int = 0) -> Tensor:
    """Random token ids (batch_size, seq_len) for a shape trace; seq_len at most max_seq_len."""
    if batch_size < 1 or not 1 <= seq_len <= config.max_seq_len:
        raise FhaValueError(
            f"need batch_size >= 1 and 1 <= seq_len <= max_seq_len={config.max_seq_len}, "
            f"got batch_size={batch_size}, seq_len={seq_len}"
        )
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=generator)


@torch.no_grad()
def shape_tree(model: nn.Module, idx: Tensor, include: Sequence[str] | None = None) -> str:
    """The rendered shape tree of one forward pass of `model` on token ids idx (B, T)."""
    with trace_shapes(model, include) as trace:
        model(idx)
    return trace.render()
