"""Batch sizes that fit the device, and the optional bf16 autocast of explanation forwards."""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from errors import UsageValueError

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


PRECISIONS = {"32": None, "bf16": torch.bfloat16}


def autocast(device: torch.device, precision: str):
    """Autocast of forward passes: ``32`` none, ``bf16`` bfloat16."""
    if precision not in PRECISIONS:
        raise UsageValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])
