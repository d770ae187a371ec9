"""L-MAC (explain/interpreter.py, explain/lmac.py): the interpreter's loss through what is heard has the gradient
finite differences give, a bad input is one line naming its option, the rows are named by what the interpreter was
trained on, and trained on the quickstart each interpreter beats the random map on the input it was trained for."""
import numpy as np
import pytest
import torch

from audio_xai.errors import UsageError
from explain import make_method, parse_methods
from explain.base import row_names
from explain.interpreter import LMAC
from explain.masks import make_masks
from lightning_modules import AudioClassifier, Cnn14
from lightning_modules.features import safe_sqrt
from tests.helpers import save_classifier, save_interpreter


def tiny_classifier(path, features: str = "mel", seed: int = 0):
    """A width-4 Cnn14 classifier of 3 classes with spread batch-norm statistics (its outputs move with the
    input), saved as a checkpoint."""
    torch.manual_seed(seed)
    model = AudioClassifier(features=features, width=4, num_classes=3, spec_augment="none")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return save_classifier(model.eval(), path)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two classifiers (other weights) and interpreters of the first, trained on the spectrogram and heard."""
    folder = tmp_path_factory.mktemp("lmac")
    first, second = tiny_classifier(folder / "first.ckpt"), tiny_classifier(folder / "second.ckpt", seed=1)
    return {"first": first, "second": second,
            "lmac": save_interpreter(first, folder / "lmac.ckpt"),
            "lmac_heard": save_interpreter(first, folder / "lmac_heard.ckpt", trained_on="heard")}


def noise_clips(n: int, seconds: float = 0.5, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(n, int(32000 * seconds), generator=g, dtype=dtype)
    wave[:, 4000:8000] *= 6  # a loud stretch
    return wave


@pytest.mark.parametrize("features", ["mel", "stft"])
def test_the_heard_loss_has_the_gradient_finite_differences_give(tmp_path, features):
    """The loss of a mask through audio and back (the mel inverse's least squares and updates included), in float64,
    along four random directions of the mask: torch's gradcheck against central differences."""
    interpreter = LMAC(str(tiny_classifier(tmp_path / "c.ckpt", features)), trained_on="heard", dim=4).double()
    wave = noise_clips(1, dtype=torch.float64)
    with torch.no_grad():
        x, phase = interpreter.features(wave, return_phase=True)
        pred = interpreter.net(x).argmax(-1)
    g = torch.Generator().manual_seed(1)
    base = 0.2 + 0.6 * torch.rand(x.shape, generator=g, dtype=torch.float64)
    directions = 0.05 * torch.randn(4, *x.shape, generator=g, dtype=torch.float64)

    def loss(v):
        return interpreter.loss(x, phase, wave.shape[-1], base + torch.einsum("k,k...->...", v, directions), pred)[0]

    v = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (v,), eps=1e-6, atol=1e-7, rtol=1e-4)
    loss(v).backward()
    assert v.grad.abs().min() > 0  # every direction moves it: the check compared something


def test_the_safe_square_root_gives_the_values_of_the_square_root():
    power = torch.tensor([-1.0, 0.0, 1e-30, 1e-10, 2.0, 1e12])
    assert torch.equal(safe_sqrt(power), power.clamp_min(0).sqrt())
    power.requires_grad_(True)
    safe_sqrt(power).sum().backward()
    assert torch.isfinite(power.grad).all() and power.grad[:2].eq(0).all()
    torch.testing.assert_close(power.grad[2:], 0.5 / power.detach()[2:].sqrt())


def test_the_mask_reads_the_classifiers_conv_blocks_and_lies_on_the_input_grid(made):
    interpreter = LMAC(str(made["first"]), dim=4)
    assert interpreter.layers == tuple(f"conv_block{i}" for i in range(1, 7))
    x = interpreter.features(noise_clips(2, 0.7))  # another length than the probe's: the grid is fitted
    logits, mask = interpreter.mask(x)
    assert mask.shape == x.shape and mask.amin((1, 2, 3)).eq(0).all() and mask.amax((1, 2, 3)).eq(1).all()
    assert torch.equal(make_masks(mask, ("minmax",))[0], mask)  # its native mask is itself
    # the decoder reads the features: other weights of a block give another mask
    with torch.no_grad():
        interpreter.net.conv_block3.conv1.weight.mul_(-1)
    assert not torch.allclose(interpreter.mask(x)[1], mask)


