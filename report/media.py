"""Files a person can read: atomic CSV/JSON writes, wav files, spectrogram figures."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import soundfile as sf
import torch

from errors import UsageFileExistsError

RESULT_COLUMNS = ["model", "scenario", "method", "mask", "n", "FF", "AI", "AD", "AG", "FidIn", "SPS", "COMP"]
CLIP_COLUMNS = ["clip", "true_class", "pred_class", "correct", "method", "mask",
                "FF", "AI", "AD", "AG", "FidIn", "SPS", "COMP"]


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, so readers (and a
    run started after a crash) see the whole file or none of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; outputs are for whoever can read the folder
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def claim_folder(folder: str | Path):
    """Claim an output folder for this run: an exclusive lock on ``folder/.claim``, held until the returned
    file is closed or the process ends (so a killed run's claim goes with it, and its command can be run
    again). A folder that holds results, or that another running process has claimed, is refused."""
    import fcntl

    folder = Path(folder)
    if (folder / "results.csv").exists():
        raise UsageFileExistsError(f"{folder} already holds the results of an earlier run; choose another "
                                   f"--explainer.output_dir (or --trainer.default_root_dir), or move it away")
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".claim", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise UsageFileExistsError(f"{folder} is being written by another run ({owner}); wait for it to end or "
                                   f"choose another --explainer.output_dir") from None
    if (folder / "results.csv").exists():  # finished between the first check and the lock
        handle.close()
        raise UsageFileExistsError(f"{folder} already holds the results of an earlier run; choose another "
                                   f"--explainer.output_dir (or --trainer.default_root_dir), or move it away")
    handle.truncate(0)
    handle.write(f"process {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()
    return handle


def atomic_write(path: str | Path, write) -> Path:
    """Write a text file atomically; ``write`` gets the open file."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        write(f)
    return Path(path)


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence]) -> Path:
    def write(f):
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return atomic_write(path, write)


def write_json(path: str | Path, obj) -> Path:
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, default=str))


def write_wav(path: str | Path, wave: torch.Tensor, sample_rate: int) -> Path:
    """16-bit wav; the waveform is peak-limited to [-1, 1] so a louder reconstruction does not wrap."""
    x = wave.detach().float().cpu().numpy()
    peak = np.abs(x).max()
    if peak > 1:
        x = x / peak
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sample_rate, subtype="PCM_16")
    return path


def spectrogram_figure(panels: Sequence[tuple[str, torch.Tensor]], freqs: torch.Tensor, duration: float,
                       title: str):
    """Side-by-side (T, F) dB spectrograms with time in s and frequency in Hz."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), sharey=True, squeeze=False)
    freqs = freqs.cpu().numpy()
    # the first panel's range: masked parts (at the -100 dB floor) show as the darkest colour
    vmin, vmax = float(panels[0][1].min()), float(panels[0][1].max())
    for ax, (name, spec) in zip(axes[0], panels):
        img = spec.detach().float().cpu().numpy().T  # (F, T)
        im = ax.imshow(img, origin="lower", aspect="auto", extent=(0, duration, 0, img.shape[0]),
                       vmin=vmin, vmax=vmax, cmap="magma", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("time (s)")
        ticks = np.linspace(0, img.shape[0] - 1, 6).round().astype(int)
        ax.set_yticks(ticks + 0.5)
        ax.set_yticklabels([f"{freqs[t]:.0f}" for t in ticks])
    axes[0][0].set_ylabel("frequency (Hz)")
    fig.colorbar(im, ax=axes[0].tolist(), label="dB", shrink=0.9)
    fig.suptitle(title, fontsize=10)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
