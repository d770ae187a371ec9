"""How explanation passes are batched and at what float precision: one policy, stated here.

- Batch sizes are a function of the model, the input size and the device type alone (never of the free
  memory, which changes with what else runs): 8 on a CPU; on CUDA, as many inputs as fit in
  ``CUDA_BUDGET`` bytes by a count of the model's activations for one input (a forward pass with hooks).
- On CUDA every forward-only model call gets the same batch shape: the last chunk is padded with copies of
  its first row (and the extra outputs dropped), so cuDNN never chooses another algorithm for it and a
  clip's probabilities do not depend on the chunk it fell in.
- TF32 is off for explanation runs unless asked for (``tf32``): with it, convolutions round their inputs to
  10-bit mantissas and GPU probabilities move by ~1e-3, ten times the metrics' ``PROB_TOL``.
- ``bf16`` runs the forward passes of forward-only methods and metrics under bfloat16 autocast.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn as nn

from errors import UsageValueError

CPU_BATCH = 8  # on a CPU, larger batches run slower per input (measured: activations outgrow the caches)
CUDA_BUDGET = 8 * 2**30  # bytes of activations per model call on a GPU: fits a 16 GB card beside the model
CUDA_CAP = 1024
PRECISIONS = {"32": None, "bf16": torch.bfloat16}


def activation_bytes(model: nn.Module, sample: torch.Tensor) -> tuple[int, int]:
    """(sum, largest) of the bytes of every leaf module's output for one input shaped like ``sample``
    (1, ...): what a backward pass keeps, and what a forward pass needs at once (about)."""
    sizes: list[int] = []

    def keep(module, inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(keep) for m in leaves]
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in hooks:
            h.remove()
    return sum(sizes) + sample[:1].numel() * sample.element_size(), max(sizes, default=1)


def batch_sizes(model: nn.Module, sample: torch.Tensor) -> dict[str, int]:
    """Inputs per model call, ``forward`` only and with a ``backward`` pass to the input, for inputs shaped
    like ``sample`` (1, ...) on its device type."""
    if sample.device.type != "cuda":
        return {"forward": CPU_BATCH, "backward": CPU_BATCH}
    total, largest = activation_bytes(model, sample)

    def rows(per_input: int) -> int:  # a multiple of 8 (tensor-core friendly), within [8, CUDA_CAP]
        return int(min(CUDA_CAP, max(8, CUDA_BUDGET // max(1, per_input) // 8 * 8)))

    # forward: an activation, its successor and a convolution's workspace at once; backward: every
    # activation kept for the gradient, and a gradient of the same size
    return {"forward": rows(3 * largest), "backward": rows(2 * total)}


def pad_rows(chunk: torch.Tensor, size: int) -> torch.Tensor:
    """``chunk`` with copies of its first row appended up to ``size`` rows (on CUDA only; elsewhere as is)."""
    if chunk.device.type != "cuda" or len(chunk) >= size:
        return chunk
    return torch.cat([chunk, chunk[:1].expand(size - len(chunk), *chunk.shape[1:])])


def chunks(x: torch.Tensor, size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(rows, chunk) of ``x`` in chunks of ``size``, the last padded to ``size`` on CUDA (``pad_rows``); the
    caller keeps the first ``rows`` outputs of each."""
    for start in range(0, len(x), size):
        part = x[start:start + size]
        yield len(part), pad_rows(part, size)


def autocast(device: torch.device, precision: str):
    """Autocast of forward passes: ``32`` none, ``bf16`` bfloat16."""
    if precision not in PRECISIONS:
        raise UsageValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 in CUDA convolutions and matrix products on (``enabled``) or off inside the block, as before after."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
