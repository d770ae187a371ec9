"""How well does each mel inverse let a spectrogram be heard back, and at what cost? Side by side, one run.

    python -m benchmarks.inverse --audio ../shared/data/esc50-mini/audio --out inverse.json

For each candidate inverse of the log-mel front-end (``MeldB``'s ``mel_inverse`` and ``nnls_iters``) every
clip's spectrogram X goes to audio with its own STFT phase and back through the front-end, T(T_inv(X)), and so
does its masked-in spectrogram under a mask that keeps its loudest half of the cells (masked cells at the
-100 dB floor, as the metrics' default fill). Printed per candidate: the log-spectral distance (dB, RMS over
cells) and the spectral convergence of the unmasked round trip (mean and worst clip) and of the masked one,
and the seconds per spectrogram on this machine. The STFT front-end's exact round trip is the reference row.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from datamodules.audio import load_clip
from explain.heard import distortion, hear
from explain.masks import apply_mask
from lightning_modules.features import MeldB, STFTdB

# (name, front-end arguments): the inverse the examples used before this benchmark first, MeldB's default now
# lstsq+nnls-10
CANDIDATES = (
    ("nnls-50", {"mel_inverse": "nnls", "nnls_iters": 50}),
    ("nnls-200", {"mel_inverse": "nnls", "nnls_iters": 200}),
    ("lstsq", {"mel_inverse": "lstsq", "nnls_iters": 0}),
    ("lstsq+nnls-10", {"mel_inverse": "lstsq", "nnls_iters": 10}),
    ("lstsq+nnls-50", {"mel_inverse": "lstsq", "nnls_iters": 50}),
)


def loudest_half(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, F) mask of each spectrogram's cells at or above its median."""
    flat = x.flatten(1)
    return (flat >= flat.median(dim=1, keepdim=True).values).view_as(x).to(x.dtype)


def measure(features, wave: torch.Tensor, batch_size: int) -> dict:
    x, phase = features(wave, return_phase=True)
    masked = apply_mask(x, loudest_half(x))[0]
    start = time.perf_counter()
    _, heard = hear(features, x, phase, wave.shape[-1], batch_size)
    seconds = (time.perf_counter() - start) / len(x)
    _, heard_masked = hear(features, masked, phase, wave.shape[-1], batch_size)
    clip, part = distortion(x, heard), distortion(masked, heard_masked)
    return {"lsd_db": clip[:, 0].mean().item(), "lsd_db_worst": clip[:, 0].max().item(),
            "sc": clip[:, 1].mean().item(), "sc_worst": clip[:, 1].max().item(),
            "masked_lsd_db": part[:, 0].mean().item(), "masked_sc": part[:, 1].mean().item(),
            "seconds_per_spectrogram": seconds}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, required=True, help="a folder of .wav clips")
    parser.add_argument("--clips", type=int, default=10, help="how many clips (the first by name)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per clip (cut or padded)")
    parser.add_argument("--filterbank", default="htk", choices=("htk", "slaney"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--candidates", default=",".join(n for n, _ in CANDIDATES),
                        help="comma list of the candidates to measure")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    files = sorted(args.audio.glob("*.wav"))[:args.clips]
    if not files:
        parser.error(f"--audio {args.audio}: no .wav files there")
    torch.set_grad_enabled(False)
    wave = torch.stack([load_clip(f, 32000, args.duration) for f in files])
    chosen = args.candidates.split(",")
    unknown = sorted(set(chosen) - {n for n, _ in CANDIDATES})
    if unknown:
        parser.error(f"--candidates: unknown {unknown}; known: {', '.join(n for n, _ in CANDIDATES)}")
    rows = {"stft (exact)": measure(STFTdB(), wave, args.batch_size)}
    for name, kwargs in CANDIDATES:
        if name in chosen:
            rows[f"mel {name}"] = measure(MeldB(filterbank=args.filterbank, **kwargs), wave, args.batch_size)
    print(f"{len(files)} clips of {args.duration} s, {args.filterbank} bands; round trip T(T_inv(X)) against X")
    print(f"{'inverse':<20} {'LSD dB':>7} {'worst':>7} {'SC':>7} {'worst':>7} {'masked LSD':>11} {'masked SC':>10} {'s/spec':>8}")
    for name, r in rows.items():
        print(f"{name:<20} {r['lsd_db']:7.2f} {r['lsd_db_worst']:7.2f} {r['sc']:7.3f} {r['sc_worst']:7.3f} "
              f"{r['masked_lsd_db']:11.2f} {r['masked_sc']:10.3f} {r['seconds_per_spectrogram']:8.4f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
