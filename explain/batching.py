"""Batch sizes that fit the device, and the optional bf16 autocast of explanation forwards."""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

CPU_BATCH = 8  # on a CPU, larger batches run slower per input (measured: activations outgrow the caches)


def auto_batch_size(model: nn.Module, sample: torch.Tensor, backward: bool = False, fraction: float = 0.5,
                    cap: int = 2048) -> int:
    """How many inputs shaped like ``sample`` (1, ...) fit in one call, forward only or with a backward
    pass to the input: measured with a probe batch on CUDA (using ``fraction`` of the free memory),
    a fixed size elsewhere."""
    device = sample.device
    if device.type != "cuda":
        return CPU_BATCH
    probe = 8
    x = sample.expand(probe, *sample.shape[1:]).clone()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    if backward:
        x.requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(model(x).sum(), x)
    else:
        with torch.no_grad():
            model(x)
    per_input = max(1, (torch.cuda.max_memory_allocated(device) - base) / probe)
    free, _ = torch.cuda.mem_get_info(device)
    return int(max(1, min(cap, free * fraction / per_input)))


def autocast(device: torch.device, precision: str):
    """``bf16``: bfloat16 autocast for forward passes; ``32``: full precision."""
    if precision in ("32", "fp32", "32-true"):
        return contextlib.nullcontext()
    if precision in ("bf16", "bf16-mixed"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be '32' or 'bf16', got {precision!r}")
