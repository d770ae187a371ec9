"""The study protocol reproduces what the study's code computed, each departure against an independent
oracle (the library or formula the study ran), and the corrected protocol keeps today's behaviour."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from explain import make_method
from explain.metrics import average_drop, average_gain, complexity, sparseness
from explain.pipeline import ExplanationPipeline
from explain.protocol import DEPARTURES, PROTOCOLS, departures_markdown, settings
from tests.helpers import ROOT, quickstart_seconds, tiny_cnn


class FunctionalCnn14(nn.Module):
    """The study's Cnn14: the same weights, but ReLU, pooling, max and mean as function calls (PANNs'
    ``models.py``), which shap's DeepExplainer hooks do not see."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        x = n.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 7):
            b = getattr(n, f"conv_block{i}")
            x = F.relu(b.bn1(b.conv1(x)))
            x = F.relu(b.bn2(b.conv2(x)))
            if i < 6:
                x = F.avg_pool2d(x, 2)
        x = torch.mean(x, dim=3)
        x1, _ = torch.max(x, dim=2)
        x = x1 + torch.mean(x, dim=2)
        x = F.relu(n.fc1(x))
        return n.head(x)


def spectrograms(n: int, frames: int = 64, bins: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return -60 + 20 * torch.randn(n, 1, frames, bins, generator=g)


def test_study_shap_equals_shap_deepexplainer_on_the_functional_cnn14():
    shap = pytest.importorskip("shap")
    model = tiny_cnn(num_bins=32, num_classes=4, width=4)
    x, background = spectrograms(3, seed=1), spectrograms(6, seed=2)
    functional = FunctionalCnn14(model).eval()
    with torch.no_grad():
        assert torch.allclose(functional(x), model(x), atol=1e-5)  # the same network, written the study's way
        target = model(x).argmax(1)
    values, ranks = shap.DeepExplainer(functional, background).shap_values(x, ranked_outputs=1,
                                                                           check_additivity=False)
    assert (torch.as_tensor(np.asarray(ranks))[:, 0] == target).all()
    oracle = torch.as_tensor(np.asarray(values))[..., 0]
    ours = make_method("shap", model, rule="gradient")
    ours.set_background(background)
    got = ours.attribute(x, target)
    assert torch.allclose(got, oracle.float(), rtol=1e-4, atol=1e-5 * oracle.abs().max().item())
    # and it is not Deep SHAP: the rescale rule gives another map
    deep = make_method("shap", model)
    deep.set_background(background)
    assert not torch.allclose(deep.attribute(x, target), got, rtol=1e-2, atol=1e-3 * oracle.abs().max().item())


def bilinear_half_pixel(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """OpenCV's INTER_LINEAR resize of a 2-D array: source coordinate (i + 0.5) * in / out - 0.5, clamped."""
    def axis(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo
    r0, r1, wr = axis(a.shape[0], rows)
    c0, c1, wc = axis(a.shape[1], cols)
    top = a[r0][:, c0] * (1 - wc) + a[r0][:, c1] * wc
    bottom = a[r1][:, c0] * (1 - wc) + a[r1][:, c1] * wc
    return top * (1 - wr[:, None]) + bottom * wr[:, None]


def raw_cam(model, x, target) -> torch.Tensor:
    """Grad-CAM of conv_block6.conv2 from its activations and gradients (hooks), (B, T', F')."""
    store = {}
    layer = model.conv_block6.conv2
    handle = layer.register_forward_hook(lambda m, i, o: store.update(act=o))
    try:
        out = model(x)
        (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), store["act"])
    finally:
        handle.remove()
    return (grad.mean((2, 3), keepdim=True) * store["act"]).sum(1).detach()


@pytest.mark.parametrize("resize", ["transposed", "aligned"])
def test_gradcam_resize_equals_a_plain_bilinear_resize_of_the_cam(resize):
    model = tiny_cnn(num_bins=64, num_classes=4, width=4)
    x = spectrograms(2, frames=101, bins=64, seed=3)
    target = model(x).argmax(1)
    cam = raw_cam(model, x, target).numpy()  # (B, T', F') = (B, 4, 2)
    t, f = x.shape[2:]
    if resize == "transposed":  # cv2.resize(cam, (T, F)): an (F, T) grid, read in the study's (F, T) layout
        oracle = np.stack([bilinear_half_pixel(c, f, t).T for c in cam])
    else:
        oracle = np.stack([bilinear_half_pixel(c, t, f) for c in cam])
    got = make_method("gradcam", model, resize=resize).attribute(x, target)[:, 0]
    assert got.shape == (2, t, f)
    np.testing.assert_allclose(got.detach().numpy(), oracle, rtol=1e-4, atol=1e-6 * np.abs(oracle).max())


def test_corrected_gradcam_puts_more_mass_in_the_signature_span_than_the_study(quickstart_run, quickstart_model):
    from datamodules import ESC50DataModule, read_signatures
    from tests.test_ground_truth import signature_boxes

    root = quickstart_run / "data" / "quickstart"
    dm = ESC50DataModule(root=str(root), batch_size=40, duration=quickstart_seconds())
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        x = quickstart_model.features(batch["waveform"])
        pred = quickstart_model.net(x).argmax(1)
    _, span = signature_boxes(quickstart_model.features, batch["filename"], read_signatures(root), x.shape[2])
    share = {}
    for resize in ("aligned", "transposed"):
        pos = make_method("gradcam", quickstart_model.net, resize=resize).attribute(x, pred)[:, 0].clamp_min(0)
        total = pos.sum((1, 2))
        keep = total > 0
        share[resize] = ((pos.sum(2) * span).sum(1)[keep] / total[keep]).mean().item()
    print(share)
    assert share["aligned"] > share["transposed"]


def test_constant_masks_score_zero_only_under_the_study_rule():
    d = 64 * 501
    ones = torch.ones(1, d)
    near = ones + 1e-6 * torch.rand(1, d)  # within the study's tolerance of 1e-8 + 1e-5 * max
    varied = torch.rand(1, d)
    for maps in (ones, near):
        assert complexity(maps, constant_zero=True).item() == 0.0
        assert sparseness(maps, constant_zero=True).item() == 0.0
        assert complexity(maps).item() == pytest.approx(math.log(d), abs=1e-6)  # ln(64 x 501) = 10.3755
    assert math.log(d) == pytest.approx(10.3755, abs=1e-4)
    # a map outside the tolerance scores the same under both rules
    assert complexity(varied, constant_zero=True).item() == complexity(varied).item() > 0
    assert sparseness(varied, constant_zero=True).item() == sparseness(varied).item() > 0


def test_ad_and_ag_epsilons_are_the_studys():
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [1.0, 0.0]])
    probs_in = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.8, 0.2]])
    target = torch.tensor([0, 1, 0])
    p, q = probs[torch.arange(3), target].double(), probs_in[torch.arange(3), target].double()
    ad = [100 * max(0.0, a - b) / (a + 1e-6) for a, b in zip(p.tolist(), q.tolist())]
    ag = [100 * max(0.0, b - a) / (1 - a + 1e-6) for a, b in zip(p.tolist(), q.tolist())]
    assert average_drop(probs, probs_in, target, eps=1e-6).tolist() == pytest.approx(ad, rel=1e-12)
    assert average_gain(probs, probs_in, target, eps=1e-6).tolist() == pytest.approx(ag, rel=1e-12)
    # without the epsilon the first clip's AD is the plain ratio
    assert average_drop(probs, probs_in, target)[0].item() == pytest.approx(100 * (0.9 - 0.5) / 0.9, rel=1e-6)


