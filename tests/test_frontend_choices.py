"""The study's front-end and training choices as defaults, each with its alternative: mel filterbank, SpecAugment
placement, the STFT model's sample rate, and keeping the last epoch instead of the best."""
import logging
import math
import re

import pytest
import torch
import torchaudio.transforms as AT
import yaml
from lightning.pytorch.demos.boring_classes import BoringModel

from audio_xai.errors import UsageValueError
from lightning_modules import AudioClassifier, Cnn14, MeldB, make_features
from tests.helpers import ROOT

MEL = dict(sample_rate=32000, n_stft=513, f_min=50.0, f_max=14000.0, n_mels=64)


def oracle_mel_db(wave: torch.Tensor, **melscale) -> torch.Tensor:
    """torchaudio's own Spectrogram -> MelScale -> dB, in our (B, 1, T, F) layout."""
    power = AT.Spectrogram(n_fft=1024, hop_length=320, power=2.0)(wave)
    mel = AT.MelScale(**MEL, **melscale)(power)
    return (10 * torch.log10(mel.clamp_min(1e-10))).transpose(1, 2).unsqueeze(1)


def noise(n: int = 2, length: int = 32000) -> torch.Tensor:
    return torch.randn(n, length, generator=torch.Generator().manual_seed(0))


# -- mel filterbank ----------------------------------------------------------------------------------------
def test_default_mel_bands_are_torchaudio_melscale_defaults():
    wave = noise()
    torch.testing.assert_close(MeldB()(wave), oracle_mel_db(wave), rtol=0, atol=1e-3)  # dB


def test_slaney_option_is_the_slaney_scale_with_slaney_norm():
    wave = noise()
    ours = MeldB(filterbank="slaney")(wave)
    torch.testing.assert_close(ours, oracle_mel_db(wave, norm="slaney", mel_scale="slaney"), rtol=0, atol=1e-3)
    assert (ours - MeldB()(wave)).abs().mean() > 10  # the two differ by far more than rounding


@pytest.mark.parametrize("name, other", [("htk", "slaney"), ("slaney", "htk")])
def test_mel_inverse_uses_the_same_filterbank(name, other):
    feats = MeldB(filterbank=name)
    mel = torch.pow(10, feats(noise(1)).squeeze(1).transpose(1, 2) / 10)  # (1, 64, T) power
    power = feats.mel_to_power(mel)

    def error_db(kind):
        again = AT.MelScale(**MEL, **({} if kind == "htk" else dict(norm="slaney", mel_scale="slaney")))(power)
        return (10 * torch.log10(again / mel)).abs().mean()

    assert error_db(name) < 0.2 and error_db(other) > 5


def test_filterbank_is_a_model_option():
    assert AudioClassifier(width=8, num_classes=5).features.filterbank == "htk"
    assert AudioClassifier(width=8, num_classes=5, filterbank="slaney").features.filterbank == "slaney"
    for features in ("mel", "stft"):
        with pytest.raises(UsageValueError, match="--model.filterbank must be 'htk' or 'slaney'"):
            make_features(features, filterbank="librosa")


def save_checkpoint(model, path, drop=()):
    import lightning as L
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in drop:
        del ckpt["hyper_parameters"][key]
    torch.save(ckpt, path)
    return path


def test_checkpoint_from_before_the_options_loads_as_trained(tmp_path, caplog):
    old = AudioClassifier(width=8, num_classes=5, filterbank="slaney", spec_augment="after_bn0").eval()
    path = save_checkpoint(old, tmp_path / "old.ckpt", drop=("filterbank", "spec_augment"))
    with caplog.at_level(logging.WARNING):
        restored = AudioClassifier.load_from_checkpoint(path).eval()
    assert restored.hparams.filterbank == "slaney" and restored.net.spec_augment_at == "after_bn0"
    assert sum("--model.filterbank slaney" in r.getMessage() for r in caplog.records) == 1
    on_htk = AudioClassifier(width=8, num_classes=5, spec_augment="after_bn0").eval()
    on_htk.load_state_dict(old.state_dict())
    wave = noise()
    with torch.no_grad():
        assert torch.equal(restored(wave), old(wave)) and not torch.allclose(on_htk(wave), old(wave))


