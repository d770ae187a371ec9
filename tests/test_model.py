import pytest
import torch

from datamodules.audio import load_clip
from lightning_modules import AudioClassifier, Cnn14, MeldB, STFTdB, load_panns_weights
from lightning_modules.cnn14 import MaxTree
from lightning_modules.pretrained import PANNS_MD5, PANNS_SIZE, fetch_panns_checkpoint
from tests.helpers import tiny_cnn


@pytest.fixture
def real_waves(mini_root):
    return torch.stack([load_clip(f) for f in sorted((mini_root / "audio").glob("*.wav"))])


def test_feature_shapes_follow_the_protocol():
    wave = torch.randn(2, 160000)
    assert MeldB()(wave).shape == (2, 1, 501, 64)
    assert STFTdB()(wave).shape == (2, 1, 626, 257)


def test_db_has_floor_and_no_top_db_clipping():
    wave = torch.zeros(1, 160000)
    wave[0, 80000:80100] = 1.0
    db = STFTdB()(wave)
    assert db.min().item() == pytest.approx(-100.0)
    assert db.max().item() > 0  # a 0 dB reference with no clipping at max - 80


def test_stft_round_trip_is_lossless_on_real_clips(real_waves):
    feats = STFTdB()
    db, phase = feats(real_waves, return_phase=True)
    rebuilt = feats.inverse(db, phase, real_waves.shape[-1])
    snr = 10 * torch.log10(real_waves.pow(2).sum(-1) / (rebuilt - real_waves).pow(2).sum(-1))
    assert snr.min() > 60


def test_mel_inverse_reproduces_the_mel_spectrogram(real_waves):
    feats = MeldB()
    db, phase = feats(real_waves[:4], return_phase=True)
    power = feats.mel_to_power(torch.pow(10, db.squeeze(1).transpose(1, 2) / 10))
    assert (power >= 0).all()
    again = 10 * torch.log10(torch.einsum("bft,fm->bmt", power, feats.fb).clamp_min(1e-10)).transpose(1, 2)
    assert (again - db.squeeze(1)).abs().mean() < 0.2  # dB
    rebuilt = feats.inverse(db, phase, real_waves.shape[-1])
    snr = 10 * torch.log10(real_waves[:4].pow(2).sum(-1) / (rebuilt - real_waves[:4]).pow(2).sum(-1))
    assert snr.mean() > 5  # approximate by nature: 64 bands cannot hold 513 bins


def test_mel_bin_frequencies_cover_the_band():
    f = MeldB().bin_frequencies()
    assert f.shape == (64,) and (f.diff() >= 0).all()
    assert 50 <= f[0] < 200 and 12000 < f[-1] <= 14000


def test_cnn14_width_64_has_the_panns_parameter_count():
    assert sum(p.numel() for p in Cnn14(64, 527, 64).parameters()) == 80_753_615


def test_max_tree_is_exactly_the_max():
    x = torch.randn(3, 5, 19)
    for n in (1, 2, 7, 15, 16, 19):
        torch.testing.assert_close(MaxTree()(x[..., :n]), x[..., :n].amax(-1), rtol=0, atol=1e-6)


def test_no_module_runs_twice_in_a_forward_pass():
    model = tiny_cnn()
    calls = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
             for n, m in model.named_modules() if not list(m.children())]
    model(torch.randn(2, 1, 501, 64))
    for h in hooks:
        h.remove()
    assert calls and max(calls.values()) == 1
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.modules()) >= 13


def panns_state(width: int, num_bins: int = 64) -> dict:
    """A state dict in the PANNs checkpoint's key layout (front-end, bn0, blocks, fc1, fc_audioset)."""
    torch.manual_seed(1)
    trunk = Cnn14(num_bins, 527, width)
    state = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
             for k, v in trunk.state_dict().items() if not k.startswith("head.")}
    state["fc_audioset.weight"] = torch.randn(527, 32 * width)
    state["fc_audioset.bias"] = torch.randn(527)
    state["spectrogram_extractor.stft.conv_real.weight"] = torch.randn(513, 1, 1024)
    state["spectrogram_extractor.stft.conv_imag.weight"] = torch.randn(513, 1, 1024)
    state["logmel_extractor.melW"] = torch.randn(513, 64)
    return state


def test_panns_checkpoint_maps_onto_the_model(tmp_path):
    state = panns_state(8)
    path = tmp_path / "Cnn14.pth"
    torch.save({"model": state, "iteration": 1}, path)
    model = Cnn14(64, 50, 8)
    report = load_panns_weights(model, path)
    loaded = model.state_dict()
    for key in ("bn0.weight", "conv_block1.conv1.weight", "conv_block6.bn2.running_var", "fc1.bias"):
        torch.testing.assert_close(loaded[key], state[key])
    assert report["not_loaded"] == ["head.bias", "head.weight"]
    assert report["unused"] == []


