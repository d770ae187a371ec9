"""A clip's map and metric values do not depend on the batch it is computed in, and the gradients the
methods use are right for a batch of one (checked against finite differences, not against autograd)."""
import pytest
import torch

from explain import make_method
from explain.evaluate import MaskScorer, predict_probs
from explain.metrics import METRIC_NAMES
from lightning_modules import make_features
from tests.helpers import quickstart_seconds, tiny_cnn

FEATURES = ("mel", "stft")


def spectrograms(kind: str, n: int, seed: int = 0, loudness: bool = False) -> torch.Tensor:
    """(n, 1, T, F) dB spectrograms of 1 s noise with a louder stretch (and random levels)."""
    feats = make_features(kind)
    g = torch.Generator().manual_seed(seed)
    wave = torch.randn(n, feats.sample_rate, generator=g)
    if loudness:
        wave *= torch.rand(n, 1, generator=g)
    wave[:, 8000:16000] *= 6  # a loud stretch, so that the spectrogram is not flat
    with torch.no_grad():
        return feats(wave)


def model_for(kind: str, seed: int = 0):
    """A width-8 Cnn14 whose batch-norm statistics are measured on noise spectrograms: unlike a freshly
    initialised one, its outputs move with the input, so gradients and sums are far from float noise."""
    model = tiny_cnn(num_bins=make_features(kind).num_bins, num_classes=6, seed=seed)
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        model(spectrograms(kind, 8, seed=100 + seed, loudness=True))
    return model.eval()


LAYOUTS = {  # the same values stored frequency-fastest (contiguous) or time-fastest (a transposed view)
    "contiguous": lambda x: x.contiguous(),
    "time-fastest": lambda x: x.transpose(2, 3).contiguous().transpose(2, 3),
}


def directional_derivative(model, x: torch.Tensor, target: int, v: torch.Tensor, h: float = 1e-6) -> float:
    """d f_target(x + t v) / dt at t = 0 by central differences in float64 (forward passes only)."""
    m = model.double()
    try:
        with torch.no_grad():
            up, down = m(x.double() + h * v.double()), m(x.double() - h * v.double())
    finally:
        model.float()
    return float((up[0, target] - down[0, target]) / (2 * h))


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", FEATURES)
@pytest.mark.parametrize("batch", [1, 3])
def test_saliency_is_the_true_input_gradient(kind, batch, layout):
    """Along random directions, against finite differences, for every clip of a batch of one and of several,
    whatever the memory layout of the input (a time-fastest batch of one reached torch's CPU BatchNorm
    backward with strides on which it is wrong). Grad-CAM takes no input gradient; SHAP's backward is
    checked by its additivity below."""
    model = model_for(kind)
    x = LAYOUTS[layout](spectrograms(kind, batch))
    with torch.no_grad():
        target = model(x).argmax(1)
    with torch.enable_grad():
        sal = make_method("saliency", model, batch_size=batch).attribute(x, target)
    g = torch.Generator().manual_seed(1)
    for i in range(batch):
        for _ in range(2):
            v = torch.randn(x[i:i + 1].shape, generator=g)
            fd = directional_derivative(model, x[i:i + 1], int(target[i]), v)
            terms = sal[i] * v[0]
            assert abs(float(terms.sum()) - fd) <= 1e-3 * float(terms.abs().sum()), (i, float(terms.sum()), fd)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", FEATURES)
@pytest.mark.parametrize("batch", [1, 3])
def test_deep_shap_is_additive_for_any_batch(kind, batch, layout):
    """DeepLIFT's backward runs through bn0 too: each map must sum to f_c(x) - mean f_c(background)."""
    model = model_for(kind, seed=2)
    x, bg = LAYOUTS[layout](spectrograms(kind, batch, seed=3)), spectrograms(kind, 4, seed=4) - 30
    with torch.no_grad():
        diff = model(x) - model(bg).mean(0)
    target = diff.abs().argmax(1)  # the class the two differ most on: a sum far from float noise
    shap = make_method("shap", model, batch_size=8)
    shap.set_background(bg)
    with torch.enable_grad():
        a = shap.attribute(x, target)
    expected = diff.gather(1, target[:, None])[:, 0]
    assert expected.abs().min() > 0.1
    assert ((a.sum((1, 2, 3)) - expected).abs() / expected.abs()).max() < 0.01


