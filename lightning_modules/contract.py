"""The model contract: what a LightningModule must expose to be trained with ``fit`` and explained with
``test --explain`` (docs/own-model.md, "Bring your own model and data").

A model is explainable when it has

- ``features``: the front-end, an ``nn.Module`` with ``sample_rate`` (Hz), ``forward(wave, return_phase=False)``
  from a (B, N) waveform to a (B, 1, T, F) spectrogram in dB (the masks fill cells with -100 dB silence), and
  with ``return_phase=True`` also what ``inverse`` needs (a tensor, batch first), ``inverse(spec, phase, length)``
  back to a (B, length) waveform, and ``bin_frequencies()``, the (F,) frequency of each bin in Hz;
- ``spectrogram_model``: the ``nn.Module`` from that spectrogram to the (B, classes) logits, which every
  method explains.

A batch, in every step, is a dict (``datamodules.batch.Batch``) read by name: ``batch["waveform"]``, the (B, N)
waveforms at the data's sample rate, and ``batch["target"]``, the (B,) class numbers (with ``filename`` and, per
scenario, more); a position (``batch[0]``, ``x, y = batch``) is an error that names the keys.

Two things a spectrogram model may have beyond that:

- ``attentions(x)``: a transformer's attention weights over its patches (``TokenAttention``), which the
  ``attention`` method (attention rollout) maps back to the spectrogram;
- ``clip_phase(phase, length)``: a context manager, for a model that hears each spectrogram through its clip's
  phase (a waveform network behind the exact inverse STFT, ``huggingface.WaveformNet``): inside it the model maps
  spectrograms of that one clip (``phase`` (1, ...) as the front-end returned it, ``length`` the clip's samples),
  and the explanation runs such a model one clip at a time.

``SpectrogramClassifier`` is a base that adds the rest (training steps, accuracy, Adam, the data checks);
``AudioClassifier`` (Cnn14) and ``SpectrogramTransformer`` are built on it. What a method needs beyond the
contract it declares itself (``AttributionMethod.check_model``), helped by the functions below, which find
what the methods and the sanity check use from the model's own modules where the model does not declare it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torchmetrics.classification import MulticlassAccuracy

from audio_xai.errors import UsageValueError, program

GUIDE = "docs/own-model.md (\"Bring your own model and data\")"
FRONT_END = ("sample_rate", "inverse", "bin_frequencies")


def check_explainable(module: nn.Module) -> None:
    """``module`` has a front-end and a spectrogram model as the contract says; else an error naming what
    it lacks."""
    name = type(module).__name__
    missing = []
    features = getattr(module, "features", None)
    if not isinstance(features, nn.Module):
        missing.append("`features` (the front-end module: waveform -> (B, 1, T, F) dB spectrogram)")
    else:
        missing += [f"`features.{a}`" for a in FRONT_END if not hasattr(features, a)]
    if not isinstance(getattr(module, "spectrogram_model", None), nn.Module):
        missing.append("`spectrogram_model` (the module from that spectrogram to the logits)")
    if missing:
        raise UsageValueError(f"--explain: the model {name} does not follow the model contract: it lacks "
                              f"{', '.join(missing)}; see {GUIDE}, or subclass "
                              f"lightning_modules.SpectrogramClassifier")


@dataclass
class TokenAttention:
    """A transformer's attention, as attention rollout reads it: ``weights``, every layer's from the first, each
    (B, heads, N, N) with rows that sum to 1; ``special``, how many tokens stand before the patches (a class
    token, AST's distillation token), whose rows the classifier reads; ``boxes``, (N - special, 4) long, the
    cells each patch covers on the (T, F) input, (t0, t1, f0, f1) with the ends excluded."""
    weights: list[torch.Tensor]
    special: int
    boxes: torch.Tensor


# -- what a method or the sanity check uses, found from the model -----------------------------------------------
def gradcam_layer(model: nn.Module) -> Optional[str]:
    """The convolution Grad-CAM weighs: the model's own ``gradcam_layer`` where it declares one (None: it has
    none that Grad-CAM fits), else its last ``nn.Conv2d`` in module order (Cnn14: ``conv_block6.conv2``, the
    study's layer), else None."""
    if hasattr(model, "gradcam_layer"):
        return model.gradcam_layer
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def lmac_layers(model: nn.Module) -> tuple[str, ...]:
    """The layers whose outputs an L-MAC interpreter's decoder reads (``explain/interpreter.py``), from the
    input up: the model's own ``lmac_layers`` where it declares them (Cnn14: its six conv blocks), else none,
    and the decoder then reads the input spectrogram alone (a weaker decoder: it sees nothing of what the
    model computed)."""
    return tuple(getattr(model, "lmac_layers", None) or ())


NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def sanity_layers(model: nn.Module) -> tuple[str, ...]:
    """The layers the randomisation test re-initialises, from the output down: the model's own
    ``sanity_layers`` where it declares them, else its top-level children that hold weights (the items of a
    ``ModuleList`` or ``Sequential`` each count; normalisation layers do not), last first. For Cnn14 this is
    the study's cascade: head, fc1, conv_block6 ... conv_block1."""
    if getattr(model, "sanity_layers", None):
        return tuple(model.sanity_layers)
    layers = []
    for name, child in model.named_children():
        items = child.named_children() if isinstance(child, (nn.ModuleList, nn.Sequential)) else [("", child)]
        for sub, m in items:
            if not isinstance(m, NORMS) and any(True for _ in m.parameters()):
                layers.append(f"{name}.{sub}" if sub else name)
    return tuple(reversed(layers))


def reset_rule(module: nn.Module) -> Optional[str]:
    """How the sanity check re-initialises the weights a module holds itself: ``cnn14`` (convolutions, linear
    layers and batch norms, as Cnn14 initialises them), ``reset_parameters`` (the module's own method), or
    None when it cannot (it holds weights and has no such method)."""
    if isinstance(module, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
        return "cnn14"
    for method in ("reset_parameters", "_reset_parameters"):  # nn.MultiheadAttention names it privately
        if callable(getattr(module, method, None)):
            return method
    return None


def check_sanity_layers(model: nn.Module, layers: Sequence[str], option: str = "--explainer.sanity_layers") -> None:
    """Every layer exists and every weight in it can be re-initialised; else an error naming the layer."""
    if not layers:
        raise UsageValueError(f"{option}: the model {type(model).__name__} has no layer with weights to randomise; "
                              f"name them with {option}")
    for layer in layers:
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            raise UsageValueError(f"{option}: the model has no layer {layer!r}; its layers: "
                                  f"{', '.join(n for n, _ in model.named_children())}") from None
        stuck = [f"{layer}.{n}" if n else layer for n, m in module.named_modules()
                 if any(True for _ in m.parameters(recurse=False)) and reset_rule(m) is None]
        if stuck:
            raise UsageValueError(f"{option}: layer {layer!r} holds weights the sanity check cannot re-initialise "
                                  f"(in {', '.join(stuck)}: no reset_parameters()); give "
                                  f"{'that module' if len(stuck) == 1 else 'those modules'} a reset_parameters(), "
                                  f"or name other layers with {option}")


# -- what DeepLIFT's rescale rule sees ----------------------------------------------------------------------------
# Functions that are not linear in the input (a ReLU is fine inside its own nn.ReLU module, where the rule
# replaces its gradient). Batch norm in eval mode and pooling by averages are affine: not listed.
NONLINEAR = {
    "relu", "relu_", "relu6", "gelu", "silu", "mish", "sigmoid", "tanh", "softmax", "log_softmax", "softmin",
    "softplus", "softsign", "elu", "selu", "celu", "leaky_relu", "hardtanh", "hardswish", "hardsigmoid", "prelu",
    "rrelu", "glu", "logsigmoid", "threshold", "max", "min", "amax", "amin", "maximum", "minimum", "fmax", "fmin",
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "fractional_max_pool2d", "lp_pool1d", "lp_pool2d", "layer_norm", "group_norm", "instance_norm", "rms_norm",
    "local_response_norm", "normalize", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt",
    "pow", "square", "abs", "sign", "clamp", "clamp_min", "clamp_max", "clip", "sort", "topk", "median",
    "scaled_dot_product_attention", "multi_head_attention_forward", "sin", "cos", "reciprocal",
}


# Products of two tensors: nonlinear when both depend on the input (attention's q k^T, a gate).
PRODUCTS = {"mul", "__mul__", "__rmul__", "mul_", "div", "__truediv__", "__rtruediv__", "div_", "matmul",
            "__matmul__", "__rmatmul__", "bmm", "mm", "einsum", "prod"}


def _depends(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.requires_grad
    return isinstance(value, (list, tuple)) and any(_depends(v) for v in value)


class _Calls(TorchFunctionMode):
    """Records, during a forward pass in which only the input requires a gradient, each nonlinear torch
    function called on something that depends on the input, and the innermost module it ran in."""

    def __init__(self, stack: list):
        super().__init__()
        self.stack, self.found = stack, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        values = [*args, *kwargs.values()]
        nonlinear = (name in NONLINEAR or name.rstrip("_") in NONLINEAR) and any(map(_depends, values))
        nonlinear |= name in PRODUCTS and sum(map(_depends, values)) >= 2
        if nonlinear:
            where, module = self.stack[-1] if self.stack else ("", None)
            if not (isinstance(module, nn.ReLU) and name in ("relu", "relu_")):
                self.found.append((name, where, type(module).__name__ if module is not None else None))
        return func(*args, **kwargs)


def rescale_rule_problems(model: nn.Module, x: torch.Tensor) -> list[str]:
    """What keeps DeepLIFT's rescale rule (as ``deeplift`` and ``shap`` apply it: on ``nn.ReLU`` modules) from
    being exact on ``model`` for inputs like ``x``: every nonlinear function of the input called outside an
    ``nn.ReLU`` module in one forward pass (a product of two input-dependent tensors counts), and every
    ``nn.ReLU`` module called more than once. Empty when there is none."""
    stack: list = []
    calls: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}

    def enter(module, args):
        stack.append((names.get(module, "?"), module))
        if isinstance(module, nn.ReLU):
            calls[names[module]] = calls.get(names[module], 0) + 1

    def leave(module, args, out):
        stack.pop()

    hooks = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    trainable = [p for p in model.parameters() if p.requires_grad]
    mode = _Calls(stack)
    try:
        for p in trainable:  # only what depends on the input requires a gradient in this pass
            p.requires_grad_(False)
        with torch.enable_grad(), mode:
            model(x[:1].detach().requires_grad_(True))
    finally:
        for p in trainable:
            p.requires_grad_(True)
        for h in hooks:
            h.remove()
    found = list(dict.fromkeys(f"{fn} in {where or 'its forward'}" + (f" ({kind})" if kind else "")
                               for fn, where, kind in mode.found))
    return found + [f"the nn.ReLU {n} used {k} times in one pass" for n, k in calls.items() if k > 1]


def check_rescale_rule(model: nn.Module, x: torch.Tensor, method: str, label: str = "") -> None:
    """An error naming ``method`` (with its ``label``) and what it cannot handle, unless DeepLIFT's rescale rule
    is exact on ``model``: without this check such a model would get a map that is only gradient times input in
    places, and whose sum is not the output's difference."""
    problems = rescale_rule_problems(model, x)
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise UsageValueError(
            f"{method}{f' ({label})' if label else ''} needs every nonlinearity of the model to be an nn.ReLU "
            f"module, each used once (its rescale rule replaces their gradients; anything else would be explained "
            f"as gradient times input, and the map would not add up to the output), but {type(model).__name__} has: {shown}. Leave {method} out "
            f"of --explain (ig and gradshap need nothing from the model), or write those nonlinearities as nn.ReLU "
            f"modules")


# -- the base class ---------------------------------------------------------------------------------------------------
class SpectrogramClassifier(L.LightningModule):
    """A classifier that follows the contract: a subclass builds ``self.features`` (the front-end) and
    ``self.net`` (spectrogram -> logits) in its ``__init__``; this base trains it with cross-entropy and Adam
    at ``lr``, logs the loss and accuracy, and checks before any step that the data has ``num_classes``
    classes at the front-end's sample rate.

    Args:
        num_classes: outputs of the head; the data must have as many classes.
        lr: Adam learning rate.
    """

    def __init__(self, num_classes: int = 50, lr: float = 1e-4):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise UsageValueError(f"--model.num_classes must be at least 2, got {num_classes!r}: a classifier tells "
                                  "at least two classes apart (give data of two classes or more)")
        self.save_hyperparameters()  # with the subclass's own arguments: a checkpoint rebuilds the model
        self.num_classes, self.lr = num_classes, lr
        self.metrics = nn.ModuleDict({s: MulticlassAccuracy(num_classes, average="micro")
                                      for s in ("train_acc", "val_acc", "test_acc")})

    @property
    def spectrogram_model(self) -> nn.Module:
        """Spectrogram (B, 1, T, F) -> logits: what the explanation methods explain."""
        return self.net

    @property
    def model_label(self) -> str:
        """The model's name in the results (``--explainer.model_name`` overrides it)."""
        return getattr(self.features, "kind", type(self).__name__)

    def setup(self, stage: str) -> None:
        self._check_data(stage)

    def _check_data(self, stage: str) -> None:
        """The head needs one output per class of the data and the front-end the data's sample rate.

        Checked before any step (the data module is set up first), so a wrong class count is this message
        rather than an index error inside the loss, or a silent accuracy of 0. Under the CLI a ``--ckpt_path``
        checkpoint's own hyperparameters are already this model's here."""
        data = getattr(self._trainer, "datamodule", None)
        if data is None or not hasattr(data, "num_classes"):
            return
        ours, theirs = self.num_classes, data.num_classes
        root = getattr(data, "root", "?")
        if ours != theirs:
            source = getattr(data, "classes_source", f"targets 0 to {theirs - 1}")
            where = f"the data at --data.root {root} has {theirs} ({source})"
            if stage == "fit":
                raise UsageValueError(f"--model.num_classes is {ours} but {where}; pass --model.num_classes {theirs}")
            raise UsageValueError(f"the model was trained for {ours} classes but {where}; use the data the checkpoint "
                                  f"was trained on (--data.root), or a checkpoint trained on this data "
                                  f"({program()} fit --data.root {root} --model.num_classes {theirs})")
        rate = getattr(getattr(data, "hparams", None), "sample_rate", None)
        ours = self.features.sample_rate
        if rate is not None and rate != ours:
            if stage == "fit":
                model = ("--model.sample_rate is" if "sample_rate" in self.hparams
                         else f"the model's front-end ({type(self.features).__name__}) runs at")
                raise UsageValueError(f"{model} {ours} but --data.sample_rate is {rate}; the features must be "
                                      f"computed at the data's rate: pass the same value to both")
            raise UsageValueError(f"the model was trained at sample rate {ours} but "
                                  f"--data.sample_rate is {rate}; pass --data.sample_rate {ours}")

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(waveform))

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch["waveform"])
        loss = F.cross_entropy(logits, batch["target"])
        acc = self.metrics[f"{stage}_acc"]
        acc(logits, batch["target"])
        bs = batch["target"].shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=bs, sync_dist=stage != "train")
        self.log(f"{stage}/acc", acc, prog_bar=True, batch_size=bs)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)
