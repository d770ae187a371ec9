"""How explanation passes are batched and at what float precision: one policy, stated here.

- Batch sizes are a function of the model, the input size, the device type and a stated memory budget
  alone (never of the free memory, which changes with what else runs): 8 on a CPU; on CUDA, as many inputs
  as fit in ``memory_gb`` (default ``CUDA_MEMORY_GB``) by a count of the model's activations for one input
  (a forward pass with hooks) times the peak-per-activation factors measured on a GPU.
- On CUDA every model call gets one of a few fixed batch shapes (``pad_sizes``: the batch size and its
  halvings down to 8): a short chunk is padded with copies of its first row to the smallest that holds it (the
  extra outputs dropped), so cuDNN sees a handful of shapes a run, autotuned once each (``cudnn_autotune``),
  and a short chunk costs at most twice its rows, not a full batch.
- TF32 is off for explanation runs unless asked for (``tf32``): with it, convolutions round their inputs to
  10-bit mantissas and GPU probabilities move by ~1e-3, ten times the metrics' ``PROB_TOL``.
- ``bf16`` runs the forward passes of forward-only methods and metrics under bfloat16 autocast.
- Thresholds stay exact in every mode (``Precision``): the clean pass (the class explained, p_c(X)) always runs
  in float32 with TF32 off, and each AI or Fid-In decision of a masked input that lies within the mode's
  ``ERROR_BOUNDS`` of its threshold is computed again that way, for those rows only
  (``explain.metrics.near_thresholds``), so AI and Fid-In are the float32 run's, clip by clip.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from audio_xai.errors import UsageValueError

CPU_BATCH = 8  # on a CPU, larger batches run slower per input (measured: activations outgrow the caches)
CUDA_MEMORY_GB = 8.0  # per model call on a GPU: fits a 16 GB card beside the model and the data
CUDA_CAP = 1024
# Peak allocated memory per input over the sum of the model's activations for one input, measured on an
# H200 (torch 2.11, float32, TF32 off) for a width-64 Cnn14 on 5 s mel clips (101 MB of activations):
# 133 MB per input forward only (344 inputs a call), 943 MB with a backward pass to the input (40 a call;
# cuDNN's float32 workspaces and the gradients). Rounded up.
FORWARD_FACTOR, BACKWARD_FACTOR = 1.5, 10.0
PRECISIONS = {"32": None, "bf16": torch.bfloat16}
# Largest |p_mode - p_float32| the exact mode assumes of any softmax probability, a margin over what was
# measured (``python -m benchmarks.bound``: every class of the clean, masked-in and masked-out inputs of the
# quickstart model's Saliency, Grad-CAM and control maps). bf16: 7.7e-3 on 2 CPU cores (32 clips, 2026-12-04;
# clean inputs 1.3e-3); an H200 moved clean inputs 4.3e-3 (16 clips, 2026-11-30), three times the CPU, so its
# masked inputs may reach ~0.025: 0.05 leaves twice that (the GPU check measures it). tf32 (CUDA only): 2.7e-4
# on the H200, clean inputs. A wider bound costs only more rows redone (CPU, bound 0.03: 27 % of masked-in rows).
ERROR_BOUNDS = {"bf16": 0.05, "tf32": 0.005}


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


def batch_sizes(model: nn.Module, sample: torch.Tensor, memory_gb: float = CUDA_MEMORY_GB) -> dict[str, int]:
    """Inputs per model call, ``forward`` only and with a ``backward`` pass to the input, for inputs shaped
    like ``sample`` (1, ...) on its device type, within ``memory_gb`` on CUDA.

    Example:
        >>> import torch, torch.nn as nn
        >>> batch_sizes(nn.Conv2d(1, 4, 3), torch.zeros(1, 1, 8, 8))  # on a CPU: the fixed size
        {'forward': 8, 'backward': 8}
    """
    if sample.device.type != "cuda":
        return {"forward": CPU_BATCH, "backward": CPU_BATCH}
    total, _ = activation_bytes(model, sample)
    return {"forward": cuda_rows(FORWARD_FACTOR * total, memory_gb),
            "backward": cuda_rows(BACKWARD_FACTOR * total, memory_gb)}


def check_memory(memory_gb: float, device: torch.device | str) -> None:
    """``memory_gb`` is at most what the GPU has: a budget above it would only fail later, out of memory, in the
    middle of a run. On a CPU the budget is unused (batches there have a fixed size), so it is not checked."""
    device = torch.device(device)
    if device.type != "cuda":
        return
    total = torch.cuda.get_device_properties(device).total_memory
    if memory_gb * 2**30 > total:
        raise UsageValueError(f"--explainer.memory_gb {memory_gb:g} is more than GPU {device} has "
                              f"({total / 2**30:.1f} GB): give at most that (it bounds the memory of one model call)")


def cuda_rows(per_input: float, memory_gb: float) -> int:
    """How many inputs of ``per_input`` bytes fit in ``memory_gb``: a multiple of 8 (tensor-core friendly)
    within [8, ``CUDA_CAP``].

    Example:
        >>> cuda_rows(100 * 2**20, 8.0), cuda_rows(2**40, 8.0), cuda_rows(1, 8.0)
        (80, 8, 1024)
    """
    return int(min(CUDA_CAP, max(8, int(memory_gb * 2**30 // max(1.0, per_input)) // 8 * 8)))


def pad_sizes(size: int) -> list[int]:
    """The batch shapes of a run whose calls hold ``size`` rows: ``size`` and its halvings down to 8, each
    rounded up to a multiple of 8 (tensor-core friendly), ascending.

    Example:
        >>> pad_sizes(344), pad_sizes(40), pad_sizes(8)
        ([16, 24, 48, 88, 176, 344], [16, 24, 40], [8])
    """
    sizes, s = {size}, size
    while s // 2 >= 8:
        s //= 2
        sizes.add(-(-s // 8) * 8)
    return sorted(sizes)


def pad_rows(chunk: torch.Tensor, size: int, pad: bool | None = None) -> torch.Tensor:
    """``chunk`` with copies of its first row appended up to the smallest of ``pad_sizes(size)`` that holds it;
    ``pad`` None: on CUDA only (a CPU's kernels do not change with the batch size as cuDNN's do, and padding
    would cost time)."""
    if not (chunk.device.type == "cuda" if pad is None else pad) or len(chunk) >= size:
        return chunk
    rows = next(s for s in pad_sizes(size) if s >= len(chunk))
    return torch.cat([chunk, chunk[:1].expand(rows - len(chunk), *chunk.shape[1:])])


def chunks(size: int, *tensors: torch.Tensor, pad: bool | None = None) -> Iterator[tuple]:
    """(rows, chunk of each tensor) in chunks of ``size`` rows, the last padded to one of ``pad_sizes(size)``
    (``pad_rows``, which decides by the first tensor's device); the caller keeps the first ``rows`` outputs of each."""
    pad = tensors[0].device.type == "cuda" if pad is None else pad
    for start in range(0, len(tensors[0]), size):
        parts = [t[start:start + size] for t in tensors]
        yield (len(parts[0]), *(pad_rows(part, size, pad) for part in parts))


def check_precision(precision: str, option: str = "precision") -> str:
    """``precision`` when it is one of ``PRECISIONS``; else an error naming ``option``."""
    if precision not in PRECISIONS:
        raise UsageValueError(f"{option} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast of forward passes: ``32`` none, ``bf16`` bfloat16 (checked where it was given: ``check_precision``)."""
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


@dataclass(frozen=True)
class Precision:
    """A run's precision mode: ``fast`` is what the forward-only passes run under, ``exact`` what the
    decisions within ``bound`` of a threshold are computed again under (float32, TF32 off, no autocast)."""

    precision: str = "32"
    tf32: bool = False

    def bound(self, device: torch.device) -> float:
        """How far the fast mode may move a probability on ``device`` (0: it is exact)."""
        bound = ERROR_BOUNDS["bf16"] if PRECISIONS[self.precision] is not None else 0.0
        return bound + (ERROR_BOUNDS["tf32"] if self.tf32 and torch.device(device).type == "cuda" else 0.0)

    def fast(self, device: torch.device):
        return autocast(torch.device(device), self.precision)

    @contextlib.contextmanager
    def exact(self, device: torch.device):
        with torch.autocast(torch.device(device).type, enabled=False), tf32(False):
            yield


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 in CUDA convolutions and matrix products on (``enabled``) or off inside the block, as before after."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@contextlib.contextmanager
def cudnn_autotune(device: torch.device):
    """cuDNN's benchmark mode on inside the block on CUDA (as before after): a run's calls come in the few
    shapes of ``pad_sizes``, so each is timed once and then runs on the fastest algorithm."""
    if torch.device(device).type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
