import inspect
import math

import numpy as np
import pytest
import torch

from explain.masks import make_masks
from explain.metrics import (AD, AG, AI, COMP, FF, HIGHER_IS_BETTER, METRIC_NAMES, METRICS, ClipMetrics, FidIn,
                             average_drop, average_gain, average_increase, complexity, faithfulness_of_features,
                             fidelity_in, inputs_of, sparseness)


def probs(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_closed_form_probability_metrics():
    p = probs([0.6, 0.3, 0.1], [0.2, 0.5, 0.3])
    p_in = probs([0.8, 0.1, 0.1], [0.45, 0.4, 0.15])
    p_out = probs([0.1, 0.8, 0.1], [0.4, 0.2, 0.4])
    c = torch.tensor([0, 1])
    assert faithfulness_of_features(p, p_out, c).tolist() == pytest.approx([0.5, 0.3])
    assert average_increase(p, p_in, c).tolist() == [100.0, 0.0]
    assert average_drop(p, p_in, c).tolist() == pytest.approx([0.0, 100 * 0.1 / 0.5])
    assert average_gain(p, p_in, c).tolist() == pytest.approx([100 * 0.2 / 0.4, 0.0])
    assert fidelity_in(p, p_in, c).tolist() == [1.0, 0.0]


def test_saturated_probability_gives_finite_values():
    p = probs([1.0, 0.0])
    c = torch.tensor([0])
    assert average_gain(p, p, c).item() == 0.0
    assert average_drop(probs([0.5, 0.5]), probs([0.0, 1.0]), c).item() == pytest.approx(100.0)


def test_metric_classes_average_over_clips_and_merge_like_one_process():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 40, 5, generator=g)
    p, p_in, p_out = logits.softmax(-1)
    c = p.argmax(-1)
    whole, a, b = FF(), FF(), FF()
    whole.update(p, p_out, c)
    a.update(p[:13], p_out[:13], c[:13])
    b.update(p[13:], p_out[13:], c[13:])
    # two processes' states reduced as a distributed run reduces them (each state's dist_reduce_fx)
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(whole.compute().item(), rel=1e-14)
    assert whole.compute().item() == pytest.approx(faithfulness_of_features(p, p_out, c).mean().item())
    for cls, fn in ((AI, average_increase), (AD, average_drop), (AG, average_gain), (FidIn, fidelity_in)):
        m = cls()
        m.update(p[:20], p_in[:20], c[:20])
        m.update(p[20:], p_in[20:], c[20:])
        assert m.compute().item() == pytest.approx(fn(p, p_in, c).mean().item())


def test_sparseness_and_complexity_closed_form():
    d = 64 * 501
    uniform = torch.ones(1, 1, 501, 64)
    assert complexity(uniform).item() == pytest.approx(math.log(d))  # the paper's 10.3755
    assert math.log(d) == pytest.approx(10.3755, abs=1e-4)
    assert sparseness(uniform).item() == pytest.approx(0.0, abs=1e-9)
    one_hot = torch.zeros(1, 1, 501, 64)
    one_hot[0, 0, 10, 3] = 1.0
    assert complexity(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    # Quantus adds 1e-7 to every value: Gini = (d - 1) / (d (1 + d 1e-7))
    assert sparseness(one_hot).item() == pytest.approx((d - 1) / (d * (1 + d * 1e-7)), rel=1e-12)
    half = torch.zeros(1, 10)
    half[0, :5] = 1
    assert complexity(half).item() == pytest.approx(math.log(5))


def test_all_zero_mask_gets_the_documented_values():
    zero = torch.zeros(2, 1, 8, 4)
    assert complexity(zero).tolist() == pytest.approx([math.log(32)] * 2)
    assert sparseness(zero).tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    m = COMP()
    m.update(zero)
    assert math.isfinite(m.compute().item())


@pytest.fixture
def quantus():
    return pytest.importorskip("quantus")


def quantus_scores(metric_cls, maps: np.ndarray) -> np.ndarray:
    """Quantus 0.6 with normalise=True and abs=True, one clip at a time as the study ran it.

    Quantus's __call__ refuses constant maps (all zero, all one, ...) with an assertion, so those go
    through the same steps by hand: its ``normalise_by_max``, ``abs``, then its ``evaluate_batch``.
    """
    from quantus.functions.normalise_func import normalise_by_max
    metric = metric_cls(normalise=True, abs=True, disable_warnings=True, display_progressbar=False)
    out = []
    for a in maps:
        a = a[None].copy()
        x = np.zeros_like(a)
        if np.all(a == a.flat[0]):
            with np.errstate(invalid="ignore"):
                out.append(metric.evaluate_batch(x_batch=x, a_batch=np.abs(normalise_by_max(a)))[0])
        else:
            out.append(metric(model=None, x_batch=x, y_batch=np.zeros(1, dtype=int), a_batch=a,
                              channel_first=True)[0])
    return np.asarray(out, dtype=np.float64)


def mask_suite() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    attr = torch.randn(3, 1, 50, 16, generator=g, dtype=torch.float64)
    attr[1] = attr[1].abs()  # all positive
    masks = make_masks(attr).flatten(0, 1)  # all 14 masks of 3 maps
    extra = torch.zeros(4, 1, 50, 16, dtype=torch.float64)
    extra[1] = 0.7  # constant
    extra[2, 0, 7, 3] = 1.0  # one-hot
    extra[3] = attr[0]  # a signed attribution map itself
    return torch.cat([masks, extra])


def test_sparseness_matches_quantus_on_every_mask(quantus):
    maps = mask_suite()
    ours = sparseness(maps).numpy()
    theirs = quantus_scores(quantus.Sparseness, maps.numpy())
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_complexity_matches_quantus_on_every_mask(quantus):
    maps = mask_suite()
    ours = complexity(maps).numpy()
    theirs = quantus_scores(quantus.Complexity, maps.numpy())
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], atol=1e-5, rtol=0)
    # Quantus divides 0 by 0 on all-zero masks; those are the only ones where it is not finite
    all_zero = (maps.reshape(len(maps), -1).abs().sum(1) == 0).numpy()
    assert all_zero.any() and (~finite == all_zero).all()


