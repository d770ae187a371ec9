"""The audio-folder data module (datamodules/folder.py): both forms, any rate, channel count and length made
into the models' clips (checked against sine waves in closed form), folds and classes from the data, clear
errors, and the scenarios, background and the model's class-count check that ESC-50's data module has."""
import csv
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from datamodules import AudioFolderDataModule
from audio_xai.errors import UsageError


def tone(freq: float, seconds: float, rate: int, channels: int = 1, gains=(1.0, 0.5)) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    return wave if channels == 1 else np.stack([g * wave for g in gains[:channels]], axis=1)


def write(path, data: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.astype(np.float32), rate, subtype="FLOAT" if path.suffix == ".wav" else None)


def folder_dataset(root, per_class: int = 5):
    """Three classes, each clip at its own rate, channel count and length."""
    rates, lengths = (8000, 22050, 44100, 48000, 16000), (0.6, 1.3, 1.0, 2.0, 0.9)
    for c, (label, freq) in enumerate((("bird", 700.0), ("frog", 300.0), ("owl", 1500.0))):
        for i in range(per_class):
            write(root / label / ("deep" if i == 2 else "") / f"{label}{i}.wav",
                  tone(freq, lengths[i], rates[i], channels=1 + (i + c) % 2), rates[i])
    return root


def test_the_folder_form_reads_every_class_folder_with_folds_dealt_per_class(tmp_path):
    root = folder_dataset(tmp_path / "calls")
    (root / "notes.txt").write_text("not a class")  # a file beside the class folders is no class
    dm = AudioFolderDataModule(root=str(root), sample_rate=16000, duration=1.0, batch_size=8)
    dm.setup("fit")
    assert dm.class_names == ["bird", "frog", "owl"] and dm.num_classes == 3
    # five clips per class over five folds: one of each class in every fold; train is folds 1-3
    assert len(dm.train_set) == 9 and len(dm.val_set) == 3 and len(dm.test_set) == 3
    assert sorted(r["target"] for r in dm.test_set.rows) == [0, 1, 2]
    names = {r["filename"] for r in dm.rows}
    assert "bird/deep/bird2.wav" in names and len(names) == 15  # the clip id is the path under root
    batch = next(iter(dm.train_dataloader()))
    assert batch["waveform"].shape == (8, 16000)


@pytest.mark.parametrize("rate, channels, seconds", [(44100, 2, 1.7), (8000, 1, 0.4), (22050, 2, 1.0)])
def test_clips_are_resampled_mixed_down_and_cut_or_padded(tmp_path, rate, channels, seconds):
    """A 440 Hz sine at any rate, channel count and length comes out as the same sine at 16 kHz, 1 s long:
    zeros after the recording ends, the channels averaged, peak 1."""
    root = tmp_path / "d"
    write(root / "a" / "x.wav", tone(440, seconds, rate, channels), rate)
    write(root / "b" / "y.wav", tone(440, 1.0, 16000), 16000)
    dm = AudioFolderDataModule(root=str(root), sample_rate=16000, duration=1.0, folds=1, train_folds=[1],
                               val_folds=[1], test_folds=[1])
    dm.setup("test")
    wave = dm.test_set[[r["filename"] for r in dm.test_set.rows].index("a/x.wav")]["waveform"].double()
    assert wave.shape == (16000,)
    t = np.arange(16000) / 16000
    expected = np.sin(2 * np.pi * 440 * t)  # 0.5 and 0.25 amplitude channels: mean 0.375, then peak-normalised
    n = int(min(seconds, 1.0) * 16000)
    inner = slice(200, n - 200)  # the resampler's filter rings at the recording's edges
    assert np.abs(wave.numpy()[inner] - expected[inner]).max() < 0.02
    assert wave[n + 50:].abs().max() == 0 if seconds < 1 else True
    assert wave.abs().max() == pytest.approx(1.0, abs=1e-6)


def test_channels_are_averaged_not_picked(tmp_path):
    root = tmp_path / "d"
    write(root / "a" / "x.wav", tone(440, 1.0, 16000, channels=2, gains=(1.0, -1.0)), 16000)  # they cancel
    write(root / "b" / "y.wav", tone(440, 1.0, 16000), 16000)
    dm = AudioFolderDataModule(root=str(root), sample_rate=16000, duration=1.0, folds=1, train_folds=[1],
                               val_folds=[1], test_folds=[1])
    dm.setup("test")
    assert dm.test_set[0]["waveform"].abs().max() == 0


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def urban_layout(root):
    """UrbanSound8K's layout in small: metadata/UrbanSound8K.csv, audio/fold<N>/<file>, numeric classID."""
    rows = []
    for fold in (1, 2, 3):
        for cid, name in ((10, "siren"), (2, "dog_bark"), (1, "car_horn")):
            file = f"{fold}{cid}-0-0.wav"
            write(root / "audio" / f"fold{fold}" / file, tone(200 * (1 + cid % 5), 0.5, 44100, 2), 44100)
            rows.append([file, 1234, 0.0, 0.5, 1, fold, cid, name])
    write_csv(root / "metadata" / "UrbanSound8K.csv",
              ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], rows)
    return root


