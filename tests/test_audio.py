import math
import random

import numpy as np
import pytest
import soundfile as sf
import torch

from datamodules.audio import (AudioError, fix_length, load_clip, mix_at_snr, mix_scenario, peak_normalise,
                               read_audio, rms_normalise)
from datamodules.noise import SCENARIOS, ScenarioNoise, TrainNoise, resolve_noise


def write(path, data, rate=44100, subtype="PCM_16"):
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def test_real_clips_become_mono_32k_5s_peak_one(mini_root):
    files = sorted((mini_root / "audio").glob("*.wav"))
    assert len(files) == 10
    for f in files:
        info = sf.info(str(f))
        assert info.samplerate == 44100  # so resampling really happens
        clip = load_clip(f)
        assert clip.shape == (160000,)
        assert clip.abs().max().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 32000, 48000, 96000])
def test_any_rate_is_resampled_keeping_pitch(tmp_path, rate):
    t = np.arange(int(rate * 5)) / rate
    f = write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), rate)
    clip = load_clip(f)
    assert clip.shape == (160000,)
    spectrum = torch.fft.rfft(clip).abs()
    peak_hz = spectrum.argmax().item() * 32000 / 160000
    assert peak_hz == pytest.approx(1000, abs=2)


def test_stereo_and_multichannel_are_averaged(tmp_path):
    left = np.full(32000 * 5, 0.5)
    data = np.stack([left, -left * 0.5, left, np.zeros_like(left)], axis=1)  # 4 channels
    clip = load_clip(write(tmp_path / "multi.wav", data, 32000, "FLOAT"))
    expected = data.mean(axis=1)
    np.testing.assert_allclose(clip.numpy(), expected / np.abs(expected).max(), atol=1e-6)


@pytest.mark.parametrize("seconds,expected_tail_zero", [(3.0, True), (7.5, False)])
def test_short_clips_are_padded_and_long_ones_cut(tmp_path, seconds, expected_tail_zero):
    n = int(32000 * seconds)
    clip = load_clip(write(tmp_path / "c.wav", np.ones(n) * 0.25, 32000, "FLOAT"))
    assert clip.shape == (160000,)
    assert (clip[-100:] == 0).all().item() is expected_tail_zero
    assert clip[:100].eq(1).all()


def test_silent_clip_stays_silent(tmp_path):
    clip = load_clip(write(tmp_path / "silent.wav", np.zeros(32000 * 5), 32000))
    assert torch.isfinite(clip).all() and clip.abs().max() == 0


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "nan", "inf", "missing"])
def test_bad_files_are_errors_that_name_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        write(path, np.random.default_rng(0).standard_normal(32000) * 0.1, 32000)
        path.write_bytes(path.read_bytes()[:30])
    elif kind == "text":
        path.write_text("this is not audio\n" * 100)
    elif kind in ("nan", "inf"):
        data = np.zeros(32000, dtype=np.float32)
        data[100] = np.nan if kind == "nan" else np.inf
        write(path, data, 32000, "FLOAT")
    with pytest.raises(AudioError, match=str(path.name)):
        load_clip(path)


def test_zero_length_wav_is_an_error(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros(0), 32000)
    with pytest.raises(AudioError, match="no samples"):
        read_audio(path)


def test_scenario_mixing_follows_the_protocol_arithmetic():
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(1000, generator=g) * 0.3
    noise = torch.randn(700, generator=g) * 2.0  # shorter than the clip: zero-padded
    mixed = mix_scenario(clip, noise)
    c = clip / clip.pow(2).mean().sqrt()
    n = torch.cat([noise, torch.zeros(300)])
    n = n / n.pow(2).mean().sqrt()
    expected = 0.6 * c + 0.4 * n
    torch.testing.assert_close(mixed, expected / expected.abs().max())


def test_stereo_noise_file_is_mixed_down_in_a_scenario(noise_dir):
    label, path = resolve_noise("horse", noise_dir)
    assert label == "horse" and sf.info(str(path)).channels == 2
    scenario = ScenarioNoise("horse", noise_dir, 32000, 5.0)
    data, rate = sf.read(str(path), always_2d=True)
    mono = torch.from_numpy(data.mean(axis=1)).float()
    import torchaudio.functional as AF
    expected_noise = peak_normalise(fix_length(AF.resample(mono, rate, 32000), 160000))
    torch.testing.assert_close(scenario.noise, expected_noise, atol=1e-5, rtol=1e-4)
    clip = torch.sin(torch.arange(160000) / 10.0)
    expected = 0.6 * rms_normalise(clip) + 0.4 * rms_normalise(expected_noise)
    torch.testing.assert_close(scenario(clip), expected / expected.abs().max(), atol=1e-5, rtol=1e-4)


def test_every_paper_scenario_file_is_known(noise_dir):
    for name in SCENARIOS:
        assert resolve_noise(name, noise_dir)[1].is_file()


def test_missing_noise_file_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="freesound.org sound 149024"):
        resolve_noise("horse", tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        resolve_noise(str(tmp_path / "nope.wav"), tmp_path)


def test_mix_at_snr_gives_the_requested_ratio():
    g = torch.Generator().manual_seed(1)
    clip, noise = torch.randn(32000, generator=g), torch.randn(32000, generator=g) * 5
    for snr in (0.0, 10.0, 20.0):
        mixed = mix_at_snr(clip, noise, snr)
        # undo the peak normalisation with the clip's known share, then measure the noise part
        scale = (mixed @ clip) / (clip @ clip)
        residual = mixed / scale - clip
        measured = 10 * math.log10(clip.pow(2).mean() / residual.pow(2).mean())
        assert measured == pytest.approx(snr, abs=0.05)


def test_train_noise_probability_and_white_default():
    aug = TrainNoise(p=0.5, snr_db=(10, 10))
    clip = torch.sin(torch.arange(32000) / 5.0)
    rng = random.Random(0)
    changed = sum(not torch.equal(aug(clip, rng, 32000), clip) for _ in range(200))
    assert 70 < changed < 130
    with pytest.raises(ValueError, match="train_noise.p"):
        TrainNoise(p=1.5)
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        TrainNoise(files=["missing.wav"])
