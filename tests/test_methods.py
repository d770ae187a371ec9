import numpy as np
import pytest
import torch

from explain import known_methods, make_method, parse_methods
from explain.lime import scale01, weighted_ridge
from tests.helpers import tiny_cnn


@pytest.fixture(scope="module")
def model():
    return tiny_cnn(num_classes=5)


@pytest.fixture(scope="module")
def spectrograms():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 1, 101, 64, generator=g) * 15 - 40  # 101 frames keep it quick
    return x[:3], x[3:]  # clips, background


def test_parse_methods():
    assert known_methods()[:4] == ["saliency", "gradcam", "lime", "shap"]
    # every method but the controls, attention (some models only) and the trained interpreters
    assert parse_methods("all") == [n for n in known_methods()
                                    if n not in ("random", "energy", "attention", "lmac", "lmac_heard")]
    assert parse_methods("lime, shap,lime") == ["lime", "shap"]
    with pytest.raises(ValueError, match="known: saliency, gradcam, lime, shap, "):
        parse_methods("lime,nope")


@pytest.mark.parametrize("name", ["saliency", "gradcam", "lime", "shap"])
def test_every_method_gives_a_map_of_the_input_shape(model, spectrograms, name):
    x, bg = spectrograms
    target = torch.tensor([0, 3, 1])
    method = make_method(name, model, batch_size=32, **({"num_samples": 60} if name == "lime" else {}))
    if method.needs_background:
        method.set_background(bg)
    with torch.enable_grad():
        a = method.attribute(x, target, ids=["a", "b", "c"])
    assert a.shape == x.shape and torch.isfinite(a).all() and a.abs().sum() > 0
    # maps differ by target class, so the method really explains the class it is given
    with torch.enable_grad():
        other = method.attribute(x, torch.tensor([2, 2, 2]), ids=["a", "b", "c"])
    assert not torch.allclose(a, other)


def test_saliency_is_the_signed_input_gradient(model, spectrograms):
    x = spectrograms[0][:1].clone().requires_grad_(True)
    model(x)[0, 2].backward()
    with torch.enable_grad():
        a = make_method("saliency", model).attribute(x.detach(), torch.tensor([2]))
    torch.testing.assert_close(a, x.grad)
    assert (a < 0).any() and (a > 0).any()


def test_gradcam_matches_its_definition(model, spectrograms):
    x = spectrograms[0][:1]
    acts = {}
    h = model.conv_block6.conv2.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    with torch.enable_grad():
        out = model(x)
        grad = torch.autograd.grad(out[0, 1], acts["a"])[0]
    h.remove()
    cam = (grad.mean(dim=(2, 3), keepdim=True) * acts["a"]).sum(1, keepdim=True)  # signed, no ReLU
    expected = torch.nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    with torch.enable_grad():
        a = make_method("gradcam", model).attribute(x, torch.tensor([1]))
    torch.testing.assert_close(a, expected.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # many model passes on the CPU
def test_deep_shap_is_additive_on_a_width_8_cnn14():
    """Per clip, the map sums to f_c(x) - mean over the background of f_c, within 1 % of that difference."""
    model = tiny_cnn(num_classes=10, seed=3)
    g = torch.Generator().manual_seed(1)
    bg = torch.randn(20, 1, 501, 64, generator=g) * 15 - 40
    x = torch.randn(4, 1, 501, 64, generator=g) * 15 - 40
    for i in range(4):  # loud patches, so that f(x) is far from the background's mean
        x[i, 0, 100 * i:100 * i + 80, 10 * i:10 * i + 12] += 60
    with torch.no_grad():
        fx, fb = model(x), model(bg)
    target = fx.argmax(1)
    shap = make_method("shap", model, batch_size=40)
    shap.set_background(bg)
    with torch.enable_grad():
        a = shap.attribute(x, target)
    expected = fx.gather(1, target[:, None])[:, 0] - fb[:, target].mean(0)
    rel = ((a.sum((1, 2, 3)) - expected) / expected).abs()
    assert expected.abs().min() > 1e-3
    assert rel.max() < 0.01, rel


def test_weighted_ridge_matches_sklearn():
    from sklearn.linear_model import Ridge
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, (3, 200, 12)).astype(float)
    z[2, :, 9:] = 0  # padded columns of a clip with fewer segments
    y, w = rng.random((3, 200)), rng.random((3, 200))
    ours = weighted_ridge(torch.from_numpy(z), torch.from_numpy(y), torch.from_numpy(w)).numpy()
    for i in range(3):
        cols = 9 if i == 2 else 12
        ref = Ridge(alpha=1.0).fit(z[i, :, :cols], y[i], sample_weight=w[i]).coef_
        np.testing.assert_allclose(ours[i, :cols], ref, atol=1e-10)
    assert np.all(ours[2, 9:] == 0)


