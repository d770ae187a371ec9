"""What a listener hears: the heard spectrograms, the metrics on them, their distortion and the separation
scores, each against a computation written here from the front-end, the model and closed forms."""
import math

import pytest
import torch
import torchaudio

from datamodules.audio import load_clip
from datamodules.noise import mix_parts
from audio_xai.errors import UsageValueError
from explain.evaluate import MaskScorer, predict_probs
from explain.heard import (IDEAL, MIXTURE, Sound, check_scored, hear, log_spectral_distance, si_sdr,
                           spectral_convergence)
from explain.masks import apply_mask, make_masks
from explain.metrics import METRIC_NAMES, PROB_TOL
from explain.pipeline import ExplanationPipeline
from lightning_modules import Cnn14
from lightning_modules.features import MeldB, STFTdB, db_to_power


@pytest.fixture
def real_waves(mini_root):
    return torch.stack([load_clip(f, duration=2.0) for f in sorted((mini_root / "audio").glob("*.wav"))])


def test_stft_all_ones_mask_is_heard_as_scored(real_waves):
    """The ISTFT of an unmodified STFT is exact: what is heard is what was scored, to float precision."""
    feats = STFTdB()
    x, phase = feats(real_waves[:3], return_phase=True)
    _, heard = hear(feats, x, phase, real_waves.shape[-1], batch_size=2)
    # float32 keeps ~7 digits of a frame's sum of windows: cells 50 dB below the clip's loudest keep 1e-2 dB
    loud = x > x.amax(dim=(1, 2, 3), keepdim=True) - 50
    assert (heard - x)[loud].abs().max() < 1e-2
    assert log_spectral_distance(x, heard).max() < 0.05


def test_a_mask_of_whole_frames_leaks_into_its_two_neighbours_only(real_waves):
    """Keeping frames a..b-1 (hop 256, window 512): frame u's window spans samples u*256 +- 256, which the
    ISTFT rebuilds from frames u-1, u and u+1. So frames a+1..b-2 come back exactly, frames a-1 and b (half
    their window over kept audio) leak above the floor, and frames up to a-2 and from b+1 on hear nothing."""
    feats = STFTdB()
    x, phase = feats(real_waves[:1], return_phase=True)
    a, b = 40, 60
    mask = torch.zeros_like(x)
    mask[:, :, a:b] = 1
    x_in, _ = apply_mask(x, mask)
    _, heard = hear(feats, x_in, phase, real_waves.shape[-1], batch_size=1)
    frame_db = 10 * torch.log10(db_to_power(heard[0, 0]).mean(-1))  # each frame's mean power, dB
    exact = heard[0, 0, a + 1:b - 1]
    loud = x[0, 0, a + 1:b - 1] > x.max() - 50
    assert (exact - x[0, 0, a + 1:b - 1])[loud].abs().max() < 1e-2
    silent = torch.cat([frame_db[:a - 1], frame_db[b + 1:]])
    assert silent.max() < -95  # the -100 dB floor's own faint audio
    assert frame_db[a - 1] > -60 and frame_db[b] > -60  # far above the floor: the leak


def test_heard_metrics_equal_a_direct_computation_and_do_not_depend_on_the_batch(real_waves):
    torch.manual_seed(0)
    feats = MeldB()
    model = Cnn14(num_bins=64, num_classes=4, width=4).eval()
    x, phase = feats(real_waves[:4], return_phase=True)
    with torch.no_grad():
        probs = predict_probs(model, x, 4)
    target = probs.argmax(-1)
    maps = torch.randn_like(x)
    masks = ("bin", "topK_50_pos")
    out = MaskScorer(masks, scored=("spectrogram", "heard")).update(
        model, x, probs, target, maps, 4, hear=lambda s: hear(feats, s, phase.repeat(4, 1, 1), real_waves.shape[-1], 3))
    # the test's own computation: the masks, their audio with the clip's phase, the front-end, the model
    for ki, name in enumerate(masks):
        mask = make_masks(maps, (name,))[0]
        x_in, x_out = apply_mask(x, mask)
        with torch.no_grad():
            heard_in = feats(feats.inverse(x_in, phase, real_waves.shape[-1]))
            heard_out = feats(feats.inverse(x_out, phase, real_waves.shape[-1]))
            p_in, p_out = model(heard_in).softmax(-1), model(heard_out).softmax(-1)
        pc, pc_in, pc_out = (p.gather(1, target[:, None])[:, 0] for p in (probs, p_in, p_out))
        got = dict(zip(METRIC_NAMES, out.values["heard"][ki].T))
        torch.testing.assert_close(got["FF"].float(), pc - pc_out, atol=1e-4, rtol=0)
        expected_ai = 100.0 * (pc_in > pc + PROB_TOL).double()
        expected_fid = (pc_in >= p_in.amax(-1) - PROB_TOL).double()
        assert torch.equal(got["AI"], expected_ai) and torch.equal(got["FidIn"], expected_fid)
        # SPS and COMP are the mask's: the same scored or heard
        assert torch.equal(out.values["heard"][ki][:, 5:], out.values["spectrogram"][ki][:, 5:])
    # one clip alone, and among others in another order and batch size: the same heard values
    alone = MaskScorer(masks, scored=("heard",)).update(
        model, x[2:3], probs[2:3], target[2:3], maps[2:3], 1,
        hear=lambda s: hear(feats, s, phase[2:3].repeat(4, 1, 1), real_waves.shape[-1], 1)).values["heard"]
    order = [3, 2, 0]
    mixed = MaskScorer(masks, scored=("heard",)).update(
        model, x[order], probs[order], target[order], maps[order], 2,
        hear=lambda s: hear(feats, s, phase[order].repeat(4, 1, 1), real_waves.shape[-1], 5)).values["heard"]
    torch.testing.assert_close(mixed[:, 1], alone[:, 0], atol=1e-4, rtol=1e-3)
    assert torch.equal(mixed[:, 1, [1, 4]], alone[:, 0, [1, 4]])  # the thresholds exactly


