import csv
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from datamodules import ESC50DataModule, read_signatures, write_synthetic_esc50
from audio_xai.errors import UsageValueError
from datamodules.synthetic import ESC50_COLUMNS, class_bands
from tests.helpers import ROOT, run_here


def copy_mini(mini_root, tmp_path):
    root = tmp_path / "esc"
    shutil.copytree(mini_root, root)
    return root


def test_folds_split_the_real_clips(mini_root):
    dm = ESC50DataModule(root=str(mini_root), batch_size=4)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (6, 2, 2)
    batch = next(iter(dm.test_dataloader()))
    assert batch["waveform"].shape == (2, 160000)
    assert all(name.startswith("4-") for name in batch["filename"])
    assert batch["scenario"] == ["clean", "clean"]
    with open(mini_root / "meta" / "esc50.csv") as f:
        folds = {r["filename"]: int(r["fold"]) for r in csv.DictReader(f)}
    assert {folds[n] for n in batch["filename"]} == {5}


def test_scenario_name_travels_with_the_batch(mini_root, noise_dir):
    dm = ESC50DataModule(root=str(mini_root), batch_size=2, test_noise="white", noise_dir=str(noise_dir))
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["scenario"] == ["white", "white"]
    clean = ESC50DataModule(root=str(mini_root), batch_size=2)
    clean.setup("test")
    assert not torch.allclose(batch["waveform"], next(iter(clean.test_dataloader()))["waveform"])


def test_unknown_fold_is_named(mini_root):
    dm = ESC50DataModule(root=str(mini_root), test_folds=[7])
    with pytest.raises(ValueError, match=r"test_folds: unknown fold\(s\) \[7\]"):
        dm.setup("test")


def test_absent_files_are_listed(mini_root, tmp_path):
    root = copy_mini(mini_root, tmp_path)
    gone = sorted((root / "audio").glob("*.wav"))[:2]
    for f in gone:
        f.unlink()
    with pytest.raises(FileNotFoundError, match=gone[0].name):
        ESC50DataModule(root=str(root)).setup("fit")


def test_missing_dataset_says_both_ways_to_fix_it(tmp_path):
    dm = ESC50DataModule(root=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="--data.download true") as err:
        dm.prepare_data()
    assert "place ESC-50 at" in str(err.value)


def test_wrong_layout_is_explained(tmp_path):
    root = tmp_path / "esc"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("name,label\nx.wav,1\n")
    with pytest.raises(ValueError, match="lacks the column"):
        ESC50DataModule(root=str(root)).setup("fit")


def test_unreadable_clip_is_named_when_loaded(mini_root, tmp_path):
    root = copy_mini(mini_root, tmp_path)
    dm = ESC50DataModule(root=str(root))
    dm.setup("test")
    victim = root / "audio" / dm.test_set.rows[0]["filename"]
    victim.chmod(0o644)
    victim.write_text("not audio")
    with pytest.raises(ValueError, match=victim.name):
        dm.test_set[0]


