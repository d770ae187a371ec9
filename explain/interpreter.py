"""L-MAC (Paissan et al., ICML 2024, "Listenable Maps for Audio Classifiers"): an interpreter trained to explain a
frozen classifier.

A decoder reads the classifier's intermediate feature maps (the layers its spectrogram model declares in
``lmac_layers``; Cnn14: the six conv blocks' outputs) and outputs a mask M on the input grid (T, F): from the
coarsest map up, each map is projected to ``dim`` channels, and a transposed convolution takes the sum so far to
the next finer map's grid, where that map's projection is added; a last transposed convolution reaches the input
grid (the shape of SpeechBrain's CNN14PSI decoder). M is the sigmoid of its output stretched per clip to [0, 1] by
the tool's ``minmax``: the mask trained is the mask scored at ``minmax``, its native mask. A model that declares no
such layers gets a decoder on the input spectrogram alone (standardised per clip): it sees nothing of what the
model computed, only the clip.

Trained with the tool's own masking (``explain.masks.apply_mask`` with the run's ``fill`` b: X_in = (X - b) M + b,
X_out = (X - b)(1 - M) + b) against the classifier's own prediction y:
``l_in CE(f(X_in), y) - l_out CE(f(X_out), y) + l_1 mean |M|``. With ``trained_on: heard`` the classifier
scores what a listener hears of X_in and X_out instead: their audio with the clip's own phase by the front-end's
inverse, analysed again by the front-end (``explain/heard.py``), differentiated end to end (the mel inverse's
least squares and its multiplicative updates are tensor operations; ``features.safe_sqrt`` keeps the gradient
finite where the inverse gives zero power).

    python main.py fit --config configs/quickstart-lmac.yaml --model.classifier runs/quickstart/best.ckpt
    python main.py test --config configs/quickstart.yaml --ckpt_path runs/quickstart/best.ckpt --explain lmac \\
        --explainer.options '{"lmac": {"checkpoint": "runs/quickstart-lmac/best.ckpt"}}'

A checkpoint keeps the decoder's weights alone, and under ``interpreter`` what explaining with it needs: the
classifier's file, class and weights hash (an interpreter explains only the weights it was trained on), what it
was trained on, the layers it reads and the decoder's shape (``read_interpreter``).
"""
from __future__ import annotations

import contextvars
import importlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F

from audio_xai.errors import UsageValueError
from lightning_modules.checkpoint import check_lightning_checkpoint, read_checkpoint
from lightning_modules.contract import lmac_layers
from .cache import weights_hash
from .evaluate import MaskScorer
from .heard import hear
from .masks import FILLS, apply_mask, fill_values, make_masks
from .metrics import METRIC_NAMES

TRAINED_ON = ("spectrogram", "heard")  # what the classifier scores in the loss: explain.records.SCORED
# its class path, and those it had before it moved here from lightning_modules (checkpoints written then)
OWN_CLASS = f"{__name__}.LMAC"
FORMER_CLASSES = ("lightning_modules.LMAC", "lightning_modules.lmac.LMAC")
TRAIN = "main.py fit --config configs/quickstart-lmac.yaml --model.classifier CLASSIFIER.ckpt"