def test_the_study_protocol_on_real_clips(mini_root):
    """Saliency on the real clips under both protocols: identical maps and model outputs; SPS and COMP differ
    exactly on the masks numpy calls constant, AD and AG by the epsilon."""
    from datamodules.audio import load_clip
    from lightning_modules.features import MeldB

    files = sorted((mini_root / "audio").glob("*.wav"))[:4]
    wave = torch.stack([load_clip(f, 32000, 5.0) for f in files])
    with torch.no_grad():
        x = MeldB()(wave)
    assert tuple(x.shape[1:]) == (1, 501, 64)
    model = tiny_cnn(num_bins=64, num_classes=5, width=4)
    ids = [f.name for f in files]
    out = {p: ExplanationPipeline(model, ["saliency"], protocol=p, batch_size=8).explain(x, ids) for p in PROTOCOLS}
    study, corrected = out["study"], out["corrected"]
    assert torch.equal(study.methods["saliency"].maps, corrected.methods["saliency"].maps)
    from explain.masks import MASK_NAMES, make_masks
    masks = make_masks(corrected.methods["saliency"].maps, MASK_NAMES).flatten(2).double().numpy()  # (K, B, d)
    const = masks.max(-1) - masks.min(-1) < 1e-8 + 1e-5 * np.abs(masks).max(-1)
    assert const.any() and not const.all()  # the bin or topK_pos masks of some clips are all ones
    names = ["FF", "AI", "AD", "AG", "FidIn", "SPS", "COMP"]
    s, c = (r.methods["saliency"].scored.values["spectrogram"].numpy() for r in (study, corrected))
    for m in ("SPS", "COMP"):
        i = names.index(m)
        assert (s[..., i][const] == 0).all()
        np.testing.assert_allclose(s[..., i][~const], c[..., i][~const], rtol=1e-12)
    assert np.allclose(c[..., names.index("COMP")][const], math.log(501 * 64))
    for m in ("FF", "AI", "FidIn"):
        np.testing.assert_array_equal(s[..., names.index(m)], c[..., names.index(m)])


