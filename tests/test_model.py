import hashlib

import pytest
import torch

from datamodules.audio import load_clip
from lightning_modules import AudioClassifier, Cnn14, MeldB, STFTdB, load_panns_weights
from lightning_modules.cnn14 import MaxTree
from lightning_modules.pretrained import PANNS_MD5, PANNS_SIZE, fetch_panns_checkpoint
from tests.conftest import tiny_cnn


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
    from datamodules.download import DownloadError
    bogus = tmp_path / "served.pth"
    bogus.write_bytes(b"x" * 100)
    with pytest.raises(DownloadError, match="Zenodo record 3987831"):
        fetch_panns_checkpoint(tmp_path / "Cnn14.pth", url=bogus.as_uri())
    assert not (tmp_path / "Cnn14.pth").exists()
    assert PANNS_SIZE == 327_428_481 and len(PANNS_MD5) == 32


def test_classifier_starts_from_panns_and_restores_from_its_own_checkpoint(tmp_path):
    path = tmp_path / "Cnn14.pth"
    state = panns_state(8)
    torch.save({"model": state}, path)
    clf = AudioClassifier(width=8, num_classes=5, pretrained=str(path))
    clf.setup("fit")
    torch.testing.assert_close(clf.net.conv_block3.conv2.weight, state["conv_block3.conv2.weight"])
    out = clf(torch.randn(2, 160000))
    assert out.shape == (2, 5)


def test_feature_type_mismatch_is_explained():
    clf = AudioClassifier(features="stft", width=8, num_classes=5)
    with pytest.raises(ValueError, match="features='mel'"):
        clf.on_load_checkpoint({"hyper_parameters": {"features": "mel", "width": 8, "num_classes": 5}})