def test_distortion_measures_match_their_formulas():
    a = torch.tensor([[[[0.0, -10.0], [-20.0, -30.0]]]])
    b = torch.tensor([[[[3.0, -10.0], [-20.0, -26.0]]]])
    assert log_spectral_distance(a, b).item() == pytest.approx(math.sqrt((9 + 16) / 4))
    mag_a = [10 ** (v / 20) for v in (0.0, -10.0, -20.0, -30.0)]
    mag_b = [10 ** (v / 20) for v in (3.0, -10.0, -20.0, -26.0)]
    expected = math.sqrt(sum((p - q) ** 2 for p, q in zip(mag_a, mag_b))) / math.sqrt(sum(p * p for p in mag_a))
    assert spectral_convergence(a, b).item() == pytest.approx(expected)


def test_si_sdr_of_a_target_plus_an_orthogonal_signal_is_their_ratio():
    t = torch.arange(16000) / 16000
    target = torch.sin(2 * math.pi * 440 * t)
    other = torch.sin(2 * math.pi * 1000 * t)  # whole periods of both: orthogonal
    assert abs(float(target @ other)) < 1e-2
    for ratio_db in (-5.0, 0.0, 12.0):
        scale = 10 ** (-ratio_db / 20)
        assert si_sdr(target + scale * other, target).item() == pytest.approx(ratio_db, abs=1e-3)
    assert si_sdr(3.0 * (target + 0.1 * other), target).item() == pytest.approx(20.0, abs=1e-3)  # scale-invariant


def test_ideal_binary_mask_separates_real_mixtures_better_than_the_controls(real_waves):
    """Real ESC-50 clips over other real clips at 0 dB: the ideal binary mask's audio beats the mixture, and
    every mask of the two control maps (random, energy) on average."""
    torch.manual_seed(0)
    feats = MeldB()
    model = Cnn14(num_bins=64, num_classes=4, width=4).eval()
    target, distractor = zip(*(mix_parts(real_waves[i], real_waves[(i + 5) % 10], 0.0) for i in range(4)))
    target, distractor = torch.stack(target).float(), torch.stack(distractor).float()
    mix = target + distractor
    x, phase = feats(mix, return_phase=True)
    pipe = ExplanationPipeline(model, ["random", "energy"], batch_size=8, scored="heard", features=feats)
    out = pipe.explain(x, [f"{i}.wav" for i in range(4)], Sound(phase, mix.shape[-1], target, distractor))
    ideal = (out.separation_bounds[IDEAL] - out.separation_bounds[MIXTURE]).mean()
    assert ideal > 1.0  # dB over the mix
    for name, part in out.methods.items():
        improvement = (part.si_sdr - out.separation_bounds[MIXTURE]).mean(1)  # per mask, over the clips
        assert (improvement < ideal).all(), name


def test_heard_clips_only_are_heard_and_counted(real_waves):
    feats = MeldB()
    model = Cnn14(num_bins=64, num_classes=4, width=4).eval()
    x, phase = feats(real_waves[:3], return_phase=True)
    pipe = ExplanationPipeline(model, ["random"], batch_size=8, scored="spectrogram,heard", features=feats,
                               masks=("bin",))
    out = pipe.explain(x, ["a", "b", "c"], Sound(phase, real_waves.shape[-1], clips=torch.tensor([0, 2])))
    values = out.methods["random"].scored.values
    assert values["spectrogram"].shape[1] == 3 and values["heard"].shape[1] == 2
    assert pipe.count("spectrogram") == 3 and pipe.count("heard") == 2
    distortion, floor = pipe.distortion_results()
    assert distortion["random"].shape == (1, 2, 2) and torch.isfinite(floor).all()


def test_scored_option_is_checked():
    assert check_scored("heard,spectrogram") == ("spectrogram", "heard")
    with pytest.raises(UsageValueError, match="--explainer.scored must be spectrogram and/or heard"):
        check_scored("heard,audio")
    with pytest.raises(UsageValueError, match="needs the model's front-end"):
        ExplanationPipeline(Cnn14(num_bins=64, num_classes=2, width=4), ["random"], scored="heard")


def test_lstsq_mel_inverse_is_torchaudios_inverse_mel_scale():
    """Without updates, the mel inverse is the least-norm least-squares solution, as torchaudio's."""
    feats = MeldB(mel_inverse="lstsq", nnls_iters=0)
    mel = db_to_power(feats(torch.randn(2, 32000) * 0.1).squeeze(1).transpose(-1, -2))
    oracle = torchaudio.transforms.InverseMelScale(513, 64, 32000, f_min=50.0, f_max=14000.0)(mel)
    ours = feats.mel_to_power(mel)
    assert (ours - oracle).abs().max() <= 1e-4 * oracle.abs().max()