def test_explaining_gives_the_decoders_mask_and_a_clip_alone_its_mask_among_others(made):
    classifier = AudioClassifier.load_from_checkpoint(made["first"]).eval()
    interpreter = LMAC(str(made["first"]), dim=8)
    interpreter.load_state_dict(torch.load(made["lmac"], weights_only=True)["state_dict"], strict=False)
    x = classifier.features(noise_clips(4))
    method = make_method("lmac", classifier.spectrogram_model, batch_size=3, checkpoint=str(made["lmac"]))
    method.check_model(x[:1])
    maps = method.attribute(x, None)
    torch.testing.assert_close(maps, interpreter.mask(x)[1])
    alone = make_method("lmac", classifier.spectrogram_model, batch_size=1, checkpoint=str(made["lmac"])).attribute(x[2:3], None)
    assert (alone[0] - maps[2]).abs().max() <= 1e-5


def test_rows_are_named_by_what_the_interpreter_was_trained_on(made):
    from callbacks.explain import ExplainCallback

    heard = {"checkpoint": str(made["lmac_heard"])}
    assert row_names(["lmac"], {"lmac": heard}) == {"lmac_heard": "lmac"}
    both = {"lmac": {"checkpoint": str(made["lmac"])}, "lmac_heard": heard}
    callback = ExplainCallback("lmac_heard,lmac,random", options=both)
    assert callback.methods == ["lmac_heard", "lmac", "random"] and callback.method_options("lmac") == both["lmac"]
    callback = ExplainCallback("lmac", options={"lmac": heard})
    assert callback.methods == ["lmac_heard"] and callback.method_options("lmac_heard") == heard
    with pytest.raises(UsageError, match="both would give rows named lmac_heard"):
        ExplainCallback("lmac,lmac_heard", options={"lmac": heard, "lmac_heard": heard})
    assert "lmac" not in parse_methods("all")  # it needs an interpreter: named, never implied
    with pytest.raises(UsageError, match="lmac needs its interpreter"):  # said before any model loads
        ExplainCallback("lmac")


