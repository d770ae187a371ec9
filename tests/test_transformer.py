"""The spectrogram transformer (lightning_modules/transformer.py): every method either explains it or refuses
with its reason, the sanity check randomises it, and trained on the quickstart data through the command line
it learns the classes and its Saliency maps find the planted signatures as the quickstart's Cnn14's do."""
import pytest
import torch

from audio_xai.errors import UsageError
from explain import METHODS, make_method
from datamodules import ESC50DataModule
from explain.sanity import cascade
from lightning_modules import SpectrogramTransformer
from lightning_modules.contract import check_sanity_layers, sanity_layers
from tests.helpers import ROOT, quickstart_seconds, run_here

REFUSED = {"gradcam": "gradcam needs a convolution .* SpectrogramTransformerNet offers none \\(an attention model",
           "deeplift": "deeplift needs every nonlinearity .* layer_norm in blocks.0.norm1",
           "shap": "shap \\(Deep SHAP\\) needs every nonlinearity .* scaled_dot_product_attention in blocks.0.attn"}
SMALL = {"lime": {"num_samples": 20}, "smoothgrad": {"samples": 3}, "ig": {"steps": 4}, "gradshap": {"samples": 3},
         "occlusion": {"window": [4, 4], "stride": [4, 4]}}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = SpectrogramTransformer(num_classes=4, dim=16, heads=2, depth=2, patch_time=4, patch_freq=8).net.eval()
    x = -50 + 15 * torch.randn(2, 1, 22, 64)  # 22 frames: not a whole number of patches
    return net, x


@pytest.fixture(scope="module")
def interpreters(tiny, tmp_path_factory):
    """Untrained L-MAC interpreters of the tiny transformer (it declares no layers: their decoders read the input
    spectrogram alone): method name -> its options."""
    from tests.helpers import save_classifier, save_interpreter

    folder = tmp_path_factory.mktemp("transformer")
    module = SpectrogramTransformer(num_classes=4, dim=16, heads=2, depth=2, patch_time=4, patch_freq=8)
    module.net = tiny[0]
    classifier = save_classifier(module, folder / "classifier.ckpt")
    return {name: {"checkpoint": str(save_interpreter(classifier, folder / f"{name}.ckpt", trained_on))}
            for name, trained_on in (("lmac", "spectrogram"), ("lmac_heard", "heard"))}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_explains_the_transformer_or_refuses_with_its_reason(tiny, name, request):
    net, x = tiny
    target = net(x).argmax(1)
    options = request.getfixturevalue("interpreters")[name] if METHODS[name].needs_checkpoint else SMALL.get(name, {})
    if name in REFUSED:
        with pytest.raises(UsageError, match=REFUSED[name]):
            method = make_method(name, net, batch_size=8, **options)
            method.check_model(x[:1])
        return
    method = make_method(name, net, batch_size=8, **options)
    method.check_model(x[:1])
    if method.needs_background:
        method.set_background(x)
    with torch.enable_grad():
        maps = method.attribute(x, target, ids=["a", "b"])
    assert maps.shape == x.shape and torch.isfinite(maps).all() and (maps != 0).any()


def test_saliency_reaches_every_cell_through_the_padded_patches(tiny):
    net, x = tiny
    with torch.enable_grad():
        maps = make_method("saliency", net).attribute(x, net(x).argmax(1))
    assert (maps[:, 0, -2:] != 0).all()  # the last two frames sit in a patch padded to 4 frames


def test_the_sanity_check_randomises_every_weight_of_the_layers_it_finds(tiny):
    net, x = tiny
    layers = sanity_layers(net)
    assert layers == ("head", "blocks.1", "blocks.0", "patch_embed")  # from the output down; norms left out
    check_sanity_layers(net, layers)
    trained = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():  # as after training: no weight at its initial value (layer norms start at 1 and 0)
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    steps = dict(cascade(net, layers, seed=1))
    last = steps["patch_embed"].state_dict()
    for key, value in last.items():
        if key.split(".")[0] in {"head", "blocks", "patch_embed"}:
            assert not torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, before[key]), key  # bn0, the final norm
    again = dict(cascade(net, layers, seed=1))["patch_embed"].state_dict()
    assert all(torch.equal(again[k], last[k]) for k in last)  # seeded
    net.load_state_dict(trained)


def test_model_label():
    assert SpectrogramTransformer(num_classes=3, dim=8, heads=2).model_label == "transformer-mel"
    with pytest.raises(UsageError, match=r"--model.dim \(10\) must divide by --model.heads \(4\)"):
        SpectrogramTransformer(num_classes=3, dim=10, heads=4)


@pytest.mark.slow
def test_the_transformer_learns_the_quickstart_and_its_saliency_finds_the_signatures(quickstart_run, tmp_path):
    """``fit`` with the transformer's config over the quickstart's, on the quickstart data; then the check of
    tests/test_ground_truth.py on its Saliency maps, with its thresholds."""
    from tests.test_ground_truth import assert_maps_find_the_signatures, clips_to_explain

    data = quickstart_run / "data" / "quickstart"
    configs = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--config",
               str(ROOT / "configs" / "quickstart-transformer.yaml"), "--data.root", str(data)]
    run_here("fit", *configs, "--trainer.logger", "false", cwd=tmp_path)
    best = tmp_path / "runs" / "quickstart-transformer" / "best.ckpt"
    model = SpectrogramTransformer.load_from_checkpoint(best).eval()
    dm = ESC50DataModule(root=str(data), batch_size=80, duration=quickstart_seconds())
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        acc = (model(batch["waveform"]).argmax(1) == batch["target"]).float().mean().item()
    print(f"transformer test accuracy {acc:.3f} (chance 0.1)")
    assert acc >= 0.7
    assert_maps_find_the_signatures(model.net, clips_to_explain(model, data), "saliency")
    # a method the transformer refuses ends the command with its message, before any clip is explained
    with pytest.raises(AssertionError) as failed:
        run_here("test", *configs, "--ckpt_path", str(best), "--explain", "saliency,gradcam", "--trainer.logger",
                 "false", cwd=tmp_path)
    text = str(failed.value)
    assert "failed (2)" in text and "Traceback" not in text
    assert "error: gradcam needs a convolution" in text and "an attention model" in text