def test_presorted_masks_give_the_same_sparseness():
    masks = mask_suite()[:-1]  # the masks, not the signed map at the end
    flat = masks.reshape(len(masks), -1)
    np.testing.assert_allclose(sparseness(torch.sort(flat, 1).values, presorted=True).numpy(),
                               sparseness(masks).numpy(), rtol=0, atol=1e-12)


def test_drop_and_gain_stay_in_their_range_in_float32():
    """AD and AG are percentages: float32 rounding (100 * (p - p_in) / p) once gave AD = 100.0000076."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(200_000, generator=g)
    rows = torch.stack([p, 1 - p], 1)
    c = torch.zeros(len(p), dtype=torch.long)
    for p_in in (torch.zeros_like(p), p * 1e-9, torch.ones_like(p), 1 - (1 - p) * 1e-9):
        rows_in = torch.stack([p_in, 1 - p_in], 1)
        for fn in (average_drop, average_gain):
            v = fn(rows, rows_in, c)
            assert v.min() >= 0 and v.max() <= 100, fn.__name__


def test_threshold_metrics_ignore_float_noise():
    """The same input computed in another batch moves probabilities by float noise (seen: 5e-5): neither AI
    nor Fid-In may flip on that, and a real change still counts."""
    from explain.metrics import PROB_TOL
    p = probs([0.5, 0.3, 0.2], [0.40, 0.39995, 0.20005])
    c = torch.tensor([0, 0])
    noisy = p + torch.tensor([[5e-5, -5e-5, 0.0], [-4e-5, 4e-5, 0.0]], dtype=torch.float64)
    assert average_increase(p, noisy, c).tolist() == [0.0, 0.0]
    assert fidelity_in(p, noisy, c).tolist() == [1.0, 1.0]  # the second is a near-tie within the tolerance
    moved = p + torch.tensor([[3 * PROB_TOL, -3 * PROB_TOL, 0.0], [-0.2, 0.2, 0.0]], dtype=torch.float64)
    assert average_increase(p, moved, c).tolist() == [100.0, 0.0]
    assert fidelity_in(p, moved, c).tolist() == [1.0, 0.0]


def test_each_metric_names_the_inputs_it_consumes():
    """FF compares X with X_out, AI, AD, AG and Fid-In compare X with X_in (the protocol), SPS and COMP score
    the map; every input ``update`` names is a parameter of the metric's functional form."""
    probs_in = {"probs": True, "probs_in": True, "target": True}
    expected = {"FF": {"probs": True, "probs_out": True, "target": True}, "AI": probs_in, "AD": probs_in,
                "AG": probs_in, "FidIn": probs_in, "SPS": {"maps": True, "presorted": False},
                "COMP": {"maps": True}, "COMPn": {"maps": True}}
    assert {n: inputs_of(cls) for n, cls in METRICS.items()} == expected
    for cls in METRICS.values():
        assert set(inputs_of(cls)) <= set(inspect.signature(cls.functional).parameters)


def test_which_way_each_metric_is_better_comes_from_its_class():
    assert {n for n, higher in HIGHER_IS_BETTER.items() if not higher} == {"AD", "COMP", "COMPn"}  # the paper flips AD, COMP
    assert HIGHER_IS_BETTER == {n: METRICS[n].higher_is_better for n in METRIC_NAMES}


