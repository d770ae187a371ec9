"""The model contract (lightning_modules/contract.py) and what each method needs from a model: found from the
model where it says nothing (Cnn14 gives the study's layers), checked before the first map with the method's
own message, and refused where the method would compute something else (DeepLIFT's sum no longer adds up)."""
import lightning as L
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from audio_xai.errors import UsageError
from explain import make_method
from explain.masks import SILENCE_DB
from explain.pipeline import ExplanationPipeline
from explain.sanity import LAYERS, cascade
from lightning_modules import Cnn14, SpectrogramTransformer
from lightning_modules.contract import (check_explainable, check_sanity_layers, gradcam_layer, rescale_rule_problems,
                                        sanity_layers)

X = -60 + 15 * torch.randn(3, 1, 16, 12, generator=torch.Generator().manual_seed(0))


class ReluModules(nn.Module):
    """Every nonlinearity an nn.ReLU module, each used once: DeepLIFT's rescale rule is exact."""

    def __init__(self, functional: bool = False, reuse: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.bn = nn.BatchNorm2d(1)
        self.conv1, self.relu1 = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
        self.head = nn.Linear(4, 3)
        self.functional, self.reuse = functional, reuse

    def forward(self, x):
        x = self.relu1(self.conv1(self.bn(x / 20)))
        x = self.conv2(x)
        x = F.relu(x) if self.functional else (self.relu1 if self.reuse else self.relu2)(x)
        return self.head(x.mean((2, 3)))


def deeplift_gap(model, x):
    """DeepLIFT's total against the floor, and the output difference it must add up to."""
    target = torch.zeros(len(x), dtype=torch.long)
    with torch.enable_grad():
        total = make_method("deeplift", model, batch_size=8).attribute(x, target).sum((1, 2, 3))
    with torch.no_grad():
        floor = torch.full_like(x[:1], SILENCE_DB)
        return total, model(x)[:, 0] - model(floor)[0, 0]


def test_the_rescale_check_passes_exactly_the_models_deeplift_adds_up_on():
    exact = ReluModules().eval()
    assert rescale_rule_problems(exact, X) == []
    assert rescale_rule_problems(Cnn14(32, 3, 4).eval(), torch.randn(1, 1, 32, 32)) == []
    total, gap = deeplift_gap(exact, X)
    assert torch.allclose(total, gap, rtol=1e-4, atol=1e-5)
    functional = ReluModules(functional=True).eval()
    assert rescale_rule_problems(functional, X) == ["relu in its forward (ReluModules)"]
    total, gap = deeplift_gap(functional, X)
    assert not torch.allclose(total, gap, rtol=1e-2, atol=1e-3)  # what the check keeps users from
    reused = ReluModules(reuse=True).eval()
    assert rescale_rule_problems(reused, X) == ["the nn.ReLU relu1 used 2 times in one pass"]
    with pytest.raises(RuntimeError, match="used more than once"):  # captum's traceback, without the check
        deeplift_gap(reused, X)


def test_a_nonlinearity_of_constants_or_weights_alone_is_no_problem():
    class Scaled(ReluModules):
        def forward(self, x):
            gain = torch.sigmoid(self.head.bias.sum()) * torch.exp(torch.zeros(()))  # weights only
            return super().forward(x) * gain
    assert rescale_rule_problems(Scaled().eval(), X) == []


@pytest.mark.parametrize("name", ["deeplift", "shap"])
def test_deeplift_and_deep_shap_refuse_a_model_with_other_nonlinearities(name):
    method = make_method(name, ReluModules(functional=True).eval())
    with pytest.raises(UsageError, match=rf"^{name}.*needs every nonlinearity of the model to be an nn.ReLU module.*"
                                         rf"but ReluModules has: relu in its forward.*Leave {name} out of --explain"):
        method.check_model(X[:1])
    make_method(name, ReluModules().eval()).check_model(X[:1])


def test_the_studys_gradient_shap_needs_no_relu_modules():
    make_method("shap", ReluModules(functional=True).eval(), rule="gradient").check_model(X[:1])


def test_the_defaults_found_from_cnn14_are_the_studys():
    model = Cnn14(64, 3, 4)
    assert gradcam_layer(model) == "conv_block6.conv2"  # PROTOCOL.md: "the last conv layer (conv_block6.conv2)"
    assert sanity_layers(model) == LAYERS
    assert make_method("gradcam", model).layer == "conv_block6.conv2"


def test_gradcam_refuses_a_model_without_a_convolution_and_a_layer_without_a_grid():
    flat = nn.Sequential(nn.Flatten(), nn.Linear(16 * 12, 3))
    with pytest.raises(UsageError, match=r"gradcam needs a convolution.*Sequential offers none \(it has no Conv2d "
                                         r"layer\)"):
        make_method("gradcam", flat)
    with pytest.raises(UsageError, match=r"gradcam needs a layer whose output is a \(B, C, T', F'\) grid.*layer "
                                         r"'head' gives \(1, 3\)"):
        make_method("gradcam", ReluModules().eval(), layer="head").check_model(X[:1])
    with pytest.raises(UsageError, match=r"gradcam option layer: the model has no layer 'conv9'"):
        make_method("gradcam", ReluModules(), layer="conv9")
    assert make_method("gradcam", ReluModules()).layer == "conv2"  # the last convolution


def test_the_pipeline_checks_every_method_before_any_map():
    pipe = ExplanationPipeline(ReluModules(functional=True).eval(), ["saliency", "deeplift"], batch_size=4)
    with pytest.raises(UsageError, match="deeplift needs every nonlinearity"):
        pipe.explain(X, ids=["a", "b", "c"])
    assert pipe.counts["saliency"]["computed"] == 0


def test_sanity_layers_are_checked_against_the_model():
    class Loose(nn.Module):  # a bare weight in a module with no reset_parameters()
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.head = nn.Linear(4, 2)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.out = Loose(), nn.Linear(2, 2)
    model = Model()
    assert sanity_layers(model) == ("out", "body")
    check_sanity_layers(model, ["out"])
    with pytest.raises(UsageError, match=r"--explainer.sanity_layers: layer 'body' holds weights the sanity check "
                                         r"cannot re-initialise \(in body: no reset_parameters\(\)\)"):
        check_sanity_layers(model, ["out", "body"])
    with pytest.raises(UsageError, match=r"the model has no layer 'fc9'; its layers: body, out"):
        check_sanity_layers(model, ["fc9"])


def test_a_module_without_the_contract_is_named():
    class Bare(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 2)
    with pytest.raises(UsageError, match=r"the model Bare does not follow the model contract: it lacks `features`.*"
                                         r"`spectrogram_model`"):
        check_explainable(Bare())
    check_explainable(SpectrogramTransformer(num_classes=3, dim=8, heads=2))
