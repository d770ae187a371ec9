"""Control maps, deletion and insertion curves, the fill of masked cells, and COMPn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from explain import make_method, parse_methods
from explain.curves import FRACTIONS, PerturbationCurves, area_under, cell_ranks, cells_at, perturbation_curves
from explain.masks import apply_mask, fill_values
from explain.metrics import complexity, normalised_complexity
from explain.pipeline import ExplanationPipeline
from tests.helpers import tiny_cnn


def test_groups_expand_to_methods():
    assert parse_methods("controls") == ["random", "energy"]
    assert parse_methods("study") == ["saliency", "gradcam", "lime", "shap"]
    everything = parse_methods("all,controls")
    assert everything[-2:] == ["random", "energy"] and "random" not in parse_methods("all")
    with pytest.raises(ValueError, match="group"):
        parse_methods("all,nonsense")


def test_random_maps_are_uniform_reproducible_per_clip_and_independent_of_the_batch():
    x = torch.zeros(3, 1, 200, 64)
    method = make_method("random", None, seed=7)
    together = method.attribute(x, torch.zeros(3, dtype=torch.long), ids=["a", "b", "c"])
    alone = method.attribute(x[:1], torch.zeros(1, dtype=torch.long), ids=["b"])
    assert torch.equal(together[1], alone[0])
    assert not torch.equal(together[0], together[1])
    assert not torch.equal(make_method("random", None, seed=8).attribute(x[:1], None, ids=["b"]), alone)
    values = together.flatten().numpy()
    assert values.min() >= -1 and values.max() < 1
    # uniform on [-1, 1): every tenth of the range holds about a tenth of 38,400 values (binomial sd ~ 0.0015)
    counts = np.histogram(values, bins=10, range=(-1, 1))[0] / values.size
    assert np.abs(counts - 0.1).max() < 0.01


def test_energy_map_is_the_input():
    x = torch.randn(2, 1, 40, 32)
    assert torch.equal(make_method("energy", None).attribute(x, None), x)


class RegionMean(nn.Module):
    """Two logits: a * mean of x over a region R, and 0; so p_0 = sigmoid(a * mean_R x)."""

    def __init__(self, region: torch.Tensor, a: float = 0.05):
        super().__init__()
        self.region, self.a = region, a

    def forward(self, x):
        m = (x[:, 0] * self.region).sum((1, 2)) / self.region.sum()
        return torch.stack([self.a * m, torch.zeros_like(m)], 1)


def test_curves_of_a_region_mean_model_equal_the_closed_form():
    t, f, v, b = 10, 8, -20.0, -100.0
    region = torch.zeros(t, f)
    region[2:5, 1:5] = 1  # 12 cells
    size, d = int(region.sum()), t * f
    x = torch.full((1, 1, t, f), v)
    maps = region.clone().view(1, 1, t, f) + 0.01 * torch.rand(1, 1, t, f)  # the region's cells rank first
    model = RegionMean(region)
    probs = model(x).softmax(-1)
    target = torch.tensor([0])
    got = perturbation_curves(model, x, probs, target, cell_ranks(maps, ["clip"]), b, FRACTIONS)[0].double()

    def p(mean_r):
        return 1 / (1 + math.exp(-0.05 * mean_r))
    deletion, insertion = [], []
    for k in FRACTIONS:
        n = min(cells_at(k, d), size)  # region cells removed (or inserted) first
        deletion.append(p(v - n * (v - b) / size))
        insertion.append(p(b + n * (v - b) / size))
    np.testing.assert_allclose(got[0].numpy(), deletion, rtol=1e-6)
    np.testing.assert_allclose(got[1].numpy(), insertion, rtol=1e-6)
    metric = PerturbationCurves(FRACTIONS)
    metric.update(got[None].float())
    areas = metric.areas()
    assert areas["deletion"] == pytest.approx(np.trapezoid(deletion, FRACTIONS), rel=1e-6)
    assert areas["insertion"] == pytest.approx(np.trapezoid(insertion, FRACTIONS), rel=1e-6)
    assert area_under(FRACTIONS, torch.ones(len(FRACTIONS))) == pytest.approx(1.0)


def test_ties_are_broken_reproducibly_per_clip():
    maps = torch.zeros(3, 1, 6, 5)
    maps[:, :, :2] = 1.0  # ten tied top cells, twenty tied others
    first = cell_ranks(maps, ["a", "b", "c"], seed=0)
    assert torch.equal(first, cell_ranks(maps, ["a", "b", "c"], seed=0))
    assert torch.equal(first[1], cell_ranks(maps[1:2], ["b"], seed=0)[0])  # the batch does not matter
    assert not torch.equal(first[0], first[1])  # clips get their own order
    assert (first.view(3, 6, 5)[:, :2] < 10).all()  # ties only reorder within equal values
    assert sorted(first[0].tolist()) == list(range(30))


def test_deletion_curve_equals_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn(num_bins=32, num_classes=4, width=4)
    g = torch.Generator().manual_seed(0)
    x = -60 + 20 * torch.randn(2, 1, 32, 32, generator=g)
    maps = torch.randn(2, 1, 32, 32, generator=g)  # continuous: no ties, so both orders are argsort(-map)
    with torch.no_grad():
        probs = model(x).softmax(-1)
    target = probs.argmax(-1)
    step, d = 128, 32 * 32
    fractions = tuple(i * step / d for i in range(d // step + 1))
    ours = perturbation_curves(model, x, probs, target, cell_ranks(maps), -100.0, fractions)[:, 0, 1:]
    theirs = quantus.PixelFlipping(features_in_step=step, perturb_baseline=-100.0, normalise=False, abs=False,
                                   disable_warnings=True)(model=model, x_batch=x.numpy(), y_batch=target.numpy(),
                                                          a_batch=maps.numpy(), channel_first=True, softmax=True,
                                                          device="cpu")
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-4, atol=1e-6)


def test_fill_sets_masked_out_cells():
    x = -60 + 20 * torch.randn(2, 1, 16, 8)
    mask = torch.zeros(1, 2, 1, 16, 8)
    for fill, expect in (("floor", torch.full((2,), -100.0)), ("clip_min", x.amin((1, 2, 3))),
                         ("clip_mean", x.mean((1, 2, 3)))):
        x_in, x_out = apply_mask(x.unsqueeze(0), mask, fill_values(x, fill))
        assert torch.allclose(x_in[0].amax((1, 2, 3)), expect) and torch.allclose(x_in[0].amin((1, 2, 3)), expect)
        assert torch.allclose(x_out[0], x)
    with pytest.raises(ValueError, match="fill must be one of"):
        fill_values(x, "zero")


def test_the_fill_reaches_the_metrics_and_curves():
    model = tiny_cnn(num_bins=32, num_classes=3, width=4)
    x = -60 + 20 * torch.randn(2, 1, 64, 32)
    out = {fill: ExplanationPipeline(model, ["energy"], fill=fill, curves=True, batch_size=4).explain(x, ["a", "b"])
           for fill in ("floor", "clip_mean")}
    assert not torch.equal(out["floor"].methods["energy"].scored.x_out, out["clip_mean"].methods["energy"].scored.x_out)
    assert not torch.equal(out["floor"].methods["energy"].curves, out["clip_mean"].methods["energy"].curves)


def test_compn_is_comp_over_ln_d_and_matches_quantus():
    quantus = pytest.importorskip("quantus")
    maps = torch.rand(3, 1, 20, 16)
    maps[0] = 1.0
    d = 20 * 16
    assert torch.allclose(normalised_complexity(maps), complexity(maps) / math.log(d))
    assert normalised_complexity(maps)[0].item() == pytest.approx(1.0)
    oracle = quantus.Complexity(normalise=True, abs=True, disable_warnings=True)(
        model=None, x_batch=maps.numpy(), y_batch=np.zeros(3, dtype=int), a_batch=maps.numpy(), channel_first=True)
    np.testing.assert_allclose(normalised_complexity(maps).numpy(), np.asarray(oracle) / math.log(d), rtol=1e-6)