def test_bn0_is_kept_only_for_64_bins(tmp_path):
    path = tmp_path / "Cnn14.pth"
    torch.save({"model": panns_state(8)}, path)
    model = Cnn14(257, 50, 8)
    report = load_panns_weights(model, path)
    assert "bn0.weight" in report["not_loaded"] and "bn0.weight" in report["unused"]
    assert torch.equal(model.bn0.weight, torch.ones(257))


def test_bad_checkpoints_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_pretrained"):
        load_panns_weights(Cnn14(64, 50, 8), tmp_path / "missing.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="key 'model'"):
        load_panns_weights(Cnn14(64, 50, 8), tmp_path / "other.pth")
    torch.save({"model": panns_state(8)}, tmp_path / "w8.pth")
    with pytest.raises(ValueError, match="width 64"):
        load_panns_weights(Cnn14(64, 50, 16), tmp_path / "w8.pth")


def test_checkpoint_download_refuses_a_wrong_file(tmp_path):
    from audio_xai.files import DownloadError
    bogus = tmp_path / "served.pth"
    bogus.write_bytes(b"x" * 100)
    with pytest.raises(DownloadError, match="Zenodo record 3987831"):
        fetch_panns_checkpoint(tmp_path / "Cnn14.pth", url=bogus.as_uri())
    assert not (tmp_path / "Cnn14.pth").exists()
    assert PANNS_SIZE == 327_428_481 and len(PANNS_MD5) == 32


def test_classifier_starts_from_panns_and_restores_from_its_own_checkpoint(tmp_path):
    import lightning as L
    path = tmp_path / "Cnn14.pth"
    state = panns_state(8)
    torch.save({"model": state}, path)
    clf = AudioClassifier(width=8, num_classes=5, pretrained=str(path))
    clf.setup("fit")
    torch.testing.assert_close(clf.net.conv_block3.conv2.weight, state["conv_block3.conv2.weight"])
    assert clf(torch.randn(2, 160000)).shape == (2, 5)

    with torch.no_grad():  # "fine-tuned": every weight moves away from PANNs (and the variances are valid ones)
        for p in clf.parameters():
            p.add_(torch.randn_like(p))
        for m in clf.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(clf)
    trainer.save_checkpoint(tmp_path / "own.ckpt")
    saved = {k: v.clone() for k, v in clf.state_dict().items()}

    # a fresh module's weights differ from the saved ones, so equality below can only come from restoring
    fresh = AudioClassifier(width=8, num_classes=5, pretrained=str(path))
    fresh.setup("fit")
    assert not torch.equal(fresh.net.conv_block3.conv2.weight, saved["net.conv_block3.conv2.weight"])

    # its hyperparameters still name the PANNs file: setting up a fit must not load PANNs over the restored weights
    restored = AudioClassifier.load_from_checkpoint(tmp_path / "own.ckpt")
    restored.setup("fit")
    assert restored.state_dict().keys() == saved.keys()
    for key, value in restored.state_dict().items():
        assert torch.equal(value, saved[key]), key
    wave = torch.randn(2, 160000)
    with torch.no_grad():
        out = clf.eval()(wave)
        assert out.isfinite().all() and torch.equal(restored.eval()(wave), out)


def test_feature_type_mismatch_is_explained():
    clf = AudioClassifier(features="stft", width=8, num_classes=5)
    with pytest.raises(ValueError, match="features='mel'"):
        clf.on_load_checkpoint({"hyper_parameters": {"features": "mel", "width": 8, "num_classes": 5}})


def test_sample_rate_of_a_checkpoint_must_match_the_model():
    clf = AudioClassifier(width=8, num_classes=5, sample_rate=16000)
    with pytest.raises(ValueError, match="sample_rate=32000 but this run has --model.sample_rate 16000"):
        clf.on_load_checkpoint({"hyper_parameters": {"features": "mel", "width": 8, "num_classes": 5,
                                                     "sample_rate": 32000}})


# -- bad checkpoints and data that does not fit the model, through the command line --------------------
def cli_error(*args: str, cwd) -> str:
    """The output of a ``main.py`` run that must end with a one-line error (exit code 2, no traceback); run in
    this process (tests/test_cli.py checks the same through a real one)."""
    from tests.helpers import run_here
    with pytest.raises(AssertionError) as failed:
        run_here(*args, cwd=cwd)
    text = str(failed.value)
    assert "failed (2)" in text and "Traceback" not in text, text
    return next(line for line in text.splitlines() if line.startswith("error: "))


def bad_checkpoint(tmp_path, kind: str):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        torch.save({"state_dict": {"w": torch.randn(256, 256)}}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "random":
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                       dtype=torch.uint8).numpy().tobytes())
    else:
        path.write_text("not a checkpoint\n")
    return path


