"""The explanation pipeline, without Lightning: spectrograms in, maps and per-clip metric values out.

``ExplanationPipeline(model, ["lime", "shap"], options={"lime": {"num_samples": 1000}})`` builds each
method with its options, sizes the model batches to the device, keeps maps in the attribution cache
(when given a folder), builds the masks and scores them. ``explain(x, ids)`` handles one batch of
(B, 1, T, F) dB spectrograms; ``results()`` gives the means over every batch (and every process of a
distributed run: the metric states reduce exactly). The test-loop callback and the benchmark both run
this class, so what is timed is what ``main.py test --explain`` computes.

Example:
    >>> import torch
    >>> from explain.pipeline import ExplanationPipeline
    >>> from lightning_modules import Cnn14
    >>> model = Cnn14(num_bins=64, num_classes=3, width=4).eval()
    >>> pipe = ExplanationPipeline(model, ["saliency"], batch_size=4)
    >>> out = pipe.explain(torch.randn(2, 1, 32, 64) - 40, ids=["a.wav", "b.wav"])
    >>> saliency = out.methods["saliency"]
    >>> tuple(saliency.maps.shape), tuple(saliency.scored.values["spectrogram"].shape)  # (masks, clips, metrics)
    ((2, 1, 32, 64), (14, 2, 8))
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from audio_xai.errors import UsageValueError

from .base import make_method
from .batching import (CPU_BATCH, CUDA_MEMORY_GB, Precision, autocast, batch_sizes, check_precision, cudnn_autotune,
                       tf32)
from .cache import AttributionCache, tensor_hash, weights_hash
from .evaluate import MaskScorer, Scored, predict_probs
from .heard import IDEAL, MIXTURE, Distortion, Sound, check_scored, distortion, hear, si_sdr
from .curves import CURVES, FRACTIONS, PerturbationCurves, cell_ranks, perturbation_curves
from .localisation import Localisation, ideal_binary_mask
from .progress import Hook, Steps
from .masks import MASK_NAMES, apply_mask, check_fill, fill_values
from .protocol import settings as protocol_settings
from .sanity import LAYERS, randomisation_test, sanity_rows

log = logging.getLogger(__name__)


@dataclass
class MethodBatch:
    """One method's part of an explained batch: its maps (B, 1, T, F) and their masks scored (``Scored``: the
    masks, the masked inputs, the per-clip values of each input scored); in a mixture, the SI-SDR of each mask's
    masked-in audio against the target (masks, clips heard); with curves, the deletion and insertion curves (B, 2,
    fractions) and the cells' ranks they followed."""

    maps: torch.Tensor
    scored: Scored
    si_sdr: torch.Tensor | None = None
    curves: torch.Tensor | None = None
    ranks: torch.Tensor | None = None


@dataclass
class Explained:
    """One batch: the clean probabilities and predicted classes and each method's part (``methods``, in the run's
    order); with what is heard, the indices in the batch of the clips heard (``heard_clips``), their unmasked
    distortion (``clip_distortion``, (clips heard, measures)) and, in a mixture, the SI-SDR of their mix and of
    the ideal binary mask's audio (``separation_bounds``, name -> (clips heard,))."""

    probs: torch.Tensor
    pred: torch.Tensor
    methods: dict[str, MethodBatch] = field(default_factory=dict)
    clip_distortion: torch.Tensor | None = None
    heard_clips: torch.Tensor | None = None
    separation_bounds: dict[str, torch.Tensor] = field(default_factory=dict)


