"""The ``mixture`` scenario: every test clip over a clip of another class at a set SNR, its ideal binary mask
the ground truth of the localisation metrics (datamodules/noise.py, explain/localisation.py)."""
import csv
import math
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from datamodules import ESC50DataModule
from datamodules.noise import mix_parts, mixture_partners
from audio_xai.errors import UsageValueError
from explain.localisation import ideal_binary_mask
from explain.records import LocalisationValue
from lightning_modules.features import MeldB, STFTdB
from tests.helpers import run_here


def power_db(x: torch.Tensor) -> float:
    return 10 * math.log10(x.double().pow(2).mean().item())


@pytest.mark.parametrize("snr", [-6.0, 0.0, 10.0])
def test_mix_parts_sit_at_the_snr_and_sum_to_a_peak_normalised_mix(snr):
    g = torch.Generator().manual_seed(0)
    target, distractor = 0.3 * torch.randn(32000, generator=g), 2.0 * torch.randn(32000, generator=g)
    t, d = mix_parts(target, distractor, snr)
    assert power_db(t) - power_db(d) == pytest.approx(snr, abs=1e-4)
    assert (t + d).abs().max().item() == pytest.approx(1.0, abs=1e-6)
    ratio = t / target  # the target only scaled, never reshaped
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
    t0, d0 = mix_parts(target, torch.zeros(32000), snr)  # a silent distractor: the mix is the target
    assert d0.abs().max().item() == 0 and torch.allclose(t0, target / target.abs().max())


def test_partners_are_of_another_class_and_depend_on_the_seed_and_clip_list_only():
    rows = [{"filename": f"{i}-{c}.wav", "target": c} for i in range(6) for c in range(3)]
    partners = mixture_partners(rows, seed=0)
    assert all(rows[p]["target"] != r["target"] for r, p in zip(rows, partners))
    assert mixture_partners(rows, seed=0) == partners
    shuffled = rows[::-1]  # another row order: the same clip gets the same partner
    by_name = {r["filename"]: rows[p]["filename"] for r, p in zip(rows, partners)}
    assert {r["filename"]: shuffled[p]["filename"] for r, p in zip(shuffled, mixture_partners(shuffled, 0))} == by_name
    assert mixture_partners(rows, seed=1) != partners
    with pytest.raises(UsageValueError, match="at least two classes"):
        mixture_partners([r for r in rows if r["target"] == 0], seed=0)


def test_mixture_batches_do_not_depend_on_the_batch_size(mini_root):
    def loaded(batch_size: int) -> dict:
        dm = ESC50DataModule(root=str(mini_root), test_folds=[1, 2, 3, 4, 5], test_noise="mixture", mixture_snr=3.0,
                             mixture_seed=7)
        dm.setup("test")
        batches = list(DataLoader(dm.test_set, batch_size=batch_size))
        return {k: torch.cat([b[k] for b in batches]) for k in ("waveform", "target_part", "distractor_part")} | {
            "distractor": [n for b in batches for n in b["distractor"]], "scenario": {s for b in batches for s in b["scenario"]},
            "target": torch.cat([b["target"] for b in batches])}

    one, four = loaded(1), loaded(4)
    for key in ("waveform", "target_part", "distractor_part"):
        assert torch.equal(one[key], four[key]), key
    assert one["distractor"] == four["distractor"] and one["scenario"] == {"mixture"}
    assert torch.equal(one["waveform"], one["target_part"] + one["distractor_part"])
    for t, d in zip(one["target_part"], one["distractor_part"]):
        assert power_db(t) - power_db(d) == pytest.approx(3.0, abs=1e-3)
    with open(mini_root / "meta" / "esc50.csv", newline="") as f:
        classes = {r["filename"]: int(r["target"]) for r in csv.DictReader(f)}
    assert all(classes[d] != int(c) for d, c in zip(one["distractor"], one["target"]))