def test_the_csv_form_reads_urbansound8ks_layout(tmp_path):
    root = urban_layout(tmp_path / "UrbanSound8K")
    dm = AudioFolderDataModule(root=str(root), csv="metadata/UrbanSound8K.csv", file_column="slice_file_name",
                               label_column="classID", name_column="class", audio_dir="audio/fold{fold}",
                               train_folds=[1], val_folds=[2], test_folds=[3], sample_rate=16000, duration=0.5)
    dm.setup("fit")
    # numeric labels are numbered as numbers (10 after 2), and named by the name column
    assert dm.class_names == ["car_horn", "dog_bark", "siren"]
    rows = {r["filename"]: r for r in dm.rows}
    assert rows["310-0-0.wav"]["target"] == 2 and rows["31-0-0.wav"]["fold"] == "3"
    assert [len(s) for s in (dm.train_set, dm.val_set, dm.test_set)] == [3, 3, 3]
    assert {r["filename"][0] for r in dm.test_set.rows} == {"3"}
    assert dm.test_set[0]["waveform"].shape == (8000,)


def test_a_split_column_of_names_and_text_labels(tmp_path):
    root = tmp_path / "d"
    rows = []
    for i, (label, split) in enumerate([("b", "train"), ("a", "train"), ("b", "val"), ("a", "test"), ("b", "test")]):
        write(root / "clips" / f"{i}.flac", tone(300 + 100 * i, 0.3, 16000), 16000)
        rows.append([f"{i}.flac", label, split])
    write_csv(root / "labels.csv", ["file", "label", "split"], rows)
    dm = AudioFolderDataModule(root=str(root), csv="labels.csv", file_column="file", fold_column="split",
                               audio_dir="clips", train_folds=["train"], val_folds=["val"], test_folds=["test"],
                               sample_rate=16000, duration=0.3)
    dm.setup("fit")
    assert dm.class_names == ["a", "b"]
    assert sorted((r["filename"], r["target"]) for r in dm.test_set.rows) == [("3.flac", 0), ("4.flac", 1)]


@pytest.mark.parametrize("change, message", [
    (dict(label_column="species"), r"no column --data.label_column 'species'; its columns: file, label, split"),
    (dict(test_folds=["holdout"]), r"--data.test_folds: unknown fold\(s\) \['holdout'\].*has folds \['test', 'train'"),
    (dict(audio_dir="elsewhere"),
     r"2 clip\(s\) listed in .*labels.csv are missing: .*elsewhere/0.wav.*--data.audio_dir"),
    (dict(audio_dir="clips/{fold}"), r"--data.audio_dir 'clips/\{fold\}': 'fold' is not a column"),
    (dict(csv="nothing.csv"), r"no metadata CSV at .*nothing.csv"),
])
def test_bad_csv_options_are_named(tmp_path, change, message):
    root = tmp_path / "d"
    for i in range(2):
        write(root / "clips" / f"{i}.wav", tone(300, 0.2, 16000), 16000)
    write_csv(root / "labels.csv", ["file", "label", "split"], [["0.wav", "a", "train"], ["1.wav", "b", "test"]])
    options = dict(root=str(root), csv="labels.csv", file_column="file", fold_column="split", audio_dir="clips",
                   train_folds=["train"], val_folds=["test"], test_folds=["test"], sample_rate=16000, duration=0.2)
    with pytest.raises(UsageError, match=message):
        dm = AudioFolderDataModule(**{**options, **change})
        dm.prepare_data()
        dm.setup("fit")


def test_a_file_listed_twice_is_refused(tmp_path):
    root = tmp_path / "d"
    write(root / "0.wav", tone(300, 0.2, 16000), 16000)
    write_csv(root / "m.csv", ["filename", "label", "fold"], [["0.wav", "a", 1], ["0.wav", "b", 2]])
    with pytest.raises(UsageError, match=r"lines 2 and 3: the file '0.wav' is listed twice"):
        AudioFolderDataModule(root=str(root), csv="m.csv").setup("fit")


def test_the_model_checks_its_class_count_against_the_folder_data(tmp_path):
    from lightning_modules import AudioClassifier, SpectrogramTransformer
    root = folder_dataset(tmp_path / "calls")
    dm = AudioFolderDataModule(root=str(root), sample_rate=32000, duration=1.0)
    for model in (AudioClassifier(width=4, num_classes=5), SpectrogramTransformer(num_classes=5, dim=8, heads=2)):
        model._trainer = SimpleNamespace(datamodule=dm)
        with pytest.raises(UsageError, match=rf"--model.num_classes is 5 but the data at --data.root {root} has 3 "
                                             rf"\(class folders in {root}\); pass --model.num_classes 3"):
            model.setup("fit")
        with pytest.raises(UsageError, match=r"the model was trained for 5 classes .* has 3"):
            model.setup("test")
    fitting = AudioClassifier(width=4, num_classes=3)
    fitting._trainer = SimpleNamespace(datamodule=dm)
    fitting.setup("fit")  # agrees: no error


def test_scenarios_and_background_work_on_folder_data(tmp_path, noise_dir):
    root = folder_dataset(tmp_path / "calls")
    common = dict(root=str(root), sample_rate=16000, duration=1.0, batch_size=3)
    mixed = AudioFolderDataModule(**common, test_noise="mixture")
    mixed.setup("test")
    batch = next(iter(mixed.test_dataloader()))
    assert batch["scenario"] == ["mixture"] * 3
    assert torch.allclose(batch["target_part"] + batch["distractor_part"], batch["waveform"], atol=1e-6)
    by_name = {r["filename"]: r["target"] for r in mixed.rows}
    assert all(by_name[d] != by_name[n] for d, n in zip(batch["distractor"], batch["filename"]))
    noisy = AudioFolderDataModule(**common, test_noise="white", noise_dir=str(noise_dir))
    noisy.setup("test")
    assert next(iter(noisy.test_dataloader()))["scenario"] == ["white"] * 3
    background = noisy.background(per_class=2, max_clips=100)
    assert background["waveform"].shape == (6, 16000) and sorted(background["target"].tolist()) == [0, 0, 1, 1, 2, 2]