def message(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_bad_input_is_one_line_naming_the_option(made, tmp_path, monkeypatch):
    net = AudioClassifier.load_from_checkpoint(made["first"]).spectrogram_model.eval()
    with pytest.raises(UsageError) as err:
        LMAC()
    assert message(err).startswith("--model.classifier is missing")
    with pytest.raises(UsageError) as err:
        LMAC(str(made["first"]), trained_on="audio")
    assert "--model.trained_on must be spectrogram or heard, got 'audio'" in message(err)
    with pytest.raises(UsageError) as err:
        LMAC(str(made["lmac"]))
    assert "--model.classifier" in message(err) and "is an L-MAC interpreter, not a classifier" in message(err)
    with pytest.raises(UsageError) as err:
        make_method("lmac", net)
    assert "lmac needs its interpreter" in message(err)
    with pytest.raises(UsageError) as err:
        make_method("lmac", net, checkpoint=str(made["first"]))
    assert "lmac.checkpoint" in message(err) and "is not an L-MAC interpreter" in message(err)
    with pytest.raises(UsageError) as err:
        make_method("lmac", net, checkpoint=str(made["lmac_heard"]))
    assert "trained on heard, so it is method lmac_heard, not lmac" in message(err)
    # an interpreter of the first classifier, asked to explain the second: both named
    other = AudioClassifier.load_from_checkpoint(made["second"]).spectrogram_model.eval()
    method = make_method("lmac", other, checkpoint=str(made["lmac"]))
    with pytest.raises(UsageError) as err:
        method.check_model(torch.zeros(1, 1, 51, 64))
    from explain.cache import weights_hash
    text = message(err)
    assert "trained for another classifier" in text and str(made["first"].resolve()) in text
    assert weights_hash(net)[:12] in text and weights_hash(other)[:12] in text
    # a model that declares layers the decoder cannot read
    for layers, why in (((("conv_block1", "nope")), "it has no layer 'nope'"),
                        (("conv_block1", "fc1"), "layer 'fc1': its output is (1, 128), not a (B, C, T', F') grid"),
                        (("conv_block2", "conv_block1"), "its grid (100, 32) is finer than the one before it")):
        monkeypatch.setattr(Cnn14, "lmac_layers", layers)
        with pytest.raises(UsageError) as err:
            LMAC(str(made["first"]))
        assert message(err).startswith("--model.classifier: the decoder cannot read Cnn14") and why in message(err)


def paired_interval(values: dict, control: dict, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of the per-clip differences and their 95 % percentile bootstrap interval, written here with numpy."""
    d = np.array([values[c] - control[c] for c in sorted(values)])
    draws = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    low, high = np.percentile(d[draws].mean(1), [2.5, 97.5])
    return float(d.mean()), float(low), float(high)


def test_trained_on_the_quickstart_each_interpreter_beats_random_on_what_it_was_trained_for(
        quickstart_run, lmac_interpreters):
    """Both interpreters (``lmac_interpreters``) explained in one run beside the random map, at minmax (their native
    mask), on the input each was trained for, over the 80 test clips: the masked-in input keeps the class better
    than random's (AD lower by a paired interval, AI no lower: the loss's in-term) and the masked-out input loses it
    at least as much (FF: on this model a random minmax mask already takes p_c to 0, so FF sits at its ceiling, mean
    p_c(X), for both and can only tie); the sanity check's randomised classifier changes their masks; every output
    has their rows; and an interpreter is refused for a classifier of other weights, in one line."""
    import json
    import shutil

    from tests.helpers import ROOT, read_csv, run_here

    options = json.dumps({name: {"checkpoint": str(path)} for name, path in lmac_interpreters.items()})
    config = ["--config", str(ROOT / "configs" / "quickstart.yaml")]
    run_here("test", *config, "--ckpt_path", "runs/quickstart/best.ckpt", "--explain", "lmac,lmac_heard,random",
             "--explainer.options", options, "--explainer.masks", "[minmax,topK_30]", "--explainer.sanity", "true",
             "--explainer.sanity_clips", "4", "--explainer.examples", "1", "--explainer.fractions", "[0,0.3,1]",
             "--trainer.logger", "false", "--trainer.default_root_dir", "runs/lmac-explained", cwd=quickstart_run)
    out = next((quickstart_run / "runs" / "lmac-explained").glob("test-*/explain"))
    rows = read_csv(out / "per_clip.csv")

    def minmax(method, scored, metric):
        return {r["clip"]: float(r[metric]) for r in rows
                if (r["method"], r["mask"], r["scored"]) == (method, "minmax", scored)}

    for method, scored in (("lmac", "spectrogram"), ("lmac_heard", "heard")):
        # oriented so that a positive difference means better than random
        margins = {metric: paired_interval(*pair) for metric, pair in (
            ("FF", (minmax(method, scored, "FF"), minmax("random", scored, "FF"))),
            ("AD", (minmax("random", scored, "AD"), minmax(method, scored, "AD"))),
            ("AI", (minmax(method, scored, "AI"), minmax("random", scored, "AI"))))}
        print(method, scored, {k: "%+.4f [%+.4f, %+.4f]" % v for k, v in margins.items()})
        assert len(minmax(method, scored, "FF")) == 80
        # measured: AD 85-89 points below random's [78, 95], AI 11 above [5, 19], FF +0.0000 and +0.0078. AD's
        # interval is far from zero; AI's counts a few clips, so another machine's model is held to AI's mean
        assert margins["AD"][1] > 0, (method, margins)
        assert margins["AI"][0] >= 0 and margins["FF"][0] > -0.01, (method, margins)
    sanity = {(r["method"], r["layer"]): float(r["value"]) for r in read_csv(out / "sanity.csv")
              if r["similarity"] == "spearman_abs"}
    print({m: sanity[m, "conv_block1"] for m in ("lmac", "lmac_heard")})
    for method in ("lmac", "lmac_heard"):
        assert sanity[method, "head"] == 1.0  # the decoder reads the conv blocks, not the head
        # every block random: the mask moves, yet random conv features still carry the input's layout, so much of
        # the mask survives (0.75 measured on the 16-epoch quickstart, docs/heard.md); a mask blind to the
        # classifier would stay at 1.0, as at "head"
        assert sanity[method, "conv_block1"] < 0.95
    for name in ("results.csv", "curves.csv", "localisation.csv", "distortion.csv"):
        assert {"lmac", "lmac_heard"} <= {r["method"] for r in read_csv(out / name)}, name
    assert len(list((out / "examples").glob("*/lmac_heard/minmax_in.wav"))) == 1
    # the same interpreter for a classifier of other weights: refused before any clip, naming both
    other = quickstart_run / "other.ckpt"
    ckpt = torch.load(quickstart_run / "runs" / "quickstart" / "best.ckpt", weights_only=True)
    ckpt["state_dict"]["net.head.bias"] += 0.1
    torch.save(ckpt, other)
    with pytest.raises(AssertionError) as failed:
        run_here("test", *config, "--ckpt_path", str(other), "--explain", "lmac", "--explainer.options", options,
                 "--trainer.logger", "false", "--trainer.default_root_dir", "runs/lmac-refused", cwd=quickstart_run)
    text = str(failed.value)
    assert "failed (2)" in text and "Traceback" not in text
    assert "error: --explainer.options lmac.checkpoint" in text and "was trained for another classifier" in text
    shutil.rmtree(quickstart_run / "runs" / "lmac-refused", ignore_errors=True)
