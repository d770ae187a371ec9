"""Run W&B offline by itself when there is no login or no network, so nothing waits on a prompt."""
from __future__ import annotations

import atexit
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
    atexit.register(_print_sync_hint)
    return "offline"


def _print_sync_hint() -> None:
    import sys
    if "wandb" not in sys.modules:  # no W&B logger ran
        return
    print("W&B ran offline (no login or no network). To upload later: `wandb login`, then "
          "`wandb sync <save_dir>/wandb/offline-run-*` (save_dir is the logger's, `runs` by default).")