# -- what the decoder reads --------------------------------------------------------------------------------------
def tapped(net: nn.Module, layers: Sequence[str], x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The logits of ``net`` for ``x`` and the outputs of its ``layers`` in that pass."""
    found: dict[str, torch.Tensor] = {}
    hooks = [net.get_submodule(name).register_forward_hook(lambda m, i, out, name=name: found.__setitem__(name, out))
             for name in layers]
    try:
        logits = net(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, [found[name] for name in layers]


def standardised(x: torch.Tensor) -> torch.Tensor:
    """Each spectrogram (B, 1, T, F) at mean 0 and standard deviation 1 (alone: its batch does not matter)."""
    mean, std = x.mean(dim=(1, 2, 3), keepdim=True), x.std(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / std.clamp_min(1e-3)


def decoder_inputs(maps: Sequence[torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """What the decoder reads, coarsest first: the layers' maps (given from the input up), or the standardised
    input when the model declares none."""
    return list(reversed(maps)) if maps else [standardised(x)]


def _fit(h: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``h`` cut or edge-padded to the grid ``size`` (a pooled grid rounds down, so an upsampled one can fall a
    cell short or over)."""
    h = h[..., :size[0], :size[1]]
    short_t, short_f = size[0] - h.shape[-2], size[1] - h.shape[-1]
    return F.pad(h, (0, short_f, 0, short_t), mode="replicate") if short_t or short_f else h


class MaskDecoder(nn.Module):
    """Feature maps, coarsest first, to mask logits on the input grid.

    Args:
        channels: channels of each map read, coarsest first.
        strides: per map, how many times finer (time, frequency) the next map's grid is (the last: the input's).
        dim: channels of the decoder.
    """

    def __init__(self, channels: Sequence[int], strides: Sequence[Sequence[int]], dim: int = 32):
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"MaskDecoder: one stride per map, got {len(channels)} maps and {len(strides)} strides")
        self.project = nn.ModuleList(nn.Conv2d(c, dim, 3, padding=1) for c in channels)
        # kernel 2s (s even) or 2s + 1 (s odd) with padding (k - s) // 2: each step gives exactly s times the grid
        kernels = [tuple(2 * s + s % 2 for s in st) for st in strides]
        self.up = nn.ModuleList(nn.ConvTranspose2d(dim, dim, k, stride=tuple(st), padding=tuple((a - b) // 2 for a, b in zip(k, st)))
                                for k, st in zip(kernels, strides))
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(), nn.Conv2d(dim, 1, 1))

    def forward(self, maps: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        h = self.relu(self.project[0](maps[0]))
        for i, up in enumerate(self.up):
            finer = maps[i + 1] if i + 1 < len(maps) else None
            h = _fit(self.relu(up(h)), finer.shape[-2:] if finer is not None else size)
            if finer is not None:
                h = h + self.relu(self.project[i + 1](finer))
        return self.head(h)


def mask_of(decoder: MaskDecoder, maps: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The mask (B, 1, T, F) the decoder gives for spectrograms ``x`` whose layers' ``maps`` it reads: the sigmoid
    of its output stretched to [0, 1] per clip by the tool's ``minmax`` (``explain.masks``), so that the mask
    trained is the one scored, its native mask (``minmax`` of it is itself)."""

    return make_masks(torch.sigmoid(decoder(decoder_inputs(maps, x), x.shape[-2:])), ("minmax",))[0]


def decoder_shape(net: nn.Module, layers: Sequence[str], x: torch.Tensor, option: str) -> dict:
    """``MaskDecoder``'s ``channels`` and ``strides`` for ``net``'s ``layers`` on inputs like ``x`` (1, 1, T, F),
    found from one forward pass; a layer the decoder cannot read is an error naming ``option``."""
    name = type(net).__name__
    fix = ("declare other layers in its lmac_layers (outputs (B, C, T', F') on grids that get coarser from the input "
           "up), or none: the decoder then reads the input spectrogram alone")
    for layer in layers:
        try:
            net.get_submodule(layer)
        except AttributeError:
            raise UsageValueError(f"{option}: the decoder cannot read {name}: it has no layer {layer!r} (its "
                                  f"lmac_layers); {fix}") from None
    with torch.no_grad():
        try:
            _, maps = tapped(net, layers, x)
        except KeyError as err:
            raise UsageValueError(f"{option}: the decoder cannot read {name}: its layer {err.args[0]!r} does not run "
                                  f"in a forward pass; {fix}") from None
    grids = [tuple(x.shape[-2:])]
    for layer, out in zip(layers, maps):
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != len(x):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UsageValueError(f"{option}: the decoder cannot read {name}'s layer {layer!r}: its output is {shape}, "
                                  f"not a (B, C, T', F') grid; {fix}")
        grid = tuple(out.shape[-2:])
        if grid[0] > grids[-1][0] or grid[1] > grids[-1][1]:
            raise UsageValueError(f"{option}: the decoder cannot read {name}'s layer {layer!r}: its grid {grid} is "
                                  f"finer than the one before it {grids[-1]}; {fix}")
        grids.append(grid)
    channels = [int(m.shape[1]) for m in maps] or [1]
    if not maps:
        grids.append(grids[0])
    # coarsest first: each grid against the next finer one, the last against the input's
    strides = [[max(1, round(fine[d] / coarse[d])) for d in (0, 1)] for coarse, fine in zip(grids[:0:-1], grids[-2::-1])]
    return {"channels": list(reversed(channels)), "strides": strides}


# -- the classifier ----------------------------------------------------------------------------------------------
def load_classifier(path: Optional[str], class_path: Optional[str] = None) -> L.LightningModule:
    """The classifier of the checkpoint ``path`` (``--model.classifier``), in eval mode; the class it names must be
    the project's own or ``class_path`` (``--model.classifier_class``), as for ``--ckpt_path``."""
    option = "--model.classifier"
    if not path:
        raise UsageValueError(f"{option} is missing: give the checkpoint of the classifier the interpreter explains "
                              f"(a .ckpt written by main.py fit, e.g. --model.classifier runs/quickstart/best.ckpt)")
    chosen = (class_path, "--model.classifier_class") if class_path else None
    hparams = check_lightning_checkpoint(path, option, named=chosen)
    named = hparams.get("_class_path") or class_path or "lightning_modules.AudioClassifier"  # as main.py does
    if named in (OWN_CLASS, *FORMER_CLASSES) or "interpreter" in read_checkpoint(path, option, ""):
        raise UsageValueError(f"{option} {path} is an L-MAC interpreter, not a classifier; give the checkpoint of "
                              f"the classifier it should explain (e.g. runs/quickstart/best.ckpt)")
    module, _, cls_name = named.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as err:
        raise UsageValueError(f"{option} {path} holds a model of class {named}, which cannot be imported ({err}); "
                              f"put its module on PYTHONPATH") from None
    # in a context of its own: under LightningCLI the interpreter's own arguments sit in a context variable that
    # every save_hyperparameters() called while it is built reads, the classifier's too
    model = contextvars.Context().run(cls.load_from_checkpoint, path, map_location="cpu", weights_only=True)
    features, net = getattr(model, "features", None), getattr(model, "spectrogram_model", None)
    if not isinstance(features, nn.Module) or not callable(getattr(features, "inverse", None)) or not isinstance(net, nn.Module):
        raise UsageValueError(f"{option} {path}: the decoder cannot read {named}: it does not follow the model "
                              f"contract (a front-end `features` with an inverse and a `spectrogram_model`; "
                              f"docs/own-model.md, \"Bring your own model and data\")")
    return model.eval()


# -- what a checkpoint records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interpreter:
    """What an interpreter's checkpoint records besides the decoder's weights (its ``interpreter`` entry)."""

    classifier: str  # the classifier's checkpoint (the file a link such as best.ckpt resolved to)
    classifier_class: str
    classifier_hash: str  # explain.cache.weights_hash of its spectrogram model: the weights it explains
    trained_on: str
    layers: list
    decoder: dict  # MaskDecoder's arguments
    fill: str


def read_interpreter(path: str | Path, option: str) -> tuple[Interpreter, MaskDecoder]:
    """The record and the decoder (eval mode, CPU) of the interpreter checkpoint ``path``; a file that is not one
    is an error naming ``option``."""
    fix = f"give a checkpoint written by `{TRAIN}`"
    ckpt = read_checkpoint(path, option, fix)
    record = ckpt.get("interpreter")
    if not isinstance(record, dict) or set(record) != set(Interpreter.__dataclass_fields__):
        raise UsageValueError(f"{option} {path} is not an L-MAC interpreter (it has no interpreter record); {fix}")
    found = Interpreter(**record)
    state = {k.removeprefix("decoder."): v for k, v in (ckpt.get("state_dict") or {}).items() if k.startswith("decoder.")}
    try:
        decoder = MaskDecoder(**found.decoder)
        decoder.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as err:
        raise UsageValueError(f"{option} {path}: its decoder does not load ({type(err).__name__}); {fix}") from None
    return found, decoder.eval()


# -- training ----------------------------------------------------------------------------------------------------
class LMAC(L.LightningModule):
    """An L-MAC interpreter of a frozen classifier (the module's text).

    Args:
        classifier: the classifier's checkpoint (written by ``main.py fit``); required.
        trained_on: ``spectrogram`` (the classifier scores the masked spectrograms, as L-MAC) or ``heard`` (what
            a listener hears of them).
        classifier_class: the classifier's class when it is not the project's own (as ``--model.class_path`` for
            ``--ckpt_path``: a checkpoint never chooses the code that runs).
        l_in, l_out, l_1: the loss's weights (L-MAC's recipe: 4, 0.2, 0.4).
        lr, weight_decay: Adam's (the recipe: 2e-4, 2e-6); the rate halves (``lr_factor``) when ``val/loss`` has
            not improved for ``lr_patience`` epochs.
        dim: channels of the decoder.
        fill: what a masked-out cell becomes: ``floor`` (-100 dB), ``clip_min`` or ``clip_mean``
            (``explain.masks.fill_values``, as ``--explainer.fill``).
    """

    def __init__(self, classifier: Optional[str] = None, trained_on: str = "spectrogram",
                 classifier_class: Optional[str] = None, l_in: float = 4.0, l_out: float = 0.2, l_1: float = 0.4,
                 lr: float = 2e-4, weight_decay: float = 2e-6, lr_factor: float = 0.5, lr_patience: int = 3,
                 dim: int = 32, fill: str = "floor"):
        super().__init__()

        if trained_on not in TRAINED_ON:
            raise UsageValueError(f"--model.trained_on must be {' or '.join(TRAINED_ON)}, got {trained_on!r}")
        if fill not in FILLS:
            raise UsageValueError(f"--model.fill must be one of {', '.join(FILLS)}, got {fill!r}")
        self.save_hyperparameters()
        model = load_classifier(classifier, classifier_class)
        # the file a link such as best.ckpt points to now: resuming or reloading finds the same classifier anywhere
        self.hparams["classifier"] = str(Path(classifier).resolve())
        self.features, self.net = model.features, model.spectrogram_model
        for p in [*self.net.parameters(), *self.features.parameters()]:
            p.requires_grad_(False)
        self.layers = lmac_layers(self.net)
        with torch.no_grad():  # two seconds of the front-end: the grids' ratios
            probe = self.features(torch.zeros(1, 2 * self.features.sample_rate))
        shape = {**decoder_shape(self.net, self.layers, probe, "--model.classifier"), "dim": dim}
        self.decoder = MaskDecoder(**shape)
        self.record = Interpreter(self.hparams.classifier, f"{type(model).__module__}.{type(model).__name__}",
                                  weights_hash(self.net), trained_on, list(self.layers), shape, fill)

    def train(self, mode: bool = True):
        """The classifier stays in eval mode (no dropout, no SpecAugment, no batch-norm updates)."""
        super().train(mode)
        self.net.eval()
        self.features.eval()
        return self

    def setup(self, stage: str) -> None:
        data = getattr(self._trainer, "datamodule", None)
        rate = getattr(getattr(data, "hparams", None), "sample_rate", None)
        if rate is not None and rate != self.features.sample_rate:
            raise UsageValueError(f"the classifier (--model.classifier) runs at sample rate {self.features.sample_rate} "
                                  f"but --data.sample_rate is {rate}; pass --data.sample_rate {self.features.sample_rate}")

    def mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's logits of spectrograms ``x`` (no gradient) and the decoder's mask of each."""
        with torch.no_grad():
            logits, maps = tapped(self.net, self.layers, x)
        return logits, mask_of(self.decoder, maps, x)

    def heard(self, x: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        """The front-end of the audio of ``x`` with the clips' phase: what the classifier hears (differentiable)."""
        return self.features(self.features.inverse(x, phase, length))

    def loss(self, x: torch.Tensor, phase: torch.Tensor, length: int, mask: torch.Tensor,
             pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L-MAC's loss of the ``mask`` of spectrograms ``x`` (with their ``phase`` and ``length`` in samples, for
        what is heard) against the classes ``pred``, and its two cross-entropies (masked in, masked out)."""

        x_in, x_out = apply_mask(x, mask, fill_values(x, self.hparams.fill))
        both = torch.cat([x_in, x_out])
        if self.hparams.trained_on == "heard":
            both = self.heard(both, torch.cat([phase, phase]), length)
        out_in, out_out = self.net(both).chunk(2)
        h = self.hparams
        ce_in, ce_out = F.cross_entropy(out_in, pred), F.cross_entropy(out_out, pred)
        return h.l_in * ce_in - h.l_out * ce_out + h.l_1 * mask.abs().mean(), ce_in, ce_out

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, dict]:
        wave = batch["waveform"]
        with torch.no_grad():
            x, phase = self.features(wave, return_phase=True)
        logits, mask = self.mask(x)
        pred = logits.argmax(-1)
        loss, ce_in, ce_out = self.loss(x, phase, wave.shape[-1], mask, pred)
        bs = len(x)
        for name, value in (("loss", loss), ("ce_in", ce_in), ("ce_out", ce_out), ("mask_mean", mask.mean())):
            self.log(f"{stage}/{name}", value, batch_size=bs, prog_bar=name == "loss", sync_dist=stage != "train")
        return loss, {"x": x, "phase": phase, "length": wave.shape[-1], "logits": logits, "pred": pred, "mask": mask}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """The loss, and the tool's own FF and Fid-In of the mask's ``minmax`` (its native mask) on the spectrogram
        and on what is heard, computed as ``test --explain lmac`` computes them."""

        _, got = self._step(batch, "val")
        x, phase, length = got["x"], got["phase"], got["length"]
        bs = len(x)

        def listen(s: torch.Tensor):
            return hear(self.features, s, phase.repeat(len(s) // bs, *[1] * (phase.dim() - 1)), length, bs)

        scorer = MaskScorer(("minmax",), scored=TRAINED_ON).to(x.device)
        with torch.no_grad():
            values = scorer.update(self.net, x, got["logits"].float().softmax(-1), got["pred"], got["mask"], bs,
                                   fill_values(x, self.hparams.fill), listen).values
        for scored, v in values.items():
            prefix = "val/" if scored == "spectrogram" else "val/heard/"
            for metric in ("FF", "FidIn"):
                self.log(prefix + metric, v[0, :, METRIC_NAMES.index(metric)].mean(), batch_size=bs, sync_dist=True,
                         prog_bar=metric == "FF" and scored == self.hparams.trained_on)

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.Adam(self.decoder.parameters(), lr=h.lr, weight_decay=h.weight_decay)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=h.lr_factor, patience=h.lr_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val/loss"}}

    # -- the checkpoint: the decoder's weights and the record; the classifier stays in its own file -------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("decoder.")}
        checkpoint["interpreter"] = asdict(self.record)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = (checkpoint.get("interpreter") or {}).get("classifier_hash")
        if saved != self.record.classifier_hash:
            was = (checkpoint.get("interpreter") or {}).get("classifier", "an unknown classifier")
            raise UsageValueError(f"the interpreter checkpoint was trained for {was} (weights {str(saved)[:12]}) but "
                                  f"--model.classifier {self.hparams.classifier} has weights "
                                  f"{self.record.classifier_hash[:12]}; resume with the classifier it was trained for")
        checkpoint["state_dict"].update({k: v for k, v in self.state_dict().items() if not k.startswith("decoder.")})
