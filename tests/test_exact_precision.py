"""Exact thresholds at low precision (explain/batching.py ``Precision``): a bf16 run's AI and Fid-In are the
float32 run's, clip by clip, and its continuous metrics stay close."""
import pytest
import torch

import explain.batching as batching
from explain.batching import Precision
from explain.metrics import METRIC_NAMES, PROB_TOL, average_increase, fidelity_in, near_thresholds
from explain.pipeline import ExplanationPipeline
from lightning_modules import make_features
from tests.helpers import tiny_cnn


def test_near_thresholds_are_the_decisions_a_bounded_error_can_flip():
    """Against the decisions themselves at the extremes of the error: a row is near when moving every
    probability of X_in by at most the bound, in the worst direction for each decision, changes AI or Fid-In."""
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(64, 4, generator=g) * 2, -1)
    target = probs.argmax(-1)
    # masked-in probabilities close to the clean ones, so that many decisions are near a threshold
    probs_in = torch.softmax(probs.log() + 0.05 * torch.randn(3, 64, 4, generator=g), -1)
    bound = 0.01
    own = torch.nn.functional.one_hot(target, 4).bool().expand_as(probs_in)

    def decisions(shift_own: float, shift_others: float):
        moved = probs_in + torch.where(own, shift_own, shift_others)
        return average_increase(probs, moved, target), fidelity_in(probs, moved, target)

    low, high = decisions(-bound, bound), decisions(bound, -bound)
    can_flip = (low[0] != high[0]) | (low[1] != high[1])
    near = near_thresholds(probs, probs_in, target, bound)
    assert 0 < int(near.sum()) < near.numel()  # the case is not trivial either way
    assert torch.equal(near, can_flip)
    assert not near_thresholds(probs, probs_in, target, 0.0).any()


def test_the_bound_adds_tf32_only_where_tf32_exists():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert Precision("32", False).bound(cuda) == 0
    assert Precision("32", True).bound(cpu) == 0  # a CPU has no TF32: nothing to redo
    assert Precision("32", True).bound(cuda) == batching.ERROR_BOUNDS["tf32"]
    assert Precision("bf16", True).bound(cuda) == batching.ERROR_BOUNDS["bf16"] + batching.ERROR_BOUNDS["tf32"]
    assert batching.ERROR_BOUNDS["tf32"] > 2.7e-4 and batching.ERROR_BOUNDS["bf16"] > 4.3e-3  # the H200's figures


METHODS = ["saliency", "gradcam", "random", "energy"]
AI, FID, CONTINUOUS = METRIC_NAMES.index("AI"), METRIC_NAMES.index("FidIn"), ("FF", "AD", "AG")


@pytest.fixture(scope="module")
def clips():
    """Four 0.5 s mel spectrograms of noise with a louder stretch at clip-dependent places and levels."""
    feats = make_features("mel")
    g = torch.Generator().manual_seed(3)
    wave = torch.randn(4, feats.sample_rate // 2, generator=g) * torch.rand(4, 1, generator=g)
    for i in range(4):
        start = 1000 * i
        wave[i, start:start + 2500] *= 2 + i
    with torch.no_grad():
        return feats(wave)


def run(model, x, precision: str):
    pipe = ExplanationPipeline(model, METHODS, precision=precision, batch_size=32)  # few calls: bf16 is slow on a CPU
    out = pipe.explain(x, [f"c{i}.wav" for i in range(len(x))])
    return torch.stack([out.methods[n].scored.values["spectrogram"] for n in METHODS]), out


@pytest.mark.slow  # about 40 s of CPU time: bfloat16 is slow on a CPU, and the run is made three times
def test_a_bf16_run_decides_ai_and_fid_in_as_the_float32_run(clips, monkeypatch):
    model = tiny_cnn(num_classes=6, seed=1)
    full, _ = run(model, clips, "32")
    low, out = run(model, clips, "bf16")
    # the same clips, maps and decisions: every (method, mask, clip)
    assert torch.equal(low[..., AI], full[..., AI])
    assert torch.equal(low[..., FID], full[..., FID])
    for m in CONTINUOUS:  # means within 0.5 points (FF counts 100 points to 1)
        j, scale = METRIC_NAMES.index(m), 100.0 if m == "FF" else 1.0
        assert (low[..., j].mean((-1)) - full[..., j].mean(-1)).abs().max() * scale <= 0.5, m
    # and the same run without the float32 second pass flips some (AI here; Fid-In: the test above)
    monkeypatch.setitem(batching.ERROR_BOUNDS, "bf16", 0.0)
    fast, _ = run(model, clips, "bf16")
    assert not (torch.equal(fast[..., AI], full[..., AI]) and torch.equal(fast[..., FID], full[..., FID]))