class ExplanationPipeline(nn.Module):
    """Methods, masks and metrics over batches of spectrograms of one model.

    Args:
        model: spectrogram (B, 1, T, F) -> logits.
        methods: method names, in the order results are reported.
        options: keyword options per method (``{"lime": {"num_samples": 100}}``); each method declares
            its own (``python main.py test --help`` lists them).
        seed: seed of the random methods (each clip's seed also depends on its id).
        batch_size: spectrograms per model call; None: 8 on a CPU, on CUDA as many as ``memory_gb`` holds by
            the model's activations (``explain.batching.batch_sizes``: the same for the same model and input).
        precision: ``32`` or ``bf16`` (autocast of the forward passes of forward-only methods and metrics; the
            clean pass and the decisions near AI's and Fid-In's thresholds stay float32: explain/batching.py).
        tf32: allow TF32 in CUDA convolutions and matrix products during the explanation passes (off: full
            float32, so GPU probabilities stay within the metrics' tolerance of the CPU's; explain/batching.py).
        masks: the masks to score; conciseness_on: ``mask`` or ``attribution`` (what SPS and COMP measure).
        cache_dir: keep every map on disk there (keyed by everything that determines it); None: no cache.
        protocol: ``corrected`` or ``study`` (the study's code: explain/protocol.py); it sets method and
            metric options, and a method's own ``options`` override what it sets.
        fill: what a masked-out cell becomes, for the metrics and the curves: ``floor`` (-100 dB, the
            study's), ``clip_min`` or ``clip_mean`` (``explain.masks.fill_values``).
        curves: also compute deletion and insertion curves at ``fractions`` (``explain/curves.py``).
        localisation: keep the localisation metrics against a ground truth (``explain/localisation.py``),
            fed by ``localise`` after each ``explain``.
        scored: what the metrics score: ``spectrogram`` (the masked spectrograms), ``heard`` (the model's
            front-end applied to their audio: explain/heard.py), or both; ``heard`` needs ``features`` (the
            model's front-end, with ``inverse``) and each batch's ``Sound``.
    """

    def __init__(self, model: nn.Module, methods: Sequence[str], options: dict[str, dict] | None = None,
                 seed: int = 0, batch_size: int | None = None, precision: str = "32",
                 masks: Sequence[str] = MASK_NAMES, conciseness_on: str = "mask", cache_dir: str | Path | None = None,
                 protocol: str = "corrected", fill: str = "floor", curves: bool = False,
                 fractions: Sequence[float] = FRACTIONS, localisation: bool = False, tf32: bool = False,
                 memory_gb: float = CUDA_MEMORY_GB, scored: Sequence[str] | str = ("spectrogram",),
                 features: nn.Module | None = None):
        super().__init__()
        self.scored = check_scored(scored)
        if "heard" in self.scored and not callable(getattr(features, "inverse", None)):
            raise UsageValueError("scoring what is heard needs the model's front-end with an inverse to audio "
                                  "(features.inverse(spectrogram, phase, length)); score the spectrogram alone "
                                  "(--explainer.scored spectrogram) or give the model such a front-end")
        self.features = features
        self.tf32, self.memory_gb = bool(tf32), memory_gb
        check_fill(fill)
        self.fill, self.fractions = fill, tuple(fractions)
        check_precision(precision)
        self.model, self.seed, self.batch_size, self.precision = model, seed, batch_size, precision
        self.policy = Precision(precision, self.tf32)
        self.masks, self.protocol = tuple(masks), protocol
        method_options, self.metric_options = protocol_settings(protocol)
        self._by_protocol = set(method_options)  # methods whose maps the protocol changes
        options = options or {}
        self._method_options = {n: {**method_options.get(n, {}), **options.get(n, {})} for n in methods}
        self.methods = {n: make_method(n, model, seed=seed, batch_size=batch_size or CPU_BATCH, **self._method_options[n])
                        for n in methods}
        self.scorers = nn.ModuleDict({n: MaskScorer(self.masks, conciseness_on, self.scored, **self.metric_options)
                                      for n in methods})
        self.clip_distortion = Distortion() if "heard" in self.scored else None
        self.curves = nn.ModuleDict({n: PerturbationCurves(self.fractions) for n in methods}) if curves else None
        self.localisers = nn.ModuleDict({n: Localisation(self.masks, seed) for n in methods}) if localisation else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._caches: dict[str, AttributionCache] = {}
        self.counts = {n: {"cached": 0, "computed": 0} for n in methods}
        self.batch_sizes: dict[str, int] | None = None
        self._checked = False

    def close(self) -> None:
        for method in self.methods.values():
            method.close()

    # -- set-up -------------------------------------------------------------------------------------
    def backgrounds_needed(self) -> dict[str, tuple[int, int]]:
        """(clips per class, clips in all) of the training background each method that uses one wants."""
        return {n: (m.background_per_class, m.background_size) for n, m in self.methods.items() if m.needs_background}

    def set_background(self, name: str, background: torch.Tensor) -> None:
        self.methods[name].set_background(background)

    def check(self, x: torch.Tensor, sound: Sound | None = None) -> None:
        """Every method's requirements of the model (``AttributionMethod.check_model``) on one spectrogram of
        ``x`` (``sound``: its clip's, for a model that hears through it); run once, before the first map (by
        ``explain`` itself if not called before)."""
        if not self._checked:
            with self._on_clip(self.model, sound):
                for method in self.methods.values():
                    method.check_model(x[:1].detach())
            self._checked = True

    @property
    def one_clip_at_a_time(self) -> bool:
        """The model hears each spectrogram through its clip's phase (the model contract's ``clip_phase``):
        ``explain`` then takes one clip, with its ``Sound``, per call."""
        return callable(getattr(self.model, "clip_phase", None))

    @staticmethod
    def _on_clip(model: nn.Module, sound: Sound | None, i: int = 0):
        """Where ``model`` maps the spectrograms of clip ``i`` of ``sound``: inside its ``clip_phase`` when it
        has one."""
        if not callable(getattr(model, "clip_phase", None)):
            return contextlib.nullcontext()
        if sound is None:
            raise ValueError(f"{type(model).__name__} hears each clip through its phase: give the clip's Sound")
        return model.clip_phase(sound.phase[i:i + 1], sound.length)

    def _ensure_batches(self, x: torch.Tensor) -> None:
        if self.batch_sizes is not None:
            return
        sample = x[:1]
        if self.batch_size:
            self.batch_sizes = {"forward": self.batch_size, "backward": self.batch_size}
        else:
            self.batch_sizes = batch_sizes(self.model, sample, self.memory_gb)
            log.info("explanation batch sizes: %s", self.batch_sizes)
        for method in self.methods.values():
            method.batch_size = self.batch_sizes["forward" if method.gradient_free else "backward"]

    def weights(self) -> str:
        """The hash of the model's weights: what identifies the model explained (computed once: it reads
        every weight)."""
        if not hasattr(self, "_weights"):
            self._weights = weights_hash(self.model)
        return self._weights

    def _cache(self, name: str) -> AttributionCache | None:
        if self.cache_dir is None or not self.methods[name].cached:
            return None
        if name not in self._caches:
            method = self.methods[name]
            # the input, its target and clip id key each entry; the precision changes the maps of the
            # forward-only methods, and the background those of the methods that use one. The protocol
            # keys the methods it changes (the others' maps are shared by both protocols)
            key = {"weights": self.weights(), "method": name, "options": method.options(), "precision": self.precision,
                   "background": tensor_hash(method.background) if method.needs_background else None,
                   "protocol": self.protocol if name in self._by_protocol else None}
            weight = next(iter(self.model.parameters()), None)
            if weight is not None and weight.device.type == "cuda":  # CPU keys stay as they were
                # GPU float32 maps differ from the CPU's by rounding, and TF32 moves them further
                key.update(device="cuda", tf32=self.tf32)
            self._caches[name] = AttributionCache(self.cache_dir, key)
        return self._caches[name]

    # -- per batch ----------------------------------------------------------------------------------
    def explain(self, x: torch.Tensor, ids: Sequence[str], sound: Sound | None = None,
                progress: Hook | None = None) -> Explained:
        """Explain the model's predicted class of every spectrogram of ``x`` (B, 1, T, F) with every method,
        and score every mask; ``ids`` name the clips (cache entries, per-clip seeds); ``sound``: what scoring
        what is heard needs (the phase and length of the clips, in a mixture its parts). ``progress`` hears of
        each step (``explain.progress``: per method its maps, its masks and its curves)."""
        if "heard" in self.scored and sound is None:
            raise ValueError("this pipeline scores what is heard: explain() needs the batch's Sound (phase, length)")
        if self.one_clip_at_a_time and len(x) != 1:
            raise ValueError(f"{type(self.model).__name__} hears each clip through its phase: explain() takes one "
                             f"clip at a time, got {len(x)}")
        with tf32(self.tf32), cudnn_autotune(x.device), self._on_clip(self.model, sound):
            return self._explain(x, list(ids), sound, progress)

    def _explain(self, x: torch.Tensor, ids: list[str], sound: Sound | None = None,
                 progress: Hook | None = None) -> Explained:
        self.check(x, sound)
        probs = self.predict(x)
        out = Explained(probs, probs.argmax(-1))
        listen = self._listener(x, out, sound) if "heard" in self.scored else None
        kept = out.heard_clips
        # one copy to the host and one hash per clip serve every method's cache
        digests = [tensor_hash(row) for row in x.detach().cpu()] if self.cache_dir is not None else None
        steps = Steps(progress, len(self.methods) * (3 if self.curves is not None else 2))
        for name in self.methods:
            steps.begin(f"{name} maps")
            maps = self.attribute(name, x, out.pred, ids, digests)
            steps.begin(f"{name} masks")
            part = out.methods[name] = MethodBatch(maps, self.score(name, x, probs, out.pred, maps, listen, kept))
            if listen is not None and sound.target is not None:
                part.si_sdr = si_sdr(part.scored.audio_in, sound.target[kept])
            if self.curves is not None:
                steps.begin(f"{name} curves")
                part.ranks = cell_ranks(maps, ids, self.seed)
                part.curves = self.curve(name, x, probs, out.pred, maps, ids, part.ranks)
        steps.end()
        return out

    def _listener(self, x: torch.Tensor, out: Explained, sound: Sound):
        """What hears a batch's masked spectrograms of the clips ``sound.clips`` (``explain.heard.hear`` with
        their phase, masks outer); and, once per batch, those clips' unmasked distortion and, in a mixture, the
        SI-SDR of their mix and of the ideal binary mask's audio."""
        self._ensure_batches(x)
        size, kept = self.batch_sizes["forward"], sound.heard(len(x))
        out.heard_clips = kept
        if not len(kept):
            return None
        x, phase = x[kept], sound.phase[kept]
        _, heard = hear(self.features, x, phase, sound.length, size)
        out.clip_distortion = distortion(x, heard)
        self.clip_distortion.update(out.clip_distortion)
        if sound.target is not None:
            target, distractor = sound.target[kept], sound.distractor[kept]
            with torch.no_grad():
                ideal = ideal_binary_mask(self.features, target, distractor).to(x.dtype)
            ideal_in = apply_mask(x, ideal, fill_values(x, self.fill))[0]
            audio, _ = hear(self.features, ideal_in, phase, sound.length, size)
            out.separation_bounds = {MIXTURE: si_sdr(target + distractor, target), IDEAL: si_sdr(audio, target)}

        def listen(spectrograms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            phases = phase.repeat(len(spectrograms) // len(x), *[1] * (phase.dim() - 1))  # masks outer
            return hear(self.features, spectrograms, phases, sound.length, size)
        return listen

    def curve(self, name: str, x: torch.Tensor, probs: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
              ids: Sequence[str], ranks: torch.Tensor | None = None) -> torch.Tensor:
        """Deletion and insertion curves of one method's maps (accumulated); (B, 2, fractions). ``ranks``: the
        maps' ``cell_ranks``, when already computed."""
        self._ensure_batches(x)
        ranks = cell_ranks(maps, ids, self.seed) if ranks is None else ranks
        with autocast(x.device, self.precision):
            curves = perturbation_curves(self.model, x, probs, target, ranks, fill_values(x, self.fill),
                                         self.fractions, self.batch_sizes["forward"])
        self.curves[name].update(curves)
        return curves

    def localise(self, out: Explained, truth: torch.Tensor, keep: torch.Tensor, ids: Sequence[str]) -> None:
        """Accumulate every method's localisation against the ground truth ``truth`` (B, 1, T, F) bool of the
        batch ``out`` explained, over the clips with ``keep`` (B,) set."""
        for name, metric in (self.localisers or {}).items():
            part = out.methods[name]
            metric.update(part.maps, part.scored.masks, truth, keep, list(ids), part.ranks)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of the clean spectrograms, in float32 in every mode: they decide the class
        explained and every metric's p_c(X), at one pass per clip (beside 28 per method for the masks)."""
        self._ensure_batches(x)
        with self.policy.exact(x.device):
            return predict_probs(self.model, x, self.batch_sizes["forward"])

    def score(self, name: str, x: torch.Tensor, probs: torch.Tensor, target: torch.Tensor,
              maps: torch.Tensor, listen=None, heard_clips: torch.Tensor | None = None) -> Scored:
        """Masks of one method's maps, the masked inputs (and what is heard of them, by ``listen``) through the
        model, and the metrics (accumulated)."""
        self._ensure_batches(x)
        with autocast(x.device, self.precision):
            return self.scorers[name].update(self.model, x, probs, target, maps, self.batch_sizes["forward"],
                                             fill_values(x, self.fill), listen, heard_clips, self.policy)

    def score_heard(self, name: str, x: torch.Tensor, probs: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
                    sound: Sound) -> Scored:
        """``score`` of one method's maps with what is heard of its masks (as ``explain`` scores them)."""
        out = Explained(probs, target)
        return self.score(name, x, probs, target, maps, self._listener(x, out, sound), out.heard_clips)

    def attribute(self, name: str, x: torch.Tensor, target: torch.Tensor, ids: Sequence[str],
                  digests: Sequence[str] | None = None) -> torch.Tensor:
        """One method's maps of a batch: from the cache where there, computed (and cached) where not.
        ``digests``: each clip's ``tensor_hash``, when the caller has them."""
        self._ensure_batches(x)
        method, cache = self.methods[name], self._cache(name)
        targets = target.tolist()
        if cache and digests is None:
            digests = [tensor_hash(row) for row in x.detach().cpu()]
        maps = [cache.get(c, x[i], targets[i], digests[i]) if cache else None for i, c in enumerate(ids)]
        todo = [i for i, m in enumerate(maps) if m is None]
        if todo:
            amp = autocast(x.device, self.precision) if method.gradient_free else contextlib.nullcontext()
            with torch.enable_grad(), amp:
                fresh = method.attribute(x[todo].detach(), target[todo], ids=[ids[i] for i in todo]).detach().float()
            for j, i in enumerate(todo):
                maps[i] = fresh[j]
                if cache:
                    cache.put(ids[i], x[i], targets[i], fresh[j], digests[i])
        self.counts[name]["computed"] += len(todo)
        self.counts[name]["cached"] += len(ids) - len(todo)
        return torch.stack([m.to(x.device) for m in maps])

    # -- the randomisation sanity check ----------------------------------------------------------------
    def sanity(self, x: torch.Tensor, target: torch.Tensor, ids: Sequence[str], layers: Sequence[str] = LAYERS,
               seed: int = 0, progress: Hook | None = None, sound: Sound | None = None) -> list[list]:
        """The model-parameter randomisation test (``explain/sanity.py``) of every method on the clips ``x``:
        rows of ``sanity.csv``. Each randomised model gets its own instance of each method, with the same
        options and background. ``progress`` hears of each method's maps of each model. ``sound``: the clips'
        phases and length, for a model that hears through them (then each clip is explained alone)."""
        with self._on_clip(self.model, sound):
            self._ensure_batches(x)
        ids = list(ids)

        def explain(model: nn.Module, name: str) -> torch.Tensor:
            method = self.methods[name] if model is self.model else self._method_for(name, model)
            try:
                with torch.enable_grad():
                    if not self.one_clip_at_a_time:
                        return method.attribute(x.detach(), target, ids=ids).detach().float()
                    maps = []
                    for i in range(len(x)):
                        with self._on_clip(model, sound, i):
                            maps.append(method.attribute(x[i:i + 1].detach(), target[i:i + 1], ids=ids[i:i + 1]))
                    return torch.cat(maps).detach().float()
            finally:
                if method is not self.methods[name]:
                    method.close()

        with tf32(self.tf32):
            result = randomisation_test(self.model, explain, list(self.methods), layers, seed, progress=progress)
        return sanity_rows(result, seed)

    def _method_for(self, name: str, model: nn.Module):
        method = make_method(name, model, seed=self.seed, batch_size=self.methods[name].batch_size,
                             **self._method_options[name])
        if method.needs_background:
            method.set_background(self.methods[name].background)
        return method

    # -- results ------------------------------------------------------------------------------------
    def results(self, scored: str = "spectrogram") -> dict[str, dict[str, dict[str, float]]]:
        """Mean of every metric per method and mask of the input ``scored``, over every clip seen (by every
        process)."""
        return {n: s.compute(scored) for n, s in self.scorers.items()}

    def distortion_results(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per method the mean distortion (masks, 2 parts, measures), and the unmasked clips' (measures,), over
        every clip seen (by every process); only when scoring what is heard."""
        return {n: s.distortion_means() for n, s in self.scorers.items()}, self.clip_distortion.compute()

    def curve_results(self) -> dict[str, dict]:
        """Per method: mean ``deletion`` and ``insertion`` curves (lists over ``fractions``) and their areas
        (``deletion_auc``, ``insertion_auc``), over every clip seen by every process."""
        out = {}
        for name, metric in (self.curves or {}).items():
            mean = metric.compute()
            areas = metric.areas()
            out[name] = {**{c: mean[i].tolist() for i, c in enumerate(CURVES)},
                         **{f"{c}_auc": areas[c] for c in CURVES}}
        return out

    def localisation_results(self) -> dict[str, dict]:
        """Per method: ``n`` clips localised, ``map`` (metric -> mean) and ``mask`` (mask -> metric -> mean),
        over every process; empty without localisation."""
        with warnings.catch_warnings():  # no ground truth seen: compute before update is expected
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            return {n: m.compute() for n, m in (self.localisers or {}).items()}

    def count(self, scored: str | None = None) -> int:
        """Clips scored (``scored``: of that input; None: the first scored), over every process."""
        return self.scorers[next(iter(self.scorers))].count(scored) if self.scorers else 0

    def options(self) -> dict[str, dict]:
        return {n: m.options() for n, m in self.methods.items()}

