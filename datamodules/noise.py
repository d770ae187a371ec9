"""Background noise: the study's fixed test scenarios and random training augmentation."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from audio_xai.errors import UsageFileNotFoundError, UsageValueError
from .audio import AudioError, clip_path, fix_length, load_clip, mix_at_snr, mix_scenario

# The paper's three freesound.org backgrounds (id in the file name), looked up in ``noise_dir``.
SCENARIOS = {
    "white": "165058__theundecided__white-noise.wav",
    "room": "203297__mzui__room-tone-office-industrial-ambience-01.wav",
    "horse": "149024__foxen10__horse_whinny.wav",
}


def resolve_noise(name: str, noise_dir: str | Path) -> tuple[str, Path]:
    """Map a scenario name (``white``, ``room``, ``horse``) or a file path to (label, path)."""
    if name in SCENARIOS:
        path = Path(noise_dir) / SCENARIOS[name]
        label = name
    else:
        path = Path(name)
        label = path.stem
    if not path.is_file():
        fid = SCENARIOS[name].split("__")[0] if name in SCENARIOS else None
        how = (f"download freesound.org sound {fid} and save it as {path}" if fid
               else "pass an existing audio file")
        raise UsageFileNotFoundError(
            f"noise scenario {name!r}: file {path} not found; {how}, or set --data.noise_dir "
            f"to the folder holding it. Known scenario names: {', '.join(SCENARIOS)}.")
    return label, path


class ScenarioNoise:
    """A deterministic scenario: the same noise, from its start, mixed into every clip."""

    def __init__(self, name: str, noise_dir: str | Path, sample_rate: int, duration: float):
        self.label, self.path = resolve_noise(name, noise_dir)
        self.noise = load_clip(self.path, sample_rate, duration)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        return mix_scenario(clip, self.noise)


@dataclass
class TrainNoise:
    """With probability ``p``, mix a random background (a file from ``files``, or white noise
    when none are given) at an SNR drawn uniformly from ``snr_db``."""

    p: float = 0.5
    files: list[str] = field(default_factory=list)
    snr_db: tuple[float, float] = (5.0, 20.0)

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise UsageValueError(f"train_noise.p must be in [0, 1], got {self.p}")
        lo, hi = self.snr_db
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise UsageValueError(f"train_noise.snr_db must be (low, high), two finite numbers, got {self.snr_db}")
        for f in self.files:
            if not Path(f).is_file():
                raise UsageFileNotFoundError(f"train_noise.files: {f} not found; fix the path or remove it from the list")
        self._cache: dict[str, torch.Tensor] = {}

    def _noise(self, rng: random.Random, n: int, sample_rate: int) -> torch.Tensor:
        if not self.files:
            g = torch.Generator().manual_seed(rng.randrange(2**31))
            return torch.randn(n, generator=g)
        f = rng.choice(self.files)
        if f not in self._cache:
            try:
                self._cache[f] = load_clip(f, sample_rate, n / sample_rate)
            except AudioError as err:
                raise AudioError(f"train_noise.files: {err}") from err
        return self._cache[f]

    def __call__(self, clip: torch.Tensor, rng: random.Random, sample_rate: int) -> torch.Tensor:
        if rng.random() >= self.p:
            return clip
        return mix_at_snr(clip, self._noise(rng, clip.shape[-1], sample_rate), rng.uniform(*self.snr_db))


# -- the mixture scenario: every test clip over a clip of another class -------------------------------
MIXTURE = "mixture"


def mix_parts(target: torch.Tensor, distractor: torch.Tensor, snr_db: float,
              eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """The two parts of a mix whose sum is the mix: the distractor scaled to ``snr_db`` below the target
    (by power), then both scaled by the one factor that makes their sum peak at 1. A silent part stays
    silent (the mix is then the other part)."""
    distractor = fix_length(distractor, target.shape[-1])
    p_target, p_distractor = target.double().pow(2).mean(), distractor.double().pow(2).mean()
    scale = (p_target / (p_distractor * 10 ** (snr_db / 10))).sqrt() if p_target > 0 and p_distractor > 0 else 0.0
    scaled = (distractor.double() * scale)
    mix = target.double() + scaled
    peak = mix.abs().max()
    gain = 1.0 / peak if peak > eps else 0.0
    return (target.double() * gain).to(target.dtype), (scaled * gain).to(target.dtype)


def mixture_partners(rows: list[dict], seed: int) -> list[int]:
    """For every row, the index of its distractor: a row of another class, drawn by a generator seeded by
    the seed and the clip's file name from the other classes' rows in file-name order. So the pairing
    depends on the seed and the clip list only, not on row order, batches or processes."""
    order = sorted(range(len(rows)), key=lambda i: rows[i]["filename"])
    partners = []
    for row in rows:
        others = [i for i in order if rows[i]["target"] != row["target"]]
        if not others:
            raise UsageValueError(f"--data.test_noise mixture needs clips of at least two classes in the test folds; "
                                  f"all {len(rows)} are of class {row['target']}: add folds with --data.test_folds")
        partners.append(random.Random(f"{seed}:{row['filename']}").choice(others))
    return partners


class Mixture:
    """The ``mixture`` scenario over the clips ``rows`` (of ``root/audio``, or each row's ``path``): clip i plus its partner's clip
    at ``snr_db``. An item gets the mix as its waveform and both scaled parts, from which the ground truth
    (the ideal binary mask) is computed in the feature domain."""

    label = MIXTURE

    def __init__(self, root: str | Path, rows: list[dict], snr_db: float = 0.0, seed: int = 0,
                 sample_rate: int = 32000, duration: float = 5.0):
        self.root, self.rows, self.snr_db = Path(root), rows, float(snr_db)
        self.sample_rate, self.duration = sample_rate, duration
        self.partners = mixture_partners(rows, seed)

    def __call__(self, i: int, clip: torch.Tensor) -> dict:
        other = self.rows[self.partners[i]]
        distractor = load_clip(clip_path(self.root, other), self.sample_rate, self.duration)
        target_part, distractor_part = mix_parts(clip, distractor, self.snr_db)
        return {"waveform": target_part + distractor_part, "target_part": target_part,
                "distractor_part": distractor_part, "distractor": other["filename"]}
