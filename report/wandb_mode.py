"""Run W&B offline by itself when there is no login or no network, so nothing waits on a prompt."""
from __future__ import annotations

import netrc
import os
import socket


def _has_login() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str = "api.wandb.ai", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def choose_wandb_mode() -> str:
    """Respect WANDB_MODE when set; otherwise go offline without a login or without network."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if _has_login() and _reachable():
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    return "offline"


def print_sync_hint(loggers) -> None:
    """After an offline run, say where it is and how to upload it (on global rank 0 only)."""
    from lightning.pytorch.utilities import rank_zero_only
    if os.environ.get("WANDB_MODE") != "offline" or rank_zero_only.rank != 0:
        return  # the other ranks hold a stand-in for the W&B run (its .dir is a method)
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            run_dir = os.path.dirname(logger.experiment.dir)
            print(f"W&B ran offline (no login or no network); the run is in {run_dir}. "
                  f"To upload it: `wandb login`, then `wandb sync {run_dir}`.")
