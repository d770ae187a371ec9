"""The captum methods (ig, smoothgrad, occlusion, gradshap, deeplift, inputxgrad) behind the one adapter:
their defining sums, equality with captum called directly, batch independence, and a CLI run."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from audio_xai.errors import UsageValueError
from explain import MASK_NAMES, SILENCE_DB, make_method
from explain.base import clip_seed, describe_methods, parse_methods
from explain.pipeline import ExplanationPipeline
from tests.helpers import ROOT, quickstart_cells, run_here, tiny_cnn

NEW = ("ig", "smoothgrad", "occlusion", "gradshap", "deeplift", "inputxgrad")
# few steps and samples where the property does not need more: the tests stay quick on a CPU
SMALL = {"ig": {"steps": 8}, "smoothgrad": {"samples": 3}, "gradshap": {"samples": 3},
         "occlusion": {"window": [16, 16], "stride": [16, 16]}, "deeplift": {}, "inputxgrad": {}}
IDS = ["a.wav", "b.wav", "c.wav"]


@pytest.fixture(scope="module")
def model():
    m = tiny_cnn(num_bins=64, num_classes=4, width=8, seed=3)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def clips(model):
    """Three 64 x 64 clips with loud patches, and as targets the classes whose logits lie furthest from the
    floor's (a tiny random model barely tells its inputs apart otherwise)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 64, 64, generator=g) * 15 - 40
    for i in range(3):
        x[i, 0, 16 * i:16 * i + 12, 20 * i:20 * i + 10] += 60
    with torch.no_grad():
        target = (model(x) - model(torch.full_like(x, SILENCE_DB))).abs().argmax(1)
    return x, target


def logit(model, x, target):
    with torch.no_grad():
        return model(x).gather(1, target[:, None])[:, 0].double()


def assert_same_maps(a, b):
    """Equal up to float rounding, which batches of other sizes may change: far below the maps' own scale."""
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def gap(model, x, t):
    """f_c(x) - f_c(floor), and it is not small."""
    expect = logit(model, x, t) - logit(model, torch.full_like(x, SILENCE_DB), t)
    assert expect.abs().min() > 0.05
    return expect


def test_ig_completeness_at_the_default_steps(model, clips):
    x, t = clips
    total = make_method("ig", model, batch_size=32).attribute(x, t, IDS).sum((1, 2, 3)).double()
    expect = gap(model, x, t)
    assert torch.all((total - expect).abs() <= 0.01 * expect.abs()), (total, expect)


def test_deeplift_adds_up_against_the_floor(model, clips):
    x, t = clips
    total = make_method("deeplift", model, batch_size=2).attribute(x, t, IDS).sum((1, 2, 3)).double()
    expect = gap(model, x, t)
    assert torch.all((total - expect).abs() <= 1e-3 * expect.abs()), (total, expect)


def captum_directly(name, model, x, t, bg=None):
    """Each method as a user would call captum on these clips (random ones: one clip at a time, torch's and
    numpy's generators seeded with the clip's seed)."""
    from captum.attr import (DeepLift, GradientShap, InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion,
                             Saliency)
    floor = torch.full_like(x, SILENCE_DB)
    if name == "ig":
        return IntegratedGradients(model).attribute(x, floor, target=t, n_steps=8)
    if name == "deeplift":
        return DeepLift(model).attribute(x, floor, target=t)
    if name == "inputxgrad":
        return InputXGradient(lambda z: model(z + SILENCE_DB)).attribute(x - SILENCE_DB, target=t)
    if name == "occlusion":
        return Occlusion(model).attribute(x, (1, 16, 16), strides=(1, 16, 16), baselines=SILENCE_DB, target=t)
    maps = []
    for i, cid in enumerate(IDS[:len(x)]):
        torch.manual_seed(clip_seed(0, cid))
        np.random.seed(clip_seed(0, cid))
        xi, ti, spread = x[i:i + 1], t[i:i + 1], float(x[i].max() - x[i].min())
        if name == "smoothgrad":
            maps.append(NoiseTunnel(Saliency(model)).attribute(xi, nt_type="smoothgrad", nt_samples=3,
                                                               stdevs=0.15 * spread, target=ti, abs=False))
        else:
            maps.append(GradientShap(model).attribute(xi, floor[:1] if bg is None else bg, n_samples=3,
                                                      target=ti))
    return torch.cat(maps)


@pytest.mark.parametrize("name", NEW)
def test_each_method_equals_captum_called_directly(model, clips, name):
    x, t = clips
    ours = make_method(name, model, batch_size=4, **SMALL[name]).attribute(x, t, IDS)
    assert_same_maps(ours, captum_directly(name, model, x, t))


def test_background_baselines_equal_captum_with_those_baselines(model, clips):
    x, t = clips
    bg = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2)) * 60 - 80
    from captum.attr import IntegratedGradients
    ig = make_method("ig", model, batch_size=8, steps=8, baseline="background")
    ig.set_background(bg)
    each = [IntegratedGradients(model).attribute(x, b.expand_as(x), target=t, n_steps=8) for b in bg.split(1)]
    assert_same_maps(ig.attribute(x, t, IDS), sum(each) / 2)
    ig_mean = make_method("ig", model, batch_size=8, steps=8, baseline="background_mean")
    ig_mean.set_background(bg)
    mean = IntegratedGradients(model).attribute(x, bg.mean(0, keepdim=True).expand_as(x), target=t, n_steps=8)
    assert_same_maps(ig_mean.attribute(x, t, IDS), mean)
    gs = make_method("gradshap", model, batch_size=8, samples=3, baseline="background")
    gs.set_background(bg)
    assert_same_maps(gs.attribute(x, t, IDS), captum_directly("gradshap", model, x, t, bg))


