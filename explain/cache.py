"""Attributions cached per clip on disk, so that a run killed part-way resumes where it stopped.

What determines a map, and so its key: the model's weights (a hash of their values, so the same weights
in another checkpoint file still hit), the method with its options and seed, the precision, the
background of methods that use one (a hash of its spectrograms), and per clip the input spectrogram
itself (a hash of its values: it carries the audio, the noise mixed in, and every data and feature
option), the target class and the clip id (random methods seed from it). The first group names a
folder; the second names the entry in it and is stored inside the entry too.

An entry is used only when what it stores matches its key (clip, input hash, target) and its map has
the input's shape and finite values; anything else is reported with its file name and recomputed. Each
entry is written atomically (temporary file, then rename): a killed run leaves whole files or none.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import torch

from audio_xai.files import atomic_path

log = logging.getLogger(__name__)


def tensor_hash(tensor: torch.Tensor) -> str:
    """Hash of a tensor's shape, dtype and values."""
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha1(f"{tuple(t.shape)}{t.dtype}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


def weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def clips_hash(clips) -> str:
    """Hash of a set of clip names (order and repeats do not count): what identifies the data a run explained."""
    return hashlib.sha1("\n".join(sorted(set(map(str, clips)))).encode()).hexdigest()


class AttributionCache:
    """``get(clip, x, target)`` -> the cached map of spectrogram ``x`` (1, T, F) for ``target``, or None;
    ``put(clip, x, target, map)`` stores it. ``key`` holds what is common to every entry."""

    def __init__(self, folder: str | Path, key: dict):
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.dir = Path(folder) / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.exists():
            with atomic_path(key_file) as tmp:
                tmp.write_text(json.dumps(key, indent=2, sort_keys=True, default=str))
        self.rejected: list[str] = []

    def _entry(self, clip: str, x: torch.Tensor, target: int, digest: str | None = None) -> tuple[Path, dict]:
        meta = {"clip": clip, "input": digest or tensor_hash(x), "target": int(target)}
        digest = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
        return self.dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', clip)}-{digest}.pt", meta

    def get(self, clip: str, x: torch.Tensor, target: int, digest: str | None = None) -> torch.Tensor | None:
        """``digest``: ``tensor_hash(x)`` when the caller has it already."""
        path, meta = self._entry(clip, x, target, digest)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unreadable: recomputed, never used
            return self._reject(path, f"unreadable ({type(err).__name__})")
        if not isinstance(entry, dict) or not isinstance(entry.get("map"), torch.Tensor):
            return self._reject(path, "not an attribution entry")
        stored = {k: entry.get(k) for k in meta}
        if stored != meta:
            wrong = ", ".join(k for k in meta if stored[k] != meta[k])
            return self._reject(path, f"it holds the map of another input ({wrong} differ)")
        amap = entry["map"]
        if amap.shape != x.shape:
            return self._reject(path, f"its map has shape {tuple(amap.shape)}, the input {tuple(x.shape)}")
        if not torch.isfinite(amap).all():
            return self._reject(path, "its map has NaN or infinite values")
        return amap

    def _reject(self, path: Path, why: str) -> None:
        log.warning("attribution cache entry %s is not used (%s); recomputing it", path, why)
        self.rejected.append(str(path))
        path.unlink(missing_ok=True)
        return None

    def put(self, clip: str, x: torch.Tensor, target: int, attribution: torch.Tensor,
            digest: str | None = None) -> None:
        path, meta = self._entry(clip, x, target, digest)
        with atomic_path(path) as tmp:
            torch.save({**meta, "map": attribution.detach().cpu().clone()}, tmp)
