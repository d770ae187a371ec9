"""The model-parameter randomisation test: its cascade, its similarities, and Quantus's MPRT as the oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explain import make_method
from explain.sanity import (LAYERS, cascade, randomisation_test, reinitialise, sanity_rows, similarity,
                            still_similar)
from tests.helpers import tiny_cnn


def spectrograms(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return -60 + 20 * torch.randn(n, 1, 64, 32, generator=g)


def explainer(x, target):
    def explain(model, name):
        return make_method(name, model, batch_size=8).attribute(x, target, ids=[str(i) for i in range(len(x))])
    return explain


def test_cascade_randomises_from_the_head_down_cumulatively_and_seeded():
    model = tiny_cnn(num_bins=32, num_classes=3, width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    for layer, randomised in cascade(model, LAYERS, seed=3):
        state = randomised.state_dict()
        done = LAYERS[:LAYERS.index(layer) + 1]
        for key, value in state.items():
            changed = not torch.equal(value, before[key])
            if key.split(".")[0] in done and key.endswith("weight") and "bn" not in key:
                assert changed, (layer, key)
            if key.split(".")[0] not in done:
                assert not changed, (layer, key)  # layers below this step are untouched
        seen.append((layer, {k: v.clone() for k, v in state.items()}))
    assert [s[0] for s in seen] == list(LAYERS)
    # earlier steps stay randomised as they were: head's weights after the last step are those of step 1
    assert torch.equal(seen[-1][1]["head.weight"], seen[0][1]["head.weight"])
    again = dict(cascade(model, LAYERS[:1], seed=3))["head"].state_dict()
    assert torch.equal(again["head.weight"], seen[0][1]["head.weight"])
    other = dict(cascade(model, LAYERS[:1], seed=4))["head"].state_dict()
    assert not torch.equal(other["head.weight"], seen[0][1]["head.weight"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model itself is unchanged


def test_reinitialise_is_the_construction_initialisation():
    from lightning_modules.cnn14 import ConvBlock
    block = ConvBlock(8, 16)
    reinitialise(block, 0)
    bound = (6 / (8 * 9 + 16 * 9)) ** 0.5  # Xavier uniform of a 3x3 convolution, 8 -> 16 channels
    w = block.conv1.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert torch.equal(block.bn1.weight, torch.ones(16)) and torch.equal(block.bn1.running_var, torch.ones(16))


def test_a_map_that_ignores_the_model_stays_similar_while_saliency_falls():
    model = tiny_cnn(num_bins=32, num_classes=3, width=4)
    x = spectrograms(6)
    target = model(x).argmax(1)
    result = randomisation_test(model, explainer(x, target), ["saliency", "energy"], LAYERS, seed=0)
    for layer in LAYERS:
        for kind in ("spearman", "spearman_abs", "ssim"):
            assert result["energy"][layer][kind] == [1.0] * 6
    last = np.mean(result["saliency"][LAYERS[-1]]["spearman_abs"])
    assert last < 0.5
    rows = sanity_rows(result)
    assert len(rows) == 2 * len(LAYERS) * 3
    assert still_similar(rows) == ["energy"]
    for row in rows:
        assert row.ci_low <= row.value <= row.ci_high and row.n == 6


def test_similarities_against_scipy_and_skimage():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity
    g = np.random.default_rng(0)
    a, b = g.normal(size=(1, 20, 16)), g.normal(size=(1, 20, 16))
    assert similarity(a, b, "spearman") == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic)
    assert similarity(a, b, "spearman_abs") == pytest.approx(spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic)
    span = max(np.ptp(a), np.ptp(b))
    assert similarity(a, b, "ssim") == pytest.approx(structural_similarity(a[0], b[0], data_range=span))
    assert similarity(a, a, "ssim") == pytest.approx(1.0)


def test_randomisation_test_equals_quantus_mprt():
    quantus = pytest.importorskip("quantus")
    model = tiny_cnn(num_bins=32, num_classes=3, width=4)
    x = spectrograms(3, seed=1)
    target = model(x).argmax(1)
    qseed = 42
    layers = [name for name, m in model.named_modules() if hasattr(m, "reset_parameters")][::-1]

    def quantus_reinit(module, seed):  # Quantus's rule: reset_parameters() after manual_seed(seed + 1)
        torch.manual_seed(qseed + 1)
        module.reset_parameters()

    ours = randomisation_test(model, explainer(x, target), ["saliency"], layers, reinit=quantus_reinit)["saliency"]

    def explain_func(model, inputs, targets, **kwargs):
        maps = make_method("saliency", model, batch_size=8).attribute(
            torch.as_tensor(inputs), torch.as_tensor(targets), ids=[str(i) for i in range(len(inputs))])
        return maps.detach().numpy()

    theirs = quantus.MPRT(layer_order="top_down", seed=qseed, abs=False, normalise=False, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=None, channel_first=True,
        explain_func=explain_func, device="cpu")
    assert list(theirs)[1:] == layers
    for layer in layers:
        np.testing.assert_allclose(ours[layer]["spearman"], theirs[layer], rtol=1e-6, atol=1e-8)


def test_the_pipeline_reports_each_step_of_the_check_and_prints_nothing_itself(capsys):
    """The check can take as long as the explanations: each method's maps of each model is a step of its
    progress (explain/progress.py); what shows it is the caller's choice."""
    from explain.pipeline import ExplanationPipeline
    model = tiny_cnn(num_bins=32, num_classes=3, width=4)
    x = spectrograms()
    heard = []
    ExplanationPipeline(model, ["saliency", "random"], batch_size=8).sanity(
        x, torch.zeros(len(x), dtype=torch.long), [str(i) for i in range(len(x))], LAYERS,
        progress=lambda *call: heard.append(call))
    total = 2 * (len(LAYERS) + 1)
    assert heard[:2] == [("saliency, trained model", 0, total), ("random, trained model", 1, total)]
    for i, layer in enumerate(LAYERS, 1):
        for j, method in enumerate(["saliency", "random"]):
            assert heard[2 * i + j] == (f"{method}, random down to {layer} ({i}/{len(LAYERS)} layers)", 2 * i + j,
                                        total)
    assert heard[-1] == ("done", total, total) and len(heard) == total + 1
    assert capsys.readouterr().err == ""