def test_checkpoint_filterbank_must_match_the_model():
    saved = {"hyper_parameters": {"features": "mel", "width": 8, "num_classes": 5, "filterbank": "slaney"}}
    with pytest.raises(UsageValueError, match="filterbank='slaney' but this run has --model.filterbank 'htk'"):
        AudioClassifier(width=8, num_classes=5).on_load_checkpoint(saved)
    saved["hyper_parameters"]["features"] = "stft"  # no mel bands: nothing to disagree on
    AudioClassifier("stft", width=8, num_classes=5).on_load_checkpoint(saved)


def test_old_checkpoint_runs_on_slaney_bands_under_the_cli(quickstart_run, tmp_path, caplog):
    from tests.helpers import run_here
    best = torch.load(quickstart_run / "runs" / "quickstart" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["hyper_parameters"]["filterbank"] == "htk"
    loss = {}
    for name, hparams in (("slaney", {"filterbank": "slaney"}), ("old", {}), ("htk", {"filterbank": "htk"})):
        ckpt = dict(best, hyper_parameters={k: v for k, v in best["hyper_parameters"].items() if k != "filterbank"})
        ckpt["hyper_parameters"].update(hparams)
        torch.save(ckpt, tmp_path / f"{name}.ckpt")
        caplog.clear()
        proc = run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path",
                       str(tmp_path / f"{name}.ckpt"), "--data.root", str(quickstart_run / "data" / "quickstart"),
                       "--trainer.limit_test_batches", "2", "--trainer.logger", "false", cwd=tmp_path)
        said = "predates --model.filterbank" in caplog.text + proc.stderr + proc.stdout
        assert said == (name == "old"), name
        loss[name] = float(re.search(r"test/loss\D*([0-9.]+)", proc.stdout).group(1))
    assert loss["old"] == loss["slaney"] != loss["htk"]


# -- SpecAugment -------------------------------------------------------------------------------------------
def bn0_input(model: Cnn14, x: torch.Tensor) -> torch.Tensor:
    """What bn0 sees, back in the (B, 1, T, F) layout."""
    seen = []
    hook = model.bn0.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].transpose(1, 3).clone()))
    model(x)
    hook.remove()
    return seen[0]


def db_input(b: int = 3) -> torch.Tensor:
    """A dB spectrogram with no cell at 0 dB."""
    return -30 - torch.rand(b, 1, 501, 64, generator=torch.Generator().manual_seed(1)) * 40


def test_study_spec_augment_zeroes_whole_bands_and_frames_before_bn0():
    model, x = Cnn14(64, 5, 8).train(), db_input()
    masked_any = {"freq": False, "time": False}
    for seed in range(8):
        torch.manual_seed(seed)
        seen = bn0_input(model, x)
        zero = seen == 0
        assert torch.equal(seen[~zero], x[~zero])  # untouched elsewhere
        bands = zero.all(dim=2)[:, 0]  # (B, F): bins masked over every frame
        frames = zero.all(dim=3)[:, 0]  # (B, T)
        assert torch.equal(zero[:, 0], bands[:, None, :] | frames[:, :, None])  # nothing but whole bands/frames
        assert (bands == bands[0]).all() and (frames == frames[0]).all()  # one mask for the batch (iid_masks=False)
        for mask, width in ((bands[0], 10), (frames[0], 20)):
            idx = mask.nonzero().flatten()
            assert len(idx) < width and (len(idx) == 0 or idx[-1] - idx[0] + 1 == len(idx))  # one stripe
        masked_any["freq"] |= bool(bands.any())
        masked_any["time"] |= bool(frames.any())
    assert all(masked_any.values())
    assert torch.equal(bn0_input(model.eval(), x), x)  # nothing at test time


