"""Attributions cached per clip on disk, so that a run killed part-way resumes where it stopped.

The key is everything that determines a map: the model's weights (a hash of their values, so the same
weights in another checkpoint file still hit), the feature type, the scenario, the method with its
options and seed. Each map is written atomically (temporary file, then rename): a killed run leaves
whole files or none.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from .outputs import atomic_path


def weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class AttributionCache:
    def __init__(self, folder: str | Path, key: dict):
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.dir = Path(folder) / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.exists():
            key_file.write_text(json.dumps(key, indent=2, sort_keys=True, default=str))

    def _path(self, clip: str) -> Path:
        return self.dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", clip) + ".pt")

    def get(self, clip: str) -> torch.Tensor | None:
        path = self._path(clip)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged entry is recomputed, never used
            path.unlink(missing_ok=True)
            return None

    def put(self, clip: str, attribution: torch.Tensor) -> None:
        with atomic_path(self._path(clip)) as tmp:
            torch.save(attribution.detach().cpu().clone(), tmp)