def test_the_pipeline_passes_a_background_only_to_the_methods_whose_baseline_uses_one(model, clips, tmp_path):
    x, _ = clips
    target = torch.tensor([0, 1, 2])
    bg = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2)) * 60 - 80

    def run(background):
        pipe = ExplanationPipeline(model, ["ig", "deeplift", "gradshap"], batch_size=4, cache_dir=tmp_path,
                                   options={"ig": {"steps": 4, "baseline": "background_mean", "background_size": 7},
                                            "gradshap": {"samples": 2}})
        assert pipe.backgrounds_needed() == {"ig": (2, 7)}
        pipe.set_background("ig", background)
        return pipe.attribute("ig", x, target, IDS), pipe.counts["ig"]

    first, counts = run(bg)
    assert counts == {"cached": 0, "computed": 3}
    assert run(bg)[1] == {"cached": 3, "computed": 0}
    other, counts = run(bg + 5)  # another background changes the maps, so it keys the cache
    assert counts == {"cached": 0, "computed": 3} and not torch.allclose(first, other)


@pytest.mark.parametrize("name", NEW)
def test_a_clips_map_does_not_depend_on_its_batch(model, clips, name):
    x, t = clips
    method = make_method(name, model, batch_size=4, **SMALL[name])
    together = method.attribute(x, t, IDS)
    alone = method.attribute(x[1:2], t[1:2], IDS[1:2])
    swapped = method.attribute(x[[2, 1, 0]], t[[2, 1, 0]], IDS[::-1])
    assert_same_maps(alone[0], together[1])
    assert_same_maps(swapped[1], together[1])


def test_occlusion_fills_like_masked_cells(model, clips):
    """With the clip's own minimum as fill, each rectangle drops the logit by what masking it does."""
    from explain.masks import apply_mask, fill_values
    x, t = clips
    occ = make_method("occlusion", model, batch_size=8, window=[64, 32], stride=[64, 32], fill="clip_min")
    maps = occ.attribute(x[:1], t[:1], IDS[:1])
    mask = torch.zeros_like(x[:1])
    mask[..., :32] = 1  # the rectangle over the first 32 bins, masked out
    _, occluded = apply_mask(x[:1], mask, fill_values(x[:1], "clip_min"))
    drop = logit(model, x[:1], t[:1]) - logit(model, occluded, t[:1])
    torch.testing.assert_close(maps[0, 0, 0, 0].double(), drop[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,options,word", [
    ("ig", {"baseline": "zero"}, "baseline"), ("inputxgrad", {"baseline": "background"}, "baseline"),
    ("occlusion", {"window": [8]}, "window"), ("occlusion", {"stride": "8,8"}, "stride"),
    ("occlusion", {"window": [8, 8], "stride": [16, 8]}, "stride"),
    ("occlusion", {"fill": "zeros"}, "fill")])
def test_bad_options_are_named(model, name, options, word):
    with pytest.raises(UsageValueError, match=f"{name} option {word}"):
        make_method(name, model, **options)


def test_the_new_methods_are_in_all_and_in_the_help():
    assert set(NEW) <= set(parse_methods("all"))
    assert not set(NEW) & set(parse_methods("study"))
    text = describe_methods()
    for name, opt in [("ig", "steps"), ("smoothgrad", "noise_level"), ("occlusion", "window"),
                      ("occlusion", "stride"), ("gradshap", "samples"), ("deeplift", "baseline")]:
        assert f"{name}: " in text and f"{opt}=" in text.split(f"{name}: ", 1)[1].split(" | ")[0]


def test_the_new_methods_through_the_cli(quickstart_run):
    options = {"ig": {"steps": 4}, "smoothgrad": {"samples": 2}, "gradshap": {"samples": 2},
               "occlusion": {"window": [128, 32], "stride": [128, 32]}}
    run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
             "--explain", ",".join(NEW), "--explainer.options", json.dumps(options),
             "--explainer.scored", "spectrogram",
             "--trainer.limit_test_batches", "2", "--data.batch_size", "2", "--explainer.examples", "0",
             "--explainer.curves", "false", "--trainer.logger", "false",
             "--trainer.default_root_dir", "runs/captum", cwd=quickstart_run)
    with open(next((quickstart_run / "runs" / "captum").glob("test-*/explain/results.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["mask"]) for r in rows} == {(m, k) for m in NEW for k in MASK_NAMES}
    ranges = {"FF": (-1, 1), "AI": (0, 100), "AD": (0, 100), "AG": (0, 100), "FidIn": (0, 1), "SPS": (0, 1),
              "COMP": (0, math.log(quickstart_cells()) + 1e-6)}  # a uniform mask: ln d, give or take rounding
    for r in rows:
        assert r["n"] == "4"
        for metric, (lo, hi) in ranges.items():
            v = float(r[metric])
            assert math.isfinite(v) and lo <= v <= hi, (r["method"], r["mask"], metric, v)