@pytest.mark.slow  # many model passes on the CPU
def test_lime_agrees_with_the_lime_package(model, spectrograms):
    """Same segments and the same perturbation matrix: the superpixel weights agree."""
    from lime.lime_image import LimeImageExplainer

    x = spectrograms[0][:1]
    with torch.no_grad():
        target = int(model(x).argmax())
    ours = make_method("lime", model, batch_size=50, num_samples=300)
    segments = ours.segment(x, ["clip"])  # (1, T, F)
    n_seg = int(segments.max()) + 1
    assert n_seg > 5
    lo, hi = x.min(), x.max()
    image = scale01(x)[0, 0].T.double().numpy()  # (F, T) in [0, 1], as the study gave it to lime

    def classifier_fn(images):
        db = torch.from_numpy(images[..., 0]).float() * (hi - lo) + lo
        with torch.no_grad():
            return model(db.transpose(1, 2).unsqueeze(1)).softmax(-1).double().numpy()

    explainer = LimeImageExplainer(random_state=7)
    exp = explainer.explain_instance(image, classifier_fn, labels=(target,), top_labels=None, hide_color=None,
                                     num_samples=300, segmentation_fn=lambda img: segments[0].T.numpy(),
                                     random_seed=1, batch_size=50)
    theirs = dict(exp.local_exp[target])
    patterns = np.random.RandomState(7).randint(0, 2, 300 * n_seg).reshape(300, n_seg)
    patterns[0, :] = 1
    weights = ours.explain_segments(x, torch.tensor([target]), segments, [torch.from_numpy(patterns)])[0]
    ref = np.array([theirs[i] for i in range(n_seg)])
    np.testing.assert_allclose(weights.numpy(), ref, atol=1e-4 * np.abs(ref).max() + 1e-7)


def test_lime_is_seeded_per_clip_not_per_batch(model, spectrograms):
    x = spectrograms[0]
    target = torch.tensor([0, 1, 2])
    lime = make_method("lime", model, num_samples=40, seed=5)
    together = lime.attribute(x, target, ids=["a", "b", "c"])
    alone = lime.attribute(x[1:2], target[1:2], ids=["b"])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(make_method("lime", model, num_samples=40, seed=6).attribute(x[1:2], target[1:2], ids=["b"]),
                              alone)


@pytest.mark.slow  # many model passes on the CPU
def test_deep_shap_equals_captums_deeplift_shap():
    from captum.attr import DeepLiftShap
    model = tiny_cnn(num_classes=6, seed=4)
    g = torch.Generator().manual_seed(2)
    bg = torch.randn(5, 1, 101, 64, generator=g) * 15 - 40
    x = torch.randn(3, 1, 101, 64, generator=g) * 15 - 40
    x[:, :, 20:60, 10:30] += 40
    target = torch.tensor([0, 2, 5])
    ours = make_method("shap", model, batch_size=7)  # 7 // 5 -> one clip per call
    ours.set_background(bg)
    with torch.enable_grad():
        a = ours.attribute(x, target)
        ref = DeepLiftShap(model).attribute(x, baselines=bg, target=target)
    torch.testing.assert_close(a, ref, rtol=1e-3, atol=1e-4 * ref.abs().max().item())
    sliced = make_method("shap", model, batch_size=2)  # background in slices of 2, 2 and 1
    sliced.set_background(bg)
    torch.testing.assert_close(sliced.attribute(x, target), a, rtol=1e-4, atol=1e-6 * ref.abs().max().item())