@pytest.mark.parametrize("features", [MeldB(32000), STFTdB(32000)], ids=["mel", "stft"])
def test_ideal_binary_mask_of_a_low_and_a_high_tone_is_the_low_tones_bins(features):
    """Tones on bin centres under the periodic Hann window leave energy in their own bin and its two
    neighbours only (in float64), so the spectra do not overlap: the mask is exactly the bins (or the mel
    bands fed by the bins) of the low tone, in every frame away from the clip's end, where the reflect
    padding breaks the tone."""
    features = features.double()
    spacing = features.sample_rate / features.n_fft
    low, high = 16 * spacing, 96 * spacing
    t = torch.arange(5 * features.sample_rate, dtype=torch.float64) / features.sample_rate
    target, distractor = mix_parts(torch.cos(2 * math.pi * low * t), torch.cos(2 * math.pi * high * t), 0.0)
    mask = ideal_binary_mask(features, target[None], distractor[None])[0, 0]
    stft_bins = torch.zeros(features.n_fft // 2 + 1, dtype=torch.bool)
    stft_bins[15:18] = True
    expected = (features.fb[stft_bins] > 0).any(0) if hasattr(features, "fb") else stft_bins
    edge = features.n_fft // 2 // features.hop_length + 1
    assert torch.equal(mask[:-edge], expected.expand_as(mask[:-edge]))


@pytest.mark.slow
def test_mixture_through_the_cli_scores_localisation_on_the_clips_still_recognised(tmp_path, mini_root):
    # a width-4 model trained on the four clips of folds 4 and 5, so that it knows the test clips' classes
    work, root = tmp_path, tmp_path / "esc"
    shutil.copytree(mini_root, root)
    common = ["--data.root", str(root), "--data.download", "false", "--data.num_workers", "0",
              "--data.batch_size", "4", "--model.width", "4", "--model.num_classes", "46",
              "--model.pretrained", "null", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
              "--trainer.logger", "false", "--trainer.default_root_dir", "runs/mini"]
    run_here("fit", *common, "--data.train_folds", "[4,5]", "--data.val_folds", "[4,5]",
             "--data.test_folds", "[4,5]", "--model.lr", "0.01", "--trainer.max_epochs", "8", cwd=work)
    proc = run_here("test", *common, "--ckpt_path", str(work / "runs" / "mini" / "best.ckpt"),
                    "--data.test_folds", "[4,5]", "--data.test_noise", "mixture", "--data.mixture_snr", "10",
                    "--explain", "saliency,gradcam", "--explainer.examples", "0", "--explainer.cache", "false",
                    cwd=work)
    out = next((work / "runs" / "mini").glob("test-*/explain"))
    with open(out / "localisation.csv") as f:
        assert f.readline().strip() == ",".join(LocalisationValue.columns())
    with open(out / "localisation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out / "per_clip.csv", newline="") as f:
        clips = [r for r in csv.DictReader(f)
                 if r["method"] == "saliency" and r["mask"] == "minmax" and r["scored"] == "spectrogram"]
    assert len(clips) == 4
    recognised = sum(int(r["correct"]) for r in clips)
    assert recognised >= 1, "the model should still recognise some clips at 10 dB"
    assert f"localisation.csv ({recognised} of 4 clips" in proc.stdout
    assert {r["scenario"] for r in rows} == {"mixture"} and {int(r["n"]) for r in rows} == {recognised}
    assert {r["method"] for r in rows} == {"saliency", "gradcam"}
    assert all(0 <= float(r["value"]) <= 1 for r in rows)
    with open(out / "results.csv", newline="") as f:
        assert {r["scenario"] for r in csv.DictReader(f)} == {"mixture"}
    # what is heard of each listenable interpretation, scored against the target clip the mix holds
    with open(out / "separation.csv", newline="") as f:
        separation = list(csv.DictReader(f))
    mixture = {r["clip"]: float(r["si_sdr"]) for r in separation if r["method"] == "mixture"}
    assert len(mixture) == 4 and {r["clip"] for r in separation} == set(mixture)
    for r in separation:
        assert float(r["si_sdri"]) == pytest.approx(float(r["si_sdr"]) - mixture[r["clip"]], abs=1e-9), r
    # the ideal binary mask's row, against the test's own computation: the mix's parts, the model's front-end
    # and its inverse with the mix's phase, and torchmetrics' SI-SDR
    from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio as si_sdr
    from explain.masks import apply_mask
    from lightning_modules import AudioClassifier
    features = AudioClassifier.load_from_checkpoint(work / "runs" / "mini" / "best.ckpt").features
    dm = ESC50DataModule(root=str(root), test_folds=[4, 5], test_noise="mixture", mixture_snr=10.0)
    dm.setup("test")
    ideal = {r["clip"]: float(r["si_sdr"]) for r in separation if r["method"] == "ideal_binary_mask"}
    assert len(ideal) == 4
    for item in dm.test_set:
        with torch.no_grad():
            x, phase = features(item["waveform"][None], return_phase=True)
            cells = (features(item["target_part"][None]) > features(item["distractor_part"][None])).float()
            audio = features.inverse(apply_mask(x, cells)[0], phase, item["waveform"].shape[-1])
        expected = si_sdr(audio[0].double(), item["target_part"].double()).item()
        assert ideal[item["filename"]] == pytest.approx(expected, abs=1e-3), item["filename"]
        assert mixture[item["filename"]] == pytest.approx(
            si_sdr(item["waveform"].double(), item["target_part"].double()).item(), abs=1e-6)
    assert {(r["method"], r["mask"]) for r in separation if r["mask"]} == {
        (m, k) for m in ("saliency", "gradcam") for k in __import__("explain").MASK_NAMES}
