"""ESC-50 as a LightningDataModule: folds, the protocol's audio, noise, and SHAP's background."""
from __future__ import annotations

import csv
import logging
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Optional

import lightning as L
import soundfile
from lightning.fabric.utilities.data import suggested_max_num_workers
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
import torch
from torch.utils.data import DataLoader, Dataset

from audio_xai.errors import UsageFileExistsError, UsageFileNotFoundError, UsageValueError
from .audio import DURATION, SAMPLE_RATE, clip_path, load_clip
from .batch import collate
from audio_xai.files import DownloadError, download, extract_zip_into
from .noise import MIXTURE, Mixture, ScenarioNoise, TrainNoise
from .synthetic import is_synthetic, read_signatures, write_synthetic_esc50

log = logging.getLogger(__name__)

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
REQUIRED_COLUMNS = ("filename", "fold", "target", "category")


def read_metadata(root: Path) -> list[dict]:
    meta = root / "meta" / "esc50.csv"
    with open(meta, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageValueError(f"{meta} lacks the column(s) {missing}; it must have the ESC-50 columns "
                                  f"filename,fold,target,category,esc10,src_file,take")
        rows = []
        for i, r in enumerate(reader, start=2):
            try:
                rows.append({"filename": r["filename"], "fold": int(r["fold"]), "target": int(r["target"]),
                             "category": r["category"]})
            except (TypeError, ValueError) as err:
                raise UsageValueError(f"{meta}, line {i}: fold and target must be integers ({err})") from err
    if not rows:
        raise UsageValueError(f"{meta} lists no clips")
    return rows


class ClipDataset(Dataset):
    """Clips of the given metadata rows; each item is a dict that carries its file name and scenario."""

    def __init__(self, root: Path, rows: list[dict], sample_rate: int = SAMPLE_RATE, duration: float = DURATION,
                 test_noise: Optional[ScenarioNoise | Mixture] = None, train_noise: Optional[TrainNoise] = None,
                 boxes: Optional[dict] = None):
        self.root, self.rows = root, rows
        self.sample_rate, self.duration = sample_rate, duration
        self.test_noise, self.train_noise = test_noise, train_noise
        self.scenario = test_noise.label if test_noise is not None else "clean"
        self.boxes = boxes  # filename -> ground-truth box (seconds, Hz), where the data has one

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        wave = load_clip(clip_path(self.root, row), self.sample_rate, self.duration)
        if self.train_noise is not None:
            # drawn from torch's generator: new noise every epoch, reproducible under seed_everything
            rng = random.Random(int(torch.randint(0, 2**31 - 1, (1,))))
            wave = self.train_noise(wave, rng, self.sample_rate)
        item = {"waveform": wave, "target": row["target"], "filename": row["filename"],
                "scenario": self.scenario, "index": i}
        if isinstance(self.test_noise, Mixture):
            item.update(self.test_noise(i, wave))
        elif self.test_noise is not None:
            item["waveform"] = self.test_noise(wave)
        if self.boxes is not None:
            item["box"] = torch.tensor(self.boxes[row["filename"]], dtype=torch.float32)  # float64 fails on MPS
        return item


class ESC50DataModule(L.LightningDataModule):
    """ESC-50 in its own layout (``audio/*.wav``, ``meta/esc50.csv``) under ``root``.

    Args:
        root: dataset folder.
        download: fetch and extract the archive from ``url`` when ``root`` has no dataset.
        synthetic: write the built-in synthetic dataset to ``root`` when it has none (quickstart).
        train_folds, val_folds, test_folds: the split by the metadata's fold column.
        test_noise: ``white``, ``room``, ``horse`` (files in ``noise_dir``) or a path to any audio file;
            mixed into every validation/test clip as the study did. None for clean data. ``mixture``: every
            test clip (validation stays clean) over a clip of another class of the test folds at
            ``mixture_snr`` dB, its partner drawn with ``mixture_seed``; the batch carries both scaled parts,
            whose ideal binary mask is the ground truth of the localisation metrics.
        train_noise: random background augmentation for training clips.
        num_workers: loader processes; None: Lightning's suggestion for the machine (its CPUs per device, less
            one). Each worker draws ``train_noise`` from its own seed: give a number to repeat such a fit exactly
            on another machine.
    """

    def __init__(self, root: str = "data/ESC-50", download: bool = False, url: str = ESC50_URL,
                 synthetic: bool = False, train_folds: list[int] = [1, 2, 3], val_folds: list[int] = [4],
                 test_folds: list[int] = [5], batch_size: int = 32, num_workers: Optional[int] = None,
                 sample_rate: int = SAMPLE_RATE, duration: float = DURATION, test_noise: Optional[str] = None,
                 noise_dir: str = "data/noises", train_noise: Optional[TrainNoise] = None,
                 seed: int = 0, mixture_snr: float = 0.0, mixture_seed: int = 0):
        super().__init__()
        # NaN passes no comparison, so nothing downstream would stop it: a NaN SNR gives NaN mixes and metrics
        for name, value in (("duration", duration), ("mixture_snr", mixture_snr)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageValueError(f"--data.{name} must be a finite number, got {value!r}")
        if duration <= 0:
            raise UsageValueError(f"--data.duration must be above 0 seconds, got {duration!r}")
        if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                        or num_workers < 0):
            raise UsageValueError(f"--data.num_workers must be a whole number of at least 0 (or null: as many as "
                                  f"the machine's CPUs per device, less one), got {num_workers!r}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.train_noise = train_noise
        self.rows: list[dict] | None = None
        self._test_noise: ScenarioNoise | None = None
        self.train_set = self.val_set = self.test_set = None

    # -- data on disk ---------------------------------------------------------------------------
    def _check_duration(self) -> None:
        """Clips of another length than ``duration`` are cut or padded: say so once. A cut can lose the planted
        signatures of synthetic data, which can be written again at this length; a real dataset cannot."""
        first = next((self.root / "audio").glob("*.wav"), None)
        if first is None:
            return
        info = soundfile.info(str(first))
        seconds = info.frames / info.samplerate
        if abs(seconds - self.hparams.duration) > 0.01:
            advice = ("delete the folder to write the synthetic data again at this length" if is_synthetic(self.root)
                      else f"--data.duration {seconds:g} uses them whole")
            log.warning("%s holds %.2f s clips but --data.duration is %.2f s: every clip is cut or padded to that "
                        "length (%s)", self.root, seconds, self.hparams.duration, advice)

    def _has_dataset(self) -> bool:
        return (self.root / "meta" / "esc50.csv").is_file()

    def prepare_data(self) -> None:
        if self._has_dataset():
            self._check_duration()
            return
        if self.hparams.synthetic:
            write_synthetic_esc50(self.root, sample_rate=self.hparams.sample_rate, duration=self.hparams.duration,
                                  seed=self.hparams.seed)
            # said aloud: a mistyped --data.root would otherwise train on made-up data without a word
            print(f"no dataset at {self.root}, and --data.synthetic is true: wrote the built-in synthetic dataset "
                  f"there (10 classes x 40 clips); point --data.root at an ESC-50 folder to use real data")
            return
        if not self.hparams.download:
            raise UsageFileNotFoundError(self._missing_message())
        if self.root.exists() and any(self.root.iterdir()):
            raise UsageFileExistsError(f"{self.root} exists but holds no meta/esc50.csv; move it away or point "
                                       f"--data.root at the ESC-50 folder")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        archive = self.root.parent / "ESC-50-master.zip"
        try:
            download(self.hparams.url, archive, manual_hint=self._missing_message(short=True))
            extract_zip_into(archive, self.root, "meta/esc50.csv")
        except DownloadError:
            archive.unlink(missing_ok=True)
            raise
        archive.unlink(missing_ok=True)

    def _missing_message(self, short: bool = False) -> str:
        place = (f"place ESC-50 at {self.root} (so that {self.root}/meta/esc50.csv and {self.root}/audio/ "
                 f"exist; the archive is {self.hparams.url})")
        if short:
            return place
        return (f"no ESC-50 dataset at {self.root} (missing {self.root / 'meta' / 'esc50.csv'}). Either {place}, "
                f"or let the tool fetch it with --data.download true (needs network; about 600 MB).")

    def _load_rows(self) -> list[dict]:
        if not self._has_dataset():
            raise UsageFileNotFoundError(self._missing_message())
        rows = read_metadata(self.root)
        known = sorted({r["fold"] for r in rows})
        for name in ("train_folds", "val_folds", "test_folds"):
            bad = [f for f in getattr(self.hparams, name) if f not in known]
            if bad:
                raise UsageValueError(f"--data.{name}: unknown fold(s) {bad}; {self.root / 'meta' / 'esc50.csv'} "
                                      f"has folds {known}")
        absent = [r["filename"] for r in rows if not (self.root / "audio" / r["filename"]).is_file()]
        if absent:
            raise UsageFileNotFoundError(f"{len(absent)} clip(s) listed in {self.root / 'meta' / 'esc50.csv'} are not in "
                                         f"{self.root / 'audio'}: {', '.join(absent[:5])}"
                                         f"{' ...' if len(absent) > 5 else ''}. Restore them or remove their rows.")
        return rows

    def setup(self, stage: str | None = None) -> None:
        if self.rows is None:
            self.rows = self._load_rows()
        hp = self.hparams
        mixture = hp.test_noise == MIXTURE
        if hp.test_noise and not mixture and self._test_noise is None:
            self._test_noise = ScenarioNoise(hp.test_noise, hp.noise_dir, hp.sample_rate, hp.duration)
        boxes = self._boxes()
        self.train_set = self._dataset(hp.train_folds, train_noise=self.train_noise)
        self.val_set = self._dataset(hp.val_folds, test_noise=self._test_noise, boxes=boxes)
        test_noise = self._test_noise
        if mixture:
            rows = [r for r in self.rows if r["fold"] in hp.test_folds]
            test_noise = Mixture(self.root, rows, hp.mixture_snr, hp.mixture_seed, hp.sample_rate, hp.duration)
        self.test_set = self._dataset(hp.test_folds, test_noise=test_noise, boxes=boxes)

    def _boxes(self) -> dict | None:
        """The synthetic data's ground-truth boxes (``meta/signatures.csv``) of every clip, if the file is there."""
        path = self.root / "meta" / "signatures.csv"
        if not path.is_file():
            return None
        boxes = read_signatures(self.root)
        absent = [r["filename"] for r in self.rows if r["filename"] not in boxes]
        if absent:
            raise UsageValueError(f"{path} has no box for {len(absent)} clip(s) of meta/esc50.csv ({', '.join(absent[:3])}"
                                  f"{' ...' if len(absent) > 3 else ''}); add their rows or remove the file")
        return boxes

    def _dataset(self, folds: list[int], **kw) -> ClipDataset:
        rows = [r for r in self.rows if r["fold"] in folds]
        return ClipDataset(self.root, rows, self.hparams.sample_rate, self.hparams.duration, **kw)

    @property
    def num_classes(self) -> int:
        rows = self.rows if self.rows is not None else self._load_rows()
        return max(r["target"] for r in rows) + 1

    @property
    def class_names(self) -> list[str]:
        """The name of each class by its number (ESC-50's ``category``), for the outputs."""
        rows = self.rows if self.rows is not None else self._load_rows()
        names = {r["target"]: r["category"] for r in rows}
        return [names.get(t, str(t)) for t in range(self.num_classes)]

    @property
    def classes_source(self) -> str:
        """Where the class count comes from, for the model's check of it."""
        return f"targets 0 to {self.num_classes - 1} in its meta/esc50.csv"

    # -- loaders --------------------------------------------------------------------------------
    def _loader(self, ds: ClipDataset, shuffle: bool) -> DataLoader:
        sampler = None
        trainer = self.trainer
        if not shuffle and trainer is not None and trainer.world_size > 1:
            # Lightning's default sampler repeats clips to even out the ranks; every clip exactly once instead
            sampler = UnrepeatedDistributedSampler(ds, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                                   shuffle=False)
        workers = self.hparams.num_workers
        if workers is None:  # Lightning's own advice for this machine: its CPUs per device, less one
            workers = suggested_max_num_workers(trainer.num_devices if trainer is not None else 1)
        return DataLoader(ds, batch_size=self.hparams.batch_size, shuffle=shuffle, sampler=sampler,
                          num_workers=workers, persistent_workers=workers > 0, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def background(self, per_class: int = 2, max_clips: int = 100) -> dict:
        """The first ``per_class`` training clips of every class (clean), at most ``max_clips``: SHAP's background."""
        if self.rows is None:
            self.setup("test")
        by_class = defaultdict(list)
        for r in self.rows:
            if r["fold"] in self.hparams.train_folds and len(by_class[r["target"]]) < per_class:
                by_class[r["target"]].append(r)
        rows = [r for t in sorted(by_class) for r in by_class[t]][:max_clips]
        if not rows:
            raise UsageValueError(f"no training clips in folds {self.hparams.train_folds} for the SHAP background")
        ds = ClipDataset(self.root, rows, self.hparams.sample_rate, self.hparams.duration)
        items = [ds[i] for i in range(len(ds))]
        return {"waveform": torch.stack([it["waveform"] for it in items]),
                "target": torch.tensor([it["target"] for it in items]),
                "filename": [it["filename"] for it in items]}