@pytest.mark.parametrize("kind", ["truncated", "random", "text"])
@pytest.mark.slow
def test_unreadable_ckpt_path_is_named_in_one_line(tmp_path, kind):
    from tests.helpers import ROOT
    path = bad_checkpoint(tmp_path, kind)
    line = cli_error("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", str(path),
                     "--trainer.logger", "false", cwd=tmp_path)
    assert f"--ckpt_path {path} is not a readable checkpoint" in line
    assert "weights_only" not in line


@pytest.mark.parametrize("kind", ["truncated", "random", "text"])
@pytest.mark.slow
def test_unreadable_pretrained_weights_are_named_in_one_line(tmp_path, mini_root, kind):
    from tests.helpers import ROOT
    path = bad_checkpoint(tmp_path, kind)
    line = cli_error("fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.root", str(mini_root),
                     "--model.num_classes", "46", "--model.pretrained", str(path), "--trainer.logger", "false",
                     cwd=tmp_path)
    assert f"--model.pretrained {path} is not a readable checkpoint" in line
    assert "weights_only" not in line


def test_checkpoint_of_a_run_with_training_noise_is_read(quickstart_run, tmp_path):
    # a fit with --data.train_noise keeps that dataclass among the checkpoint's data hyperparameters
    from datamodules import TrainNoise
    from tests.helpers import ROOT, run_here
    ckpt = torch.load(quickstart_run / "runs" / "quickstart" / "best.ckpt", map_location="cpu", weights_only=True)
    ckpt["datamodule_hyper_parameters"]["train_noise"] = TrainNoise(p=0.5)
    torch.save(ckpt, tmp_path / "noise.ckpt")
    proc = run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path",
                   str(tmp_path / "noise.ckpt"), "--data.root", str(quickstart_run / "data" / "quickstart"),
                   "--trainer.limit_test_batches", "2", "--trainer.logger", "false", cwd=tmp_path)
    assert "test/acc" in proc.stdout


@pytest.mark.slow
def test_fit_names_the_class_count_of_the_data(tmp_path, mini_root):
    import shutil
    from tests.helpers import ROOT
    root = tmp_path / "esc"
    shutil.copytree(mini_root, root)
    line = cli_error("fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.root", str(root),
                     "--trainer.logger", "false", cwd=tmp_path)
    assert "--model.num_classes is 10" in line and "has 46" in line and "pass --model.num_classes 46" in line


def test_checkpoint_with_fewer_classes_than_the_data_is_refused(quickstart_run, mini_root, tmp_path):
    from tests.helpers import ROOT
    line = cli_error("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path",
                     str(quickstart_run / "runs" / "quickstart" / "best.ckpt"), "--data.root", str(mini_root),
                     "--trainer.logger", "false", cwd=tmp_path)
    assert "trained for 10 classes" in line and f"--data.root {mini_root} has 46" in line


def test_checkpoint_with_more_classes_than_the_data_is_refused(quickstart_run, tmp_path):
    # a 12-class model in the quickstart checkpoint's format, tested on the 10-class quickstart data
    from tests.helpers import ROOT
    ckpt = torch.load(quickstart_run / "runs" / "quickstart" / "best.ckpt", map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["num_classes"] = 12
    ckpt["state_dict"] = AudioClassifier(width=8, num_classes=12).state_dict()
    torch.save(ckpt, tmp_path / "twelve.ckpt")
    root = quickstart_run / "data" / "quickstart"
    line = cli_error("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path",
                     str(tmp_path / "twelve.ckpt"), "--data.root", str(root), "--trainer.logger", "false", cwd=tmp_path)
    assert "trained for 12 classes" in line and f"--data.root {root} has 10" in line


def test_sample_rate_of_model_and_data_must_agree(quickstart_run, tmp_path):
    from tests.helpers import ROOT
    common = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.root",
              str(quickstart_run / "data" / "quickstart"), "--data.sample_rate", "16000", "--trainer.logger", "false"]
    line = cli_error("test", *common, "--ckpt_path", str(quickstart_run / "runs" / "quickstart" / "best.ckpt"),
                     cwd=tmp_path)
    assert "trained at sample rate 32000" in line and "--data.sample_rate is 16000" in line
    line = cli_error("fit", *common, cwd=tmp_path)
    assert "--model.sample_rate is 32000 but --data.sample_rate is 16000" in line