def clip_inputs(seed: int, b: int = 9):
    g = torch.Generator().manual_seed(seed)
    p, p_in, p_out = torch.randn(3, b, 6, generator=g).softmax(-1)
    maps = torch.rand(b, 1, 12, 5, generator=g, dtype=torch.float64)
    maps[0] = 0.0
    return {"probs": p, "probs_in": p_in, "probs_out": p_out, "target": p.argmax(-1), "maps": maps}


def by_hand(inp) -> torch.Tensor:
    """Per-clip values from the functional forms, each given the probabilities the protocol names."""
    p, p_in, p_out, c, maps = inp["probs"], inp["probs_in"], inp["probs_out"], inp["target"], inp["maps"]
    cols = [faithfulness_of_features(p, p_out, c), average_increase(p, p_in, c), average_drop(p, p_in, c),
            average_gain(p, p_in, c), fidelity_in(p, p_in, c), sparseness(maps), complexity(maps),
            complexity(maps) / math.log(maps[0].numel())]
    return torch.stack([v.double() for v in cols], -1)


def test_the_collection_routes_inputs_by_name_and_returns_the_functional_values():
    metrics = ClipMetrics()
    first, second = clip_inputs(0), clip_inputs(1)
    values = [metrics.values(**first), metrics.values(**second)]
    for got, inp in zip(values, (first, second)):
        assert got.dtype == torch.float64 and got.shape == (9, len(METRIC_NAMES))
        assert torch.equal(got, by_hand(inp))
        metrics.update(got)
    means = torch.cat([by_hand(first), by_hand(second)]).mean(0)
    assert metrics.compute().shape == (1, len(METRIC_NAMES))
    assert metrics.compute()[0].tolist() == pytest.approx(means.tolist(), rel=1e-12)
    assert metrics.count() == 18
    for i, name in enumerate(METRIC_NAMES):  # each metric's own torchmetrics class gives the same mean
        alone = METRICS[name]()
        for inp in (first, second):
            alone.update(**{k: inp[k] for k in inputs_of(METRICS[name]) if k in inp})
        assert metrics.compute()[0, i].item() == pytest.approx(alone.compute().item(), rel=1e-12)


def test_one_state_holds_every_row_and_sums_each_as_the_metric_alone_would():
    """Rows (a method's masks) share one (rows, metrics) float64 state; each cell's sum equals, bit for bit,
    the float64 sum of that row's and metric's values taken alone, batch after batch."""
    metrics = ClipMetrics(rows=3)
    batches = [torch.stack([metrics.values(**clip_inputs(seed + row, b)) for row in range(3)])
               for seed, b in ((0, 9), (10, 1), (20, 16))]
    for values in batches:
        metrics.update(values)
    for row in range(3):
        for i in range(len(METRIC_NAMES)):
            total = torch.tensor(0.0, dtype=torch.float64)
            for values in batches:
                total += values[row, :, i].contiguous().sum()
            assert metrics.total[row, i].item() == total.item()
    assert metrics.count() == 26
    with pytest.raises(ValueError, match=r"expected values of shape \(3, B, 8\)"):
        metrics.update(batches[0][:2])


def test_a_mean_computed_before_more_clips_is_not_reused():
    metrics = ClipMetrics()
    metrics.update(metrics.values(**clip_inputs(0)))
    before = metrics.compute().clone()
    metrics.update(metrics.values(**clip_inputs(1)))
    after = metrics.compute()
    expected = torch.cat([by_hand(clip_inputs(0)), by_hand(clip_inputs(1))]).mean(0)
    assert after[0].tolist() == pytest.approx(expected.tolist(), rel=1e-12) and not torch.equal(after, before)


def test_presorted_maps_are_routed_to_the_conciseness_metrics():
    inp = clip_inputs(2)
    flat = inp["maps"].reshape(len(inp["maps"]), -1)
    unsorted = ClipMetrics().values(**{**inp, "maps": flat})
    presorted = ClipMetrics().values(**{**inp, "maps": flat.sort(1).values, "presorted": True})
    torch.testing.assert_close(presorted, unsorted, rtol=0, atol=1e-12)


def test_the_collection_refuses_unknown_and_missing_inputs():
    inp = clip_inputs(0)
    with pytest.raises(TypeError, match=r"no metric takes the input\(s\) \['prob_in'\]"):
        ClipMetrics().values(**inp, prob_in=inp["probs_in"])
    with pytest.raises(TypeError, match=r"metric FF needs the input\(s\) \['probs_out'\]"):
        ClipMetrics().values(**{k: v for k, v in inp.items() if k != "probs_out"})
