"""Any labelled audio folder as a data module: a folder per class, or a CSV of files, labels and folds.

Every clip, at any sample rate, channel count and length, becomes what the models take: mono, resampled to
``sample_rate``, peak-normalised, cut or padded to ``duration`` (``audio.load_clip``). Everything else is
ESC-50's data module: folds for training, validation and test, the noise and mixture scenarios, the SHAP
background and the loaders (``ESC50DataModule``, which this extends). The classes are the distinct labels,
numbered in order (as numbers when every label is a whole number, else alphabetically); their names go into
the outputs.

UrbanSound8K (``metadata/UrbanSound8K.csv``, its files in ``audio/fold<N>/``, ten folds), for example::

    --data.class_path datamodules.AudioFolderDataModule --data.root data/UrbanSound8K
    --data.csv metadata/UrbanSound8K.csv --data.file_column slice_file_name --data.label_column class
    --data.audio_dir 'audio/fold{fold}' --data.train_folds [1,2,3,4,5,6,7,8] --data.val_folds [9]
    --data.test_folds [10] --data.duration 4
"""
from __future__ import annotations

import csv as csvlib
from pathlib import Path
from typing import Optional, Union

import soundfile

from audio_xai.errors import UsageFileNotFoundError, UsageValueError
from .audio import DURATION, SAMPLE_RATE
from .esc50 import ESC50DataModule
from .noise import TrainNoise

Fold = Union[int, str]


def audio_extensions() -> set[str]:
    """File endings of the formats soundfile reads here (wav, flac, ogg, ...)."""
    return {f".{k.lower()}" for k in soundfile.available_formats()} | {".aif"}