METHOD_OPTIONS = {"saliency": {}, "gradcam": {}, "lime": {"num_samples": 40}, "shap": {}, "lmac": None}  # None: below


@pytest.fixture(scope="module")
def trained(quickstart_run, quickstart_model):
    """The quickstart model (trained: its outputs move with the input) and six of its test clips."""
    from datamodules import ESC50DataModule
    dm = ESC50DataModule(str(quickstart_run / "data" / "quickstart"), duration=quickstart_seconds())
    dm.setup("test")
    clips = [dm.test_set[i] for i in range(0, 30, 5)]
    with torch.no_grad():
        x = quickstart_model.features(torch.stack([c["waveform"] for c in clips]))
        background = quickstart_model.features(dm.background(1, 4)["waveform"])
    return quickstart_model.spectrogram_model, x, [c["filename"] for c in clips], background


@pytest.mark.parametrize("name", list(METHOD_OPTIONS))
def test_a_clips_map_and_metrics_do_not_depend_on_its_batch(trained, name, request):
    """The same clip alone, second of four, and last of four with other neighbours and another batch size."""
    model, clips, ids, background = trained
    options = METHOD_OPTIONS[name]
    if options is None:  # an interpreter trained for the quickstart's classifier
        options = {"checkpoint": str(request.getfixturevalue("lmac_interpreters")[name])}
    with torch.no_grad():
        target = model(clips).argmax(1)

    def run(order, batch_size):
        method = make_method(name, model, batch_size=batch_size, seed=1, **options)
        if method.needs_background:
            method.set_background(background)
        x = clips[order]
        with torch.enable_grad():
            maps = method.attribute(x, target[order], ids=[ids[i] for i in order])
        probs = predict_probs(model, x, batch_size)
        values = MaskScorer().update(model, x, probs, target[order], maps, batch_size).values["spectrogram"]
        return maps[order.index(2)], values[:, order.index(2)]

    alone = run([2], 1)
    for order, bs in (([0, 2, 1, 3], 4), ([5, 4, 1, 2], 3)):
        m, v = run(order, bs)
        assert (m - alone[0]).abs().max() <= 1e-4 * alone[0].abs().max(), order
        # thresholds (AI, Fid-In) exactly; the others to float noise
        exact = [METRIC_NAMES.index(m) for m in ("AI", "FidIn")]
        assert torch.equal(v[:, exact], alone[1][:, exact]), order
        torch.testing.assert_close(v, alone[1], rtol=1e-3, atol=1e-4)


def test_batch_size_one_gives_the_same_clip_values_through_the_cli(quickstart_run, small_test_root):
    """`--data.batch_size 1` against 4 (which leaves a last batch of one): every clip's values agree."""
    from tests.helpers import ROOT, read_csv, run_here
    runs = {}
    for bs in ("1", "4"):
        run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
                 "--data.root", str(small_test_root), "--data.batch_size", bs, "--explain", "saliency,gradcam,lime,shap",
                 "--explainer.lime_samples", "20", "--explainer.shap_background_per_class", "1", "--explainer.cache", "false",
                 "--explainer.examples", "0", "--explainer.curves", "false", "--trainer.logger", "false",
                 "--data.num_workers", "0", "--trainer.default_root_dir", f"runs/batch-{bs}", cwd=quickstart_run)
        path = next((quickstart_run / "runs" / f"batch-{bs}").glob("test-*/explain/per_clip.csv"))
        runs[bs] = {(r["clip"], r["method"], r["mask"], r["scored"]): r for r in read_csv(path)}
    # what is heard too: its inverse, front-end and model passes run per batch
    assert runs["1"].keys() == runs["4"].keys() and len(runs["1"]) == 13 * 4 * 14 * 2
    for key, one in runs["1"].items():
        four = runs["4"][key]
        assert (one["AI"], one["FidIn"], one["pred_class"]) == (four["AI"], four["FidIn"], four["pred_class"]), key
        for metric in ("FF", "AD", "AG", "SPS", "COMP"):
            assert float(one[metric]) == pytest.approx(float(four[metric]), rel=1e-3, abs=1e-3), (key, metric)
