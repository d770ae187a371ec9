"""The model-parameter randomisation test (Adebayo et al. 2018): a map that does not change when the model's
weights are destroyed is not explaining the model.

The spectrogram model's layers are re-initialised cumulatively from the head down (Cnn14's ``LAYERS``:
``head``, ``fc1``, ``conv_block6`` ... ``conv_block1``; another model's are found from it or given, see
``lightning_modules.contract.sanity_layers``), convolutions, linear layers and batch norms as Cnn14
initialises them at construction (convolutions Xavier uniform, linear layers PyTorch's default, batch norms
weight 1, bias 0 and fresh running statistics), from a generator seeded per layer, and any other module
that holds weights by its own ``reset_parameters()`` under a seed drawn from that generator. After each
step every method's maps of the same clips are recomputed and compared with the maps of the trained model:
Spearman rank correlation of the signed maps and of their absolute values (``scipy.stats.spearmanr``,
average ranks for ties: LIME's maps are piecewise constant), and SSIM
(``skimage.metrics.structural_similarity`` with the data range of the two maps). A method whose maps keep
``STILL_SIMILAR`` or more Spearman correlation of |map| once every layer is random is flagged.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from .bootstrap import bootstrap_ci
from .progress import Hook, Steps
from .records import RunKey, SanityValue

LAYERS = ("head", "fc1", "conv_block6", "conv_block5", "conv_block4", "conv_block3", "conv_block2", "conv_block1")
SIMILARITIES = ("spearman", "spearman_abs", "ssim")
FLAGGED_SIMILARITY = "spearman_abs"  # the similarity a method is flagged on (``still_similar``)
STILL_SIMILAR = 0.5


@torch.no_grad()
def reinitialise(module: nn.Module, seed: int) -> None:
    """Re-initialise every layer inside ``module`` as Cnn14's constructor does, and any other module that holds
    weights by its own ``reset_parameters()``, from ``seed``."""
    from lightning_modules.contract import reset_rule

    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        rule = reset_rule(m)
        if rule not in (None, "cnn14") and any(True for _ in m.parameters(recurse=False)):
            _reset_own(m, rule, int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        elif isinstance(m, nn.Conv2d):
            bound = (6.0 / (m.weight[0].numel() + m.weight.shape[0] * m.weight[0, 0].numel())) ** 0.5
            m.weight.copy_(torch.empty_like(m.weight, device="cpu").uniform_(-bound, bound, generator=g))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.Linear):  # PyTorch's default: kaiming_uniform(a=sqrt(5)) and a fan-in bias
            bound = 1.0 / m.in_features ** 0.5
            m.weight.copy_(torch.empty_like(m.weight, device="cpu").uniform_(-bound, bound, generator=g))
            if m.bias is not None:
                m.bias.copy_(torch.empty_like(m.bias, device="cpu").uniform_(-bound, bound, generator=g))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()


def _reset_own(module: nn.Module, rule: str, seed: int) -> None:
    """The weights ``module`` holds itself, drawn by its own reset method on a CPU copy under ``seed`` (so the
    same on every device), copied back."""
    fresh = copy.deepcopy(module).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        getattr(fresh, rule)()
    for name, p in module.named_parameters(recurse=False):
        p.copy_(getattr(fresh, name))


def cascade(model: nn.Module, layers: Sequence[str] = LAYERS, seed: int = 0,
            reinit: Callable[[nn.Module, int], None] = reinitialise) -> Iterable[tuple[str, nn.Module]]:
    """(layer, model with that layer and every one before it in ``layers`` re-initialised), cumulatively,
    on a copy: ``model`` is not changed."""
    randomised = copy.deepcopy(model).eval()
    for i, name in enumerate(layers):
        reinit(randomised.get_submodule(name), seed + i)
        yield name, randomised


def similarity(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    """One similarity of two maps (any shape; SSIM on their 2-D time-frequency planes)."""
    from scipy.stats import spearmanr

    if kind == "spearman":
        return _spearman(spearmanr, a.ravel(), b.ravel())
    if kind == "spearman_abs":
        return _spearman(spearmanr, np.abs(a).ravel(), np.abs(b).ravel())
    if kind == "ssim":
        from skimage.metrics import structural_similarity
        a2, b2 = a.reshape(a.shape[-2:]).astype(np.float64), b.reshape(b.shape[-2:]).astype(np.float64)
        span = max(np.ptp(a2), np.ptp(b2))
        if span == 0:  # two constant maps: the same when equal
            return float(np.array_equal(a2, b2))
        return float(structural_similarity(a2, b2, data_range=span))
    raise ValueError(f"unknown similarity {kind!r}; known: {', '.join(SIMILARITIES)}")


def _spearman(spearmanr, a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # undefined for a constant map: equal maps are the same map
        return float(np.array_equal(a, b))
    return float(spearmanr(a, b).statistic)


def mean_interval(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % percentile bootstrap interval of the mean."""
    return (float(np.mean(np.asarray(values, dtype=np.float64))),
            *bootstrap_ci(values, n_boot, seed=seed, quantiles=(0.025, 0.975)))


def randomisation_test(model: nn.Module, explain: Callable[[nn.Module, str], torch.Tensor], methods: Sequence[str],
                       layers: Sequence[str] = LAYERS, seed: int = 0,
                       reinit: Callable[[nn.Module, int], None] = reinitialise,
                       progress: Hook | None = None) -> dict:
    """Per method, layer and similarity: the per-clip similarities of the maps after randomising up to that
    layer with the trained model's maps. ``explain(model, method)`` returns that method's maps (N, 1, T, F)
    of the clips under test for the given model (the same clips and targets every time). ``progress`` hears
    of each method's maps of each model (``explain.progress``): the whole test can take as long as the
    explanations."""
    steps = Steps(progress, (len(layers) + 1) * len(methods))
    original = {}
    for m in methods:
        steps.begin(f"{m}, trained model")
        original[m] = explain(model, m).detach().cpu().numpy()
    out: dict = {m: {} for m in methods}
    for i, (layer, randomised) in enumerate(cascade(model, layers, seed, reinit), 1):
        for m in methods:
            steps.begin(f"{m}, random down to {layer} ({i}/{len(layers)} layers)")
            maps = explain(randomised, m).detach().cpu().numpy()
            out[m][layer] = {k: [similarity(a, b, k) for a, b in zip(original[m], maps)] for k in SIMILARITIES}
    steps.end()
    return out


def sanity_rows(result: dict, seed: int = 0, key: RunKey | None = None) -> list[SanityValue]:
    """The rows of ``sanity.csv`` from ``randomisation_test``'s result (``key``: the run's, where known)."""
    rows = []
    for method, by_layer in result.items():
        for layer, by_kind in by_layer.items():
            for kind, values in by_kind.items():
                mean, lo, hi = mean_interval(values, seed=seed)
                rows.append(SanityValue(key, method, layer, kind, mean, lo, hi, len(values)))
    return rows


def still_similar(rows: Iterable[SanityValue], layers: Sequence[str] = LAYERS) -> list[str]:
    """Methods whose maps keep a Spearman correlation of |map| of at least ``STILL_SIMILAR`` once every layer
    in ``layers`` is random: they do not follow the model."""
    last = layers[-1]
    return [r.method for r in rows if r.layer == last and r.similarity == FLAGGED_SIMILARITY and r.value >= STILL_SIMILAR]