def test_protocols_set_the_departures_they_list():
    study, corrected = settings("study"), settings("corrected")
    assert study[0]["gradcam"]["resize"] == "transposed" and corrected[0]["gradcam"]["resize"] == "aligned"
    assert study[0]["shap"]["rule"] == "gradient" and corrected[0]["shap"]["rule"] == "deeplift"
    assert study[1] == {"constant_zero": True, "eps": 1e-6}
    assert corrected[1] == {"constant_zero": False, "eps": None}
    with pytest.raises(ValueError, match="protocol must be one of"):
        settings("paper")


def test_a_methods_own_option_overrides_its_protocol_setting():
    model = tiny_cnn(num_bins=32, num_classes=3, width=4)
    pipe = ExplanationPipeline(model, ["gradcam"], options={"gradcam": {"resize": "aligned"}}, protocol="study")
    assert pipe.methods["gradcam"].resize == "aligned"
    assert pipe.metric_options["constant_zero"] is True


def test_the_cache_keys_the_methods_a_protocol_changes(tmp_path):
    model = tiny_cnn(num_bins=32, num_classes=3, width=4)
    x, ids = spectrograms(2, seed=5), ["a.wav", "b.wav"]
    for protocol in PROTOCOLS:
        pipe = ExplanationPipeline(model, ["saliency", "gradcam"], protocol=protocol, batch_size=4, cache_dir=tmp_path)
        pipe.explain(x, ids)
        counts = pipe.counts
    # the second protocol recomputes Grad-CAM (another resize) and reuses Saliency's maps (the same)
    assert counts == {"saliency": {"cached": 2, "computed": 0}, "gradcam": {"cached": 0, "computed": 2}}


def test_the_protocols_page_lists_every_departure():
    page = (ROOT / "docs" / "protocols.md").read_text()
    assert departures_markdown() in page, "regenerate docs/protocols.md's table with explain.protocol.departures_markdown()"
    assert len(DEPARTURES) == 5