def test_synthetic_dataset_layout_and_ground_truth(synthetic_root):
    with open(synthetic_root / "meta" / "esc50.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ESC50_COLUMNS
        rows = list(reader)
    assert {int(r["fold"]) for r in rows} == {1, 2, 3, 4, 5}
    assert len({r["target"] for r in rows}) == 10
    boxes = read_signatures(synthetic_root)
    assert set(boxes) == {r["filename"] for r in rows}
    bands = class_bands(10)
    # the planted signature really is where the box says: most of the in-band energy lies in the box
    for r in rows[::37]:
        wave, sr = sf.read(str(synthetic_root / "audio" / r["filename"]))
        assert sr == 32000 and len(wave) == 160000
        t0, t1, f0, f1 = boxes[r["filename"]]
        assert (f0, f1) == pytest.approx(tuple(bands[int(r["target"])]), abs=0.1)
        spec = np.abs(np.fft.rfft(wave.reshape(-1, 3200), axis=1)) ** 2  # 0.1 s frames
        freqs = np.fft.rfftfreq(3200, 1 / 32000)
        band = spec[:, (freqs >= f0) & (freqs <= f1)].sum(1)
        frames = np.arange(50) * 0.1 + 0.05
        inside = (frames >= t0 - 0.1) & (frames <= t1 + 0.1)
        assert band[inside].sum() > 0.9 * band.sum()


def test_synthetic_writer_is_seeded(tmp_path):
    a = write_synthetic_esc50(tmp_path / "a", num_classes=3, clips_per_fold=1, seed=5)
    b = write_synthetic_esc50(tmp_path / "b", num_classes=3, clips_per_fold=1, seed=5)
    for f in sorted((a / "audio").iterdir()):
        assert f.read_bytes() == (b / "audio" / f.name).read_bytes()
    assert (a / "meta" / "signatures.csv").read_text() == (b / "meta" / "signatures.csv").read_text()


def test_synthetic_data_is_created_on_first_use(tmp_path):
    dm = ESC50DataModule(root=str(tmp_path / "quick"), synthetic=True, batch_size=8)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 10 and len(dm.train_set) == 240


def test_synthetic_data_is_announced_when_written(tmp_path, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    dm = ESC50DataModule(root=str(root), synthetic=True)
    dm.prepare_data()
    said = capsys.readouterr().out
    assert f"no dataset at {root}" in said and "synthetic dataset" in said
    assert (root / "meta" / "esc50.csv").is_file()
    dm.prepare_data()  # the dataset is there now: nothing to say
    assert capsys.readouterr().out == ""


def test_synthetic_data_of_another_clip_length_is_reused_with_a_warning(tmp_path, caplog):
    root = write_synthetic_esc50(tmp_path / "short", num_classes=2, clips_per_fold=1, duration=2.5)
    same = ESC50DataModule(root=str(root), synthetic=True, duration=2.5)
    with caplog.at_level("WARNING"):
        same.prepare_data()
    assert not caplog.records
    longer = ESC50DataModule(root=str(root), synthetic=True, duration=5.0)
    with caplog.at_level("WARNING"):
        longer.prepare_data()
    said = caplog.text
    assert str(root) in said and "2.50 s clips" in said and "--data.duration is 5.00 s" in said
    assert "delete the folder to write the synthetic data again" in said
    assert (root / "meta" / "esc50.csv").is_file()  # reused, not rewritten


@pytest.mark.parametrize("synthetic", [True, False])
def test_a_real_dataset_of_another_clip_length_is_cut_and_never_called_synthetic(tmp_path, caplog, synthetic):
    """A folder the tool did not write (here two 5 s clips in the ESC-50 layout) is not advised deleted."""
    root = tmp_path / "real"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = [[f"1-{i}-A-{i}.wav", 1, i, f"class{i}", "False", f"{i}.wav", "A"] for i in range(2)]
    for row in rows:
        sf.write(root / "audio" / row[0], np.zeros(5 * 32000, dtype=np.float32), 32000)
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        csv.writer(f).writerows([ESC50_COLUMNS, *rows])
    dm = ESC50DataModule(root=str(root), synthetic=synthetic, duration=2.5)
    with caplog.at_level("WARNING"):
        dm.prepare_data()
    assert len(caplog.records) == 1
    said = caplog.records[0].getMessage()
    assert "5.00 s clips but --data.duration is 2.50 s: every clip is cut or padded" in said
    assert "--data.duration 5 uses them whole" in said and "delete" not in said and "synthetic" not in said


@pytest.mark.parametrize("option, value", [("mixture_snr", float("nan")), ("mixture_snr", float("inf")),
                                           ("mixture_snr", True), ("duration", float("nan")), ("duration", 0)])
def test_a_data_number_that_is_not_finite_or_not_a_number_is_refused(tmp_path, option, value):
    with pytest.raises(UsageValueError, match=rf"^--data.{option} must be"):
        ESC50DataModule(root=str(tmp_path), **{option: value})


def test_a_nan_snr_from_yaml_is_refused_on_the_command_line(tmp_path):
    """YAML's .nan is a float, so the parser lets it through; the data module refuses it."""
    with pytest.raises(AssertionError, match=r"failed \(2\)[\s\S]*--data.mixture_snr must be a finite number"):
        run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.test_noise", "mixture",
                 "--data.mixture_snr", ".nan", "--trainer.logger", "false", cwd=tmp_path)


def test_training_noise_snr_must_be_finite():
    from datamodules import TrainNoise
    with pytest.raises(UsageValueError, match="train_noise.snr_db must be"):
        TrainNoise(snr_db=(float("nan"), 5.0))


def test_background_takes_two_training_clips_per_class(synthetic_root):
    dm = ESC50DataModule(root=str(synthetic_root))
    bg = dm.background(per_class=2, max_clips=100)
    assert bg["waveform"].shape == (20, 160000)
    assert sorted(bg["target"].tolist()) == sorted(list(range(10)) * 2)
    assert all(int(name.split("-")[0]) in (1, 2, 3) for name in bg["filename"])
    assert len(dm.background(per_class=2, max_clips=7)["filename"]) == 7


def test_training_noise_is_new_each_draw_and_reproducible(synthetic_root):
    from datamodules import TrainNoise
    dm = ESC50DataModule(root=str(synthetic_root), train_noise=TrainNoise(p=1.0, snr_db=(0.0, 5.0)))
    dm.setup("fit")
    clean = ESC50DataModule(root=str(synthetic_root))
    clean.setup("fit")
    first, second = dm.train_set[0]["waveform"], dm.train_set[0]["waveform"]
    assert not torch.equal(first, second) and not torch.equal(first, clean.train_set[0]["waveform"])
    torch.manual_seed(1)
    a = dm.train_set[0]["waveform"]
    torch.manual_seed(1)
    assert torch.equal(a, dm.train_set[0]["waveform"])
    assert torch.equal(dm.test_set[0]["waveform"], clean.test_set[0]["waveform"])  # test clips stay clean