NEW_METHOD = """
import torch
from .base import AttributionMethod, Option, register


@register("meanshift")
class MeanShift(AttributionMethod):
    \"\"\"The clip minus the background's mean, scaled.\"\"\"

    needs_background = True
    declared_options = (Option("scale", 1.0, "factor of the difference", float),
                        Option("background_per_class", 1, "training clips of each class in the background", least=1),
                        Option("background_size", 4, "at most this many background clips", least=1))

    def __init__(self, model, batch_size=64, seed=0, **options):
        super().__init__(model, batch_size, seed, **options)
        self.background = None

    def set_background(self, background):
        self.background = background

    def attribute(self, x, target, ids=None):
        return self.scale * (x - self.background.mean(0))
"""


def test_a_new_method_with_options_and_a_background_is_one_file(quickstart_run, tmp_path):
    """A file dropped into explain/ registers its method, its options reach it from the CLI and show in
    --help, and it gets its background from the data module; nothing else changes."""
    import json
    import shutil
    from tests.helpers import ROOT, read_csv, run_cli
    project = tmp_path / "project"
    for name in ("explain", "lightning_modules", "datamodules", "callbacks", "report", "configs", "audio_xai"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "main.py", project / "main.py")
    (project / "explain" / "meanshift.py").write_text(NEW_METHOD)
    env = {"PYTHONPATH": str(project)}

    def cli(*args):
        return run_cli(*args, cwd=quickstart_run, env=env, main=project / "main.py")

    assert "meanshift: scale=1.0 (factor of the difference; a number)" in " ".join(cli("test", "--help").stdout.split())
    cli("test", "--config", str(project / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
        "--explain", "meanshift", "--explainer.options", '{"meanshift": {"scale": 2.5, "background_size": 3}}',
        "--trainer.limit_test_batches", "2", "--data.batch_size", "3", "--explainer.examples", "0",
        "--explainer.curves", "false", "--explainer.scored", "spectrogram", "--trainer.logger", "false",
        "--trainer.default_root_dir", "runs/new-method")
    out = next((quickstart_run / "runs" / "new-method").glob("test-*/explain"))
    run = json.loads((out / "run.json").read_text())
    assert run["options"]["meanshift"] == {"scale": 2.5, "background_per_class": 1, "background_size": 3}
    rows = read_csv(out / "results.csv")
    assert {r["method"] for r in rows} == {"meanshift"} and len(rows) == 14 and rows[0]["n"] == "6"


@pytest.mark.slow
def test_a_new_method_is_one_file(tmp_path):
    """A file dropped into explain/ registers its method; nothing else needs to change."""
    import shutil
    import subprocess
    import sys
    from tests.helpers import ROOT
    shutil.copytree(ROOT / "explain", tmp_path / "explain", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "explain" / "ones_map.py").write_text(
        "import torch\nfrom .base import AttributionMethod, register\n\n\n"
        "@register('ones')\nclass OnesMap(AttributionMethod):\n"
        "    def attribute(self, x, target, ids=None):\n        return torch.ones_like(x)\n")
    code = ("import torch, explain; from tests.helpers import tiny_cnn; "
            "m = explain.make_method('ones', tiny_cnn()); "
            "print('ones' in explain.parse_methods('all'), tuple(m.attribute(torch.zeros(2, 1, 8, 64), torch.zeros(2)).shape))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "True (2, 1, 8, 64)" in out.stdout
