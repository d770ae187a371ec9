"""Image LIME on the spectrogram, batched on the model's device.

It follows ``lime.lime_image.LimeImageExplainer`` with its defaults: quickshift superpixels
(kernel_size 4, max_dist 200, ratio 0.2) of the spectrogram scaled to [0, 1]; ``num_samples``
random on/off patterns over the superpixels (the first one all on); hidden superpixels filled with
their own mean; cosine distance to the all-on pattern; kernel sqrt(exp(-d^2 / 0.25^2)); a weighted
ridge regression (alpha 1, with intercept) of the target class's softmax probability on the patterns.
A superpixel's coefficient is the attribution of all its pixels.

Unlike the package, every perturbed spectrogram of a whole batch of clips goes through the model
in large batches, the regressions are solved together in batched calls, and segmentation runs in
worker threads, overlapping the model passes of the clips already segmented.
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from .base import AttributionMethod, Option, clip_seed, register
from .batching import pad_rows

# Superpixels depend on the image and quickshift's settings alone: kept here, so that a clip is segmented
# once per run, though the sanity cascade explains it again with a fresh method for every layer
SEGMENTS_KEPT = 2048
_segments: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_segments_lock = threading.Lock()


def scale01(x: torch.Tensor) -> torch.Tensor:
    """Per-clip min-max scaling of (B, ...) spectrograms to [0, 1]."""
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(x.shape)


def weighted_ridge(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Batched sklearn ``Ridge(alpha, fit_intercept=True).fit(z, y, sample_weight=w).coef_``.

    z: (B, N, S), y: (B, N), w: (B, N) -> (B, S). Columns that are all zero get coefficient 0.
    """
    z, y, w = z.double(), y.double(), w.double()
    wsum = w.sum(1, keepdim=True)
    zc = z - (w.unsqueeze(-1) * z).sum(1, keepdim=True) / wsum.unsqueeze(-1)
    yc = y - (w * y).sum(1, keepdim=True) / wsum
    wz = w.unsqueeze(-1) * zc
    gram = zc.transpose(1, 2) @ wz + alpha * torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
    rhs = (wz * yc.unsqueeze(-1)).sum(1)
    return torch.linalg.solve(gram, rhs)