def test_after_bn0_placement_masks_bn0s_output_per_example():
    model, x = Cnn14(64, 5, 8, spec_augment="after_bn0").train(), db_input()
    torch.manual_seed(0)
    seen = []
    hook = model.conv_block1.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    assert torch.equal(bn0_input(model, x), x)
    hook.remove()
    zero = seen[-1] == 0
    frames = zero.all(dim=3)[:, 0]
    assert zero.any() and not (frames == frames[0]).all()  # stripes drawn per example


def test_spec_augment_is_a_model_option():
    assert AudioClassifier(width=8, num_classes=5).net.spec_augment_at == "study"
    model = AudioClassifier(width=8, num_classes=5, spec_augment="none").net.train()
    x = db_input()
    seen = []
    hook = model.conv_block1.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    model(x)
    hook.remove()
    assert not (seen[0] == 0).any() and torch.equal(bn0_input(model, x), x)
    with pytest.raises(UsageValueError, match="--model.spec_augment must be one of study, after_bn0, none"):
        AudioClassifier(width=8, num_classes=5, spec_augment="before")


# -- the STFT model at 16 kHz ------------------------------------------------------------------------------
def test_stft_config_gives_the_studys_257_by_313_grid(mini_root):
    from datamodules import ESC50DataModule
    config = yaml.safe_load((ROOT / "configs" / "stft.yaml").read_text())
    rate = config["data"]["sample_rate"]
    assert rate == config["model"]["sample_rate"] == 16000
    dm = ESC50DataModule(root=str(mini_root), batch_size=2, sample_rate=rate)
    dm.setup("fit")
    wave = next(iter(dm.test_dataloader()))["waveform"]
    db = make_features(config["model"]["features"], rate)(wave)
    assert db.shape == (2, 1, 313, 257)
    assert round(math.log(db.shape[2] * db.shape[3]), 4) == 11.2953


# -- keeping the last epoch --------------------------------------------------------------------------------
class FallingAccuracy(BoringModel):
    """val/acc falls every epoch: the best epoch is the first, the last is not."""

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", 1.0 / (1 + self.current_epoch))


@pytest.mark.parametrize("keep, epoch", [("best", 0), ("last", 2)])
def test_keep_chooses_which_epoch_best_ckpt_links(tmp_path, capsys, keep, epoch):
    import lightning as L
    from callbacks import BestCheckpoint
    trainer = L.Trainer(default_root_dir=tmp_path / "runs" / "fit-1", max_epochs=3, limit_train_batches=2,
                        limit_val_batches=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[BestCheckpoint(keep=keep)], accelerator="cpu")
    trainer.fit(FallingAccuracy())
    link = tmp_path / "runs" / "best.ckpt"
    assert link.is_symlink()
    assert torch.load(link, map_location="cpu", weights_only=False)["epoch"] == epoch
    printed = capsys.readouterr().out
    assert ("last epoch's checkpoint" in printed) == (keep == "last")


def test_keep_is_refused_when_unknown_or_without_a_last_checkpoint():
    from callbacks import BestCheckpoint
    with pytest.raises(UsageValueError, match="--checkpoint.keep must be 'best' or 'last'"):
        BestCheckpoint(keep="first")
    with pytest.raises(UsageValueError, match="--checkpoint.save_last"):
        BestCheckpoint(keep="last", save_last=False)


@pytest.mark.slow
def test_keep_is_a_fit_option_and_configs_hold_one_checkpoint_callback():
    from tests.helpers import run_cli
    out = run_cli("fit", "--config", "configs/quickstart.yaml", "--checkpoint.keep", "last", "--print_config",
                  cwd=ROOT, timeout=120).stdout
    config = yaml.safe_load(out)
    assert config["checkpoint"]["keep"] == "last"
    assert not config["trainer"]["callbacks"]  # the checkpoint group is the only BestCheckpoint


def test_quickstart_fit_has_exactly_one_best_checkpoint(quickstart_run):
    ckpt = torch.load(quickstart_run / "runs" / "quickstart" / "best.ckpt", map_location="cpu", weights_only=False)
    assert sum("BestCheckpoint" in key for key in ckpt["callbacks"]) == 1