def class_order(labels: set[str]) -> list[str]:
    """Labels in class-number order: as numbers when every one is a whole number (10 after 9), else as text."""
    if all(label.strip().lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def round_robin_folds(rows: list[dict], folds: int) -> None:
    """Give every row without a fold one of 1..``folds``: each class's files in name order take the folds in
    turn, so every fold gets a share of every class, whatever order the files were listed in."""
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    for group in by_label.values():
        for i, r in enumerate(sorted(group, key=lambda r: r["filename"])):
            r["fold"] = str(i % folds + 1)


class AudioFolderDataModule(ESC50DataModule):
    """Labelled audio under ``root``, in one of two forms.

    - A folder per class (``csv`` unset): ``root/<class>/<file>`` (any depth below the class folder), every
      file soundfile reads; the folds 1..``folds`` are dealt out in turn within each class.
    - A CSV (``csv``, relative to ``root``): one row per clip, with the file (``file_column``, relative to
      ``root/audio_dir``, which may name the row's columns: ``audio/fold{fold}``), its label
      (``label_column``) and its fold or split (``fold_column``: numbers or names such as train/val/test;
      unset: dealt out as for folders). ``name_column`` gives the classes' names where the labels are numbers.

    Args:
        root: the dataset folder.
        csv, file_column, label_column, name_column, fold_column, audio_dir: the CSV form (above).
        folds: how many folds to deal the clips into where the data gives none.
        train_folds, val_folds, test_folds: the folds (or split names) of each part.
        batch_size, num_workers, sample_rate, duration, test_noise, noise_dir, train_noise, mixture_snr,
            mixture_seed: as ``ESC50DataModule``'s.
    """

    def __init__(self, root: str, csv: Optional[str] = None, file_column: str = "filename",
                 label_column: str = "label", name_column: Optional[str] = None, fold_column: Optional[str] = "fold",
                 audio_dir: str = "", folds: int = 5, train_folds: list[Fold] = [1, 2, 3],
                 val_folds: list[Fold] = [4], test_folds: list[Fold] = [5], batch_size: int = 32,
                 num_workers: Optional[int] = None, sample_rate: int = SAMPLE_RATE, duration: float = DURATION,
                 test_noise: Optional[str] = None, noise_dir: str = "data/noises",
                 train_noise: Optional[TrainNoise] = None, mixture_snr: float = 0.0, mixture_seed: int = 0):
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
            raise UsageValueError(f"--data.folds must be a whole number of at least 1, got {folds!r}")
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, sample_rate=sample_rate,
                         duration=duration, test_noise=test_noise, noise_dir=noise_dir, train_noise=train_noise,
                         mixture_snr=mixture_snr, mixture_seed=mixture_seed)
        self.save_hyperparameters()  # this module's arguments, not ESC-50's download options
        # folds compare as text: a CSV holds text, and a split column holds names
        for name in ("train_folds", "val_folds", "test_folds"):
            self.hparams[name] = [str(f) for f in self.hparams[name]]
        self._classes: list[str] | None = None
        self._names: dict[str, str] = {}

    # -- data on disk ---------------------------------------------------------------------------------
    @property
    def _csv(self) -> Optional[Path]:
        return self.root / self.hparams.csv if self.hparams.csv else None

    def _has_dataset(self) -> bool:
        return self._csv.is_file() if self._csv else self.root.is_dir()

    def _missing_message(self, short: bool = False) -> str:
        if self._csv:
            return f"no metadata CSV at {self._csv} (--data.root {self.root}, --data.csv {self.hparams.csv})"
        return f"no audio folder at {self.root} (--data.root): it should hold a folder of audio files per class"

    def prepare_data(self) -> None:
        if not self._has_dataset():
            raise UsageFileNotFoundError(self._missing_message())

    def _load_rows(self) -> list[dict]:
        if not self._has_dataset():
            raise UsageFileNotFoundError(self._missing_message())
        rows = self._csv_rows() if self._csv else self._folder_rows()
        if not rows:
            raise UsageValueError(f"{self._csv or self.root} lists no audio clips"
                                  + ("" if self._csv else f" (files ending in {', '.join(sorted(audio_extensions()))}"
                                                          f" inside a folder per class)"))
        if not (self._csv and self.hparams.fold_column):
            round_robin_folds(rows, self.hparams.folds)
        self._classes = class_order({r["label"] for r in rows})
        if len(self._classes) < 2:
            where = f"column {self.hparams.label_column!r} of {self._csv}" if self._csv else f"{self.root}"
            raise UsageValueError(f"{where} holds one class ({self._classes[0]!r}): a classifier tells at least two "
                                  "classes apart; add the clips of another class "
                                  + ("(rows with another label)" if self._csv else "(a folder of its own)"))
        number = {label: i for i, label in enumerate(self._classes)}
        for r in rows:
            r["target"], r["category"] = number[r["label"]], self._names.get(r["label"], r["label"])
        known = sorted({r["fold"] for r in rows}, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
        for name in ("train_folds", "val_folds", "test_folds"):
            bad = [f for f in self.hparams[name] if f not in known]
            if bad:
                raise UsageValueError(f"--data.{name}: unknown fold(s) {bad}; {self._csv or self.root} has folds "
                                      f"{known}" + (f" (column {self.hparams.fold_column!r})" if self._csv and
                                                    self.hparams.fold_column else ""))
        absent = [r["path"] for r in rows if not Path(r["path"]).is_file()]
        if absent:
            raise UsageFileNotFoundError(f"{len(absent)} clip(s) listed in {self._csv} are missing: "
                                         f"{', '.join(map(str, absent[:5]))}{' ...' if len(absent) > 5 else ''}. "
                                         f"Check --data.audio_dir ({self.hparams.audio_dir!r}) and "
                                         f"--data.file_column, or remove their rows.")
        return rows

    def _folder_rows(self) -> list[dict]:
        endings = audio_extensions()
        rows = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in endings):
                rows.append({"filename": path.relative_to(self.root).as_posix(), "label": folder.name,
                             "path": str(path)})
        return rows

    def _csv_rows(self) -> list[dict]:
        hp, path = self.hparams, self._csv
        with open(path, newline="") as f:
            reader = csvlib.DictReader(f)
            columns = reader.fieldnames or []
            wanted = {"--data.file_column": hp.file_column, "--data.label_column": hp.label_column,
                      "--data.name_column": hp.name_column, "--data.fold_column": hp.fold_column}
            missing = [f"{option} {column!r}" for option, column in wanted.items() if column and column not in columns]
            if missing:
                raise UsageValueError(f"{path} has no column {', '.join(missing)}; its columns: {', '.join(columns)}")
            records = list(reader)
        rows, seen = [], {}
        for line, r in enumerate(records, start=2):
            name, label = r[hp.file_column], r[hp.label_column]
            if not name or label in (None, ""):
                raise UsageValueError(f"{path}, line {line}: empty {'file' if not name else 'label'}; fill it or "
                                      f"remove the row")
            if name in seen:
                raise UsageValueError(f"{path}, lines {seen[name]} and {line}: the file {name!r} is listed twice; "
                                      f"each clip once (its name identifies it in the outputs)")
            seen[name] = line
            try:
                folder = self.root / hp.audio_dir.format(**r)
            except KeyError as err:
                raise UsageValueError(f"--data.audio_dir {hp.audio_dir!r}: {err.args[0]!r} is not a column of {path} "
                                      f"(its columns: {', '.join(columns)})") from None
            except (IndexError, ValueError) as err:
                raise UsageValueError(f"--data.audio_dir {hp.audio_dir!r} is not a folder with {{column}} names in it "
                                      f"({err})") from None
            row = {"filename": name, "label": label.strip(), "path": str(folder / name)}
            if hp.fold_column:
                row["fold"] = r[hp.fold_column].strip()
            if hp.name_column:
                given = self._names.setdefault(row["label"], r[hp.name_column])
                if given != r[hp.name_column]:
                    raise UsageValueError(f"{path}, line {line}: label {row['label']!r} is named "
                                          f"{r[hp.name_column]!r} here and {given!r} before; --data.name_column "
                                          f"{hp.name_column!r} must give one name per label")
            rows.append(row)
        return rows

    def _boxes(self) -> None:
        return None  # no planted ground truth; the mixture scenario makes one

    # -- classes ------------------------------------------------------------------------------------------
    def _class_list(self) -> list[str]:
        if self._classes is None:
            self.rows = self._load_rows() if self.rows is None else self.rows
        return self._classes

    @property
    def num_classes(self) -> int:
        return len(self._class_list())

    @property
    def class_names(self) -> list[str]:
        return [self._names.get(label, label) for label in self._class_list()]

    @property
    def classes_source(self) -> str:
        if self._csv:
            return f"the distinct values of column {self.hparams.label_column!r} of {self._csv}"
        return f"class folders in {self.root}"