@register("lime")
class Lime(AttributionMethod):
    label = "LIME"
    gradient_free = True
    random = True
    runtime_options = ("workers",)
    aliases = {"lime_samples": "num_samples"}
    declared_options = (
        # fewer than 2 patterns leave the regression nothing to fit
        Option("num_samples", 1000, "random on/off patterns of the superpixels per clip (the protocol's 1000)",
               least=2),
        Option("kernel_width", 0.25, "width of the cosine-distance kernel that weights each pattern", float, above=0),
        Option("alpha", 1.0, "ridge penalty of the weighted regression", float, above=0),
        Option("kernel_size", 4, "quickshift's Gaussian kernel width (lime's default 4)", float, above=0),
        Option("max_dist", 200, "quickshift's cut-off distance (lime's default 200)", float, above=0),
        Option("ratio", 0.2, "quickshift's balance of colour and space (lime's default 0.2)", float, least=0, most=1),
        Option("workers", None, "threads segmenting clips while the model runs (null: up to 8, one per core)",
               least=1, none=True),
    )

    def __init__(self, model, batch_size: int = 64, seed: int = 0, **options):
        super().__init__(model, batch_size, seed, **options)
        self.quickshift = {"kernel_size": self.kernel_size, "max_dist": self.max_dist, "ratio": self.ratio}
        self._pool = ThreadPoolExecutor(self.workers or min(8, os.cpu_count() or 1))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- the three steps ----------------------------------------------------------------------
    def _segment_one(self, image: np.ndarray) -> torch.Tensor:
        from skimage.color import gray2rgb  # here: importing the registry stays cheap
        from skimage.segmentation import quickshift

        key = (hashlib.sha1(image.tobytes()).hexdigest(), image.shape, tuple(sorted(self.quickshift.items())))
        with _segments_lock:
            if key in _segments:
                _segments.move_to_end(key)
                return _segments[key].long()
        # rng 42 is what lime's own segmentation ends up using (it drops its random_seed).
        seg = quickshift(gray2rgb(image), rng=42, **self.quickshift)
        labels = torch.from_numpy(np.unique(seg, return_inverse=True)[1].reshape(seg.shape).T).long()  # (T, F)
        with _segments_lock:
            _segments[key] = labels.to(torch.int32)
            while len(_segments) > SEGMENTS_KEPT:
                _segments.popitem(last=False)
        return labels

    def _submit(self, x: torch.Tensor) -> list:
        """Start segmenting every clip in worker threads; quickshift runs on the (F, T) image in [0, 1]."""
        images = scale01(x[:, 0]).transpose(1, 2).double().cpu().numpy()
        return [self._pool.submit(self._segment_one, im) for im in images]

    def segment(self, x: torch.Tensor, ids: Sequence[str] | None = None) -> torch.Tensor:
        """(B, 1, T, F) -> (B, T, F) superpixel labels 0..n-1."""
        return torch.stack([f.result() for f in self._submit(x)])

    def perturbations(self, n_segments: Sequence[int], ids: Sequence[str]) -> list[torch.Tensor]:
        """Per clip, a (num_samples, n) 0/1 pattern matrix whose first row is all ones."""
        out = []
        for n, cid in zip(n_segments, ids):
            g = torch.Generator().manual_seed(clip_seed(self.seed + 1, cid))
            z = torch.randint(0, 2, (self.num_samples, int(n)), generator=g, dtype=torch.uint8)
            z[0] = 1
            out.append(z)
        return out

    @torch.no_grad()
    def explain_segments(self, x: torch.Tensor, target: torch.Tensor, segments: torch.Tensor,
                         patterns: Sequence[torch.Tensor]) -> torch.Tensor:
        """Superpixel weights (B, S_max) for given segments (B, T, F) and pattern matrices (N, n_b)."""
        b, device = x.shape[0], x.device
        n = patterns[0].shape[0]
        sizes_host = [p.shape[1] for p in patterns]  # known on the host: no device sync for the largest
        s_max = max(sizes_host)
        counts = torch.tensor(sizes_host, device=device)
        z_host = torch.zeros(b, n, s_max, dtype=torch.bool)
        for i, p in enumerate(patterns):
            z_host[i, :, :p.shape[1]] = p.bool()
        z = z_host.to(device, non_blocking=True)  # one copy for the chunk, not one per clip
        seg = segments.to(device).reshape(b, -1)
        flat = x.reshape(b, -1)
        sums = torch.zeros(b, s_max, device=device, dtype=flat.dtype).scatter_add_(1, seg, flat)
        sizes = torch.zeros(b, s_max, device=device, dtype=flat.dtype).scatter_add_(1, seg, torch.ones_like(flat))
        fill = (sums / sizes.clamp_min(1)).gather(1, seg)

        probs = torch.empty(b * n, device=device, dtype=torch.float32)
        for start in range(0, b * n, self.batch_size):
            idx = torch.arange(start, min(start + self.batch_size, b * n), device=device)
            bi, ni = idx // n, idx % n
            keep = torch.gather(z[bi, ni], 1, seg[bi])
            xp = pad_rows(torch.where(keep, flat[bi], fill[bi]).reshape(len(idx), *x.shape[1:]), self.batch_size)
            p = self.model(xp).float().softmax(-1)[:len(idx)]
            probs[idx] = p.gather(1, target[bi].unsqueeze(1)).squeeze(1)
        probs = probs.reshape(b, n)

        zf = z.double()
        dist = 1 - torch.sqrt(zf.sum(-1) / counts.unsqueeze(1))  # cosine distance to the all-on pattern
        weights = torch.sqrt(torch.exp(-dist ** 2 / self.kernel_width ** 2))
        return weighted_ridge(zf, probs, weights, self.alpha)

    def attribute(self, x, target, ids=None):
        ids = list(ids) if ids is not None else [str(i) for i in range(len(x))]
        futures = self._submit(x)
        # a few clips at a time, so the model passes of one chunk overlap the segmentation of the next
        per_chunk = max(1, self.batch_size // self.num_samples)
        maps = []
        for start in range(0, len(x), per_chunk):
            sl = slice(start, start + per_chunk)
            segments = torch.stack([f.result() for f in futures[sl]])
            patterns = self.perturbations((segments.reshape(len(segments), -1).amax(1) + 1).tolist(), ids[sl])
            coef = self.explain_segments(x[sl], target[sl], segments, patterns)
            seg = segments.to(x.device).reshape(len(segments), -1)
            maps.append(coef.gather(1, seg).reshape(x[sl].shape).to(x.dtype))
        return torch.cat(maps)
