"""The explanation callback: over the test loop, explain every clip with each method, build the 14
masks, score them with the 7 metrics, and write results, per-clip values, audio and figures."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from audio_xai.errors import UsageValueError
from explain import MASK_NAMES, METHODS, parse_methods
from explain.base import method_groups, row_names
from explain.masks import check_mask_names
from explain.metrics import METRIC_NAMES
from explain.batching import CUDA_MEMORY_GB, PRECISIONS, check_memory, check_precision
from explain.curves import CURVES, FRACTIONS
from explain.masks import FILLS, check_fill
from explain.localisation import ground_truth
from explain.evaluate import CONCISENESS_ON
from explain.pipeline import ExplanationPipeline
from explain.heard import DEFAULT_SCORED, IDEAL, MIXTURE, Sound, check_scored
from explain.records import (EXAMPLES, MASK_PARTS, ClipValues, CurvePoint, DistortionValue, LocalisationValue, Result,
                             RunKey, RunRecords, SanityValue, SeparationValue, example_figure, example_folder,
                             example_original, example_sound)
from explain.sanity import LAYERS as SANITY_LAYERS
from explain.protocol import PROTOCOLS, check_protocol
from audio_xai.files import claim_folder
from lightning_modules.contract import check_explainable, check_sanity_layers, sanity_layers
from .media import save_spectrogram_figures, write_wav

from .progress import stage_progress
from .outputs import RunFacts, log_run, write_files

log = logging.getLogger(__name__)


@dataclass
class SeenClip:
    """A clip explained: its place in the dataset, its name, its true class and the class predicted."""
    index: int
    clip: str
    target: int
    pred: int


@dataclass
class ScoredClip:
    """One clip's values of one input scored: method -> (masks, metrics) in ``METRIC_NAMES`` order."""
    scored: str
    seen: SeenClip
    values: dict


@dataclass
class SanityClip:
    """A clip kept for the sanity check: its spectrogram (1, T, F) on the host, the class predicted and, for a
    model that hears each clip through its phase, that phase and the clip's length."""
    index: int
    clip: str
    x: torch.Tensor
    pred: int
    sound: tuple[torch.Tensor, int] | None


@dataclass
class ClipSeparation:
    """One mixed clip's SI-SDR (dB) against its target: of the mix, of the ideal binary mask's audio, and per
    method of each mask's masked-in audio (masks in the run's order)."""
    index: int
    clip: str
    mix: float
    ideal: float
    by_method: dict[str, list[float]]


def every_rank(trainer, value) -> list:
    """``value`` of every rank of a distributed run, in rank order (a collective: every rank calls it); of this
    process alone otherwise."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, value)
        return gathered
    return [value]


def check_method_options(options: dict) -> None:
    """``--explainer.options``: every method named, and every value, checked before anything is loaded. A
    group (``all``) is refused: its methods have different options."""
    groups = method_groups()
    for key, values in options.items():
        if key in groups:
            raise UsageValueError(f"--explainer.options: {key!r} is a group of methods, and options are set per "
                                  f"method; name the method, e.g. {{\"lime\": {{\"num_samples\": 500}}}} "
                                  f"({key}: {', '.join(groups[key])})")
        parse_methods([key])  # an unknown method name fails here
        if not isinstance(values, dict):
            raise UsageValueError(f"--explainer.options: the options of {key} must be a mapping of option names to "
                                  f"values, e.g. {{\"{key}\": {{...}}}}, got {values!r}")
        METHODS[key].check_options(values)


class ExplainCallback(Callback):
    """Explains the test loop: the Lightning side of ``explain.pipeline.ExplanationPipeline`` (hooks,
    backgrounds from the data module, gathering across ranks, files and loggers).

    Args:
        methods: method names, a comma list, or ``all`` (``--explain``).
        seed: seed of the random methods (LIME patterns); each clip's seed also depends on its file name.
        batch_size: spectrograms per model call (perturbations, masked inputs, SHAP pairs); default: 8 on a
            CPU, on a GPU as many as ``memory_gb`` holds by a count of the model's activations (the same for
            the same model, clip length and budget, whatever else holds memory; recorded in run.json).
        memory_gb: GPU memory one model call may take when ``batch_size`` is unset (default 8: a 16 GB card;
            raise it on a large card for larger, faster calls).
        precision: ``32``, or ``bf16`` to run the explanation forwards (LIME's perturbations, masked inputs,
            curves) under bfloat16 autocast; gradient methods and the clean pass stay in full precision, and
            AI's and Fid-In's decisions near their thresholds are computed again in float32, so they equal a
            float32 run's; FF, AD, AG and LIME's maps move a little (``python -m benchmarks.precision``).
        options: options per method, e.g. ``{"lime": {"num_samples": 1000, "kernel_width": 0.25}}``; each
            method declares its own (listed under ``--explain`` in ``--help``).
        lime_samples, shap_background_per_class, shap_background_size: older spellings of
            ``options.lime.num_samples`` and ``options.shap.background_per_class`` / ``background_size``
            (a method declares such aliases itself); unset: the method's default.
        masks: which of the 14 masks to score (default all).
        conciseness_on: ``mask`` (as the published numbers) or ``attribution``: what SPS and COMP measure.
        examples: how many test clips (the first ones) get audio and figures for every method and mask
            (0: none).
        output_dir: where files go; default ``<trainer.default_root_dir>/explain``.
        model_name: label of the model in the results; default the feature type (``mel`` or ``stft``).
        cache: keep every clip's attribution map on disk, so that a killed run started again only computes
            what is missing (in ``cache_dir``, default ``<trainer.default_root_dir>/../attribution-cache``).
        protocol: ``corrected`` (the paper's protocol with the study's bugs fixed) or ``study`` (what the
            study's code computed: the transposed Grad-CAM resize, its gradient "SHAP", SPS = COMP = 0 for
            constant masks, AD and AG with 1e-6 epsilons); the list is in explain/protocol.py.
        fill: what a masked-out cell becomes, for the metrics and the curves: ``floor`` (-100 dB, the
            study's), ``clip_min`` (the clip's quietest value) or ``clip_mean`` (its mean dB).
        curves: also compute each method's deletion and insertion curves (``curves.csv``) at ``fractions``
            (increasing, from 0 to 1 both included: the areas span the whole range).
        tf32: allow TF32 in CUDA convolutions and matrix products during the explanation passes (default
            off: full float32, so the threshold metrics do not move between a GPU and a CPU; ``fit`` keeps
            torch's default). Recorded in ``run.json`` and the attribution cache key.
        scored: what the metrics score, a comma list: ``spectrogram`` (the masked spectrogram X (x) M, as the
            study) and ``heard`` (what a listener hears of it: the model's front-end applied to its audio,
            T(T_inv(X (x) M)); with it ``distortion.csv`` and, in the mixture scenario, ``separation.csv``:
            explain/heard.py); unset: both, or ``spectrogram`` alone under ``--explainer.protocol study``.
        heard_clips: score what is heard on the first ``heard_clips`` test clips only (each of its spectrograms
            costs an inverse, a front-end and a model pass per mask, masked in and out); unset: every clip.
        sanity: run the model-parameter randomisation test (``explain/sanity.py``) on the first
            ``sanity_clips`` test clips, randomising ``sanity_layers`` (default: found from the model, for Cnn14
            the head down to conv_block1; ``lightning_modules.contract.sanity_layers``) cumulatively; written to
            ``sanity.csv``.
    """

    def __init__(self, methods: Union[str, list[str], None] = None, seed: int = 0, batch_size: Optional[int] = None,
                 precision: Literal[tuple(PRECISIONS)] = "32", options: Optional[dict[str, dict]] = None,
                 lime_samples: Optional[int] = None, shap_background_per_class: Optional[int] = None,
                 shap_background_size: Optional[int] = None, masks: Optional[list[str]] = None,
                 conciseness_on: Literal[CONCISENESS_ON] = "mask", examples: int = 8, output_dir: Optional[str] = None,
                 model_name: Optional[str] = None, cache: bool = True, cache_dir: Optional[str] = None,
                 protocol: Literal[PROTOCOLS] = "corrected", fill: Literal[FILLS] = "floor", curves: bool = True,
                 fractions: Optional[list[float]] = None, sanity: bool = False, sanity_clips: int = 32,
                 sanity_layers: Optional[list[str]] = None, tf32: bool = False, memory_gb: float = CUDA_MEMORY_GB,
                 scored: Union[str, list[str], None] = None, heard_clips: Optional[int] = None):
        super().__init__()
        if isinstance(memory_gb, bool) or not isinstance(memory_gb, (int, float)) or not 0 < memory_gb < float("inf"):
            raise UsageValueError(f"--explainer.memory_gb must be a positive number of GB, got {memory_gb!r}")
        self.tf32, self.memory_gb = tf32, float(memory_gb)
        if isinstance(sanity_clips, bool) or not isinstance(sanity_clips, int) or sanity_clips < 2:
            raise UsageValueError(f"--explainer.sanity_clips must be a whole number of at least 2, got {sanity_clips!r}")
        self.sanity, self.sanity_clips = sanity, sanity_clips
        if sanity_layers is not None and not sanity_layers:
            raise UsageValueError(f"--explainer.sanity_layers is empty: name the layers to randomise, or leave it "
                                  f"unset for the cascade found from the model (Cnn14's: {', '.join(SANITY_LAYERS)})")
        self.sanity_layers = None if sanity_layers is None else tuple(sanity_layers)  # None: the model's
        self.protocol = check_protocol(protocol)
        self.scored = DEFAULT_SCORED[self.protocol] if scored is None else check_scored(scored)
        check_fill(fill)
        self.fractions = tuple(FRACTIONS if fractions is None else fractions)
        # the curves' areas are over the whole range: without 0 and 1 they would read as a perfect map
        if (len(self.fractions) < 2 or self.fractions[0] != 0 or self.fractions[-1] != 1
                or list(self.fractions) != sorted(set(self.fractions))):
            raise UsageValueError(f"--explainer.fractions must be increasing fractions from 0 to 1, both included "
                                  f"(the curves' areas span the whole range), got {fractions!r}")
        self.fill, self.with_curves = fill, curves
        self.heard_clips = heard_clips
        for option, value, least in (("batch_size", batch_size, 1), ("examples", examples, 0), ("heard_clips", heard_clips, 1),
                                     ("lime_samples", lime_samples, 2),
                                     ("shap_background_per_class", shap_background_per_class, 1),
                                     ("shap_background_size", shap_background_size, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise UsageValueError(f"--explainer.{option} must be a whole number of at least {least}, got {value!r}"
                                      + (" (leave it unset for the automatic batch size)" if option == "batch_size" else ""))
        check_precision(precision, "--explainer.precision")
        if conciseness_on not in CONCISENESS_ON:
            raise UsageValueError(f"--explainer.conciseness_on must be one of {', '.join(CONCISENESS_ON)}, "
                                  f"got {conciseness_on!r}")
        check_mask_names(masks or ())
        self.options = options or {}
        check_method_options(self.options)
        self.aliases = {"lime_samples": lime_samples, "shap_background_per_class": shap_background_per_class,
                        "shap_background_size": shap_background_size}
        self.methods = self._row_names(methods) if methods else []
        self.seed, self.batch_size, self.precision = seed, batch_size, precision
        self.masks = tuple(masks) if masks else MASK_NAMES
        self.conciseness_on, self.examples = conciseness_on, examples
        self.output_dir, self.model_name = output_dir, model_name
        self.cache, self.cache_dir = cache, cache_dir

    def set_methods(self, methods: Union[str, list[str]]) -> None:
        self.methods = self._row_names(methods)

    def _row_names(self, methods: Union[str, list[str]]) -> list[str]:
        """The methods by the names their rows carry (``explain.base.row_names``: an L-MAC interpreter's checkpoint
        decides between ``lmac`` and ``lmac_heard``), each remembered with the name its options were given under."""
        self._given = row_names(parse_methods(methods), self.options)
        return list(self._given)

    def apply_to_trainer(self, trainer: "L.Trainer") -> None:
        """Gradient methods need autograd inside ``test``, which Lightning runs in inference mode."""
        trainer.test_loop.inference_mode = False

    def method_options(self, name: str) -> dict:
        """The options of method ``name``: its declared aliases that were set, then ``options[name]``."""
        cls = METHODS[name]
        given = {opt: self.aliases[alias] for alias, opt in cls.aliases.items() if self.aliases.get(alias) is not None}
        return {**given, **self.options.get(getattr(self, "_given", {}).get(name, name), {})}

    # -- set-up -----------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "test":
            return
        if not self.methods:
            raise UsageValueError("ExplainCallback has no methods; pass --explain with a comma list or 'all'")
        self.apply_to_trainer(trainer)
        check_explainable(pl_module)
        weight = next(iter(pl_module.spectrogram_model.parameters()), None)
        dtype = weight.dtype if weight is not None else torch.float32
        if dtype != torch.float32:
            raise UsageValueError(f"--explain needs the model in float32, but --trainer.precision made it {dtype}: "
                                  "use --trainer.precision 32 with --explainer.precision bf16 for bfloat16 "
                                  "forward passes")
        check_memory(self.memory_gb, pl_module.device)
        self.features = pl_module.features
        self.model_label = self.model_name or getattr(pl_module, "model_label", getattr(self.features, "kind", "model"))
        self._class_names = list(getattr(trainer.datamodule, "class_names", None) or [])
        self.out = Path(self.output_dir or Path(trainer.default_root_dir) / "explain")
        if trainer.is_global_zero:  # rank 0 alone writes the folder; it holds the claim for the whole run
            self._claim = claim_folder(self.out)
        self._cache_root = Path(self.cache_dir or Path(trainer.default_root_dir).parent / "attribution-cache")
        self.pipeline = ExplanationPipeline(
            pl_module.spectrogram_model, self.methods, {n: self.method_options(n) for n in self.methods},
            seed=self.seed, batch_size=self.batch_size, precision=self.precision, masks=self.masks,
            conciseness_on=self.conciseness_on, cache_dir=self._cache_root if self.cache else None,
            protocol=self.protocol, fill=self.fill, curves=self.with_curves, fractions=self.fractions,
            localisation=True,  # used only where the batches carry a ground truth
            tf32=self.tf32, memory_gb=self.memory_gb, scored=self.scored, features=self.features,
        ).to(pl_module.device)
        # per input scored, the clips scored, in this rank's test order
        self._clips: dict[str, list[SeenClip]] = {s: [] for s in self.scored}
        self._seen: list[SeenClip] = []  # every clip explained
        self._classes_out = 0  # the model's outputs: chance is one in this many
        # per scored input and method, (K, B, metrics) per batch
        self._values: dict[str, dict[str, list[torch.Tensor]]] = {s: {m: [] for m in self.methods} for s in self.scored}
        self._separation: list[ClipSeparation] = []
        self._sanity_clips: list[SanityClip] = []
        if self.sanity:
            net = pl_module.spectrogram_model
            self.sanity_layers = self.sanity_layers or sanity_layers(net)
            check_sanity_layers(net, self.sanity_layers)
        self._scenario = "clean"
        self._saw_truth = False  # whether the batches carried a ground truth (localisation.csv)

    def on_test_start(self, trainer, pl_module) -> None:
        self._progress, self._progress_chosen = None, False
        for name, (per_class, size) in self.pipeline.backgrounds_needed().items():
            self.pipeline.set_background(name, self._background(trainer, pl_module, name, per_class, size))

    def _background(self, trainer, pl_module, name: str, per_class: int, size: int) -> torch.Tensor:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "background"):
            raise UsageValueError(f"{name} needs a background from the training folds: use a data module with a "
                                  f"background() (ESC50DataModule, AudioFolderDataModule)")
        wave = dm.background(per_class, size)["waveform"].to(pl_module.device)
        with torch.no_grad():
            spec = torch.cat([self.features(w) for w in wave.split(16)])
        log.info("%s background: %d training clips", name, len(spec))
        return spec

    # -- per batch --------------------------------------------------------------------------------
    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx == 0:  # what each method needs from the model, before anything is computed
            wave = batch["waveform"][:1]
            with torch.no_grad():
                x, phase = self.features(wave, return_phase=True)
            self.pipeline.check(x, Sound(phase, wave.shape[-1]))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.pipeline.one_clip_at_a_time:
            return self._explain_batch(batch, trainer, batch_idx)
        for i in range(len(batch["filename"])):  # the model hears each clip through its own phase
            self._explain_batch({k: v[i:i + 1] if isinstance(v, (torch.Tensor, list, tuple)) else v
                                 for k, v in batch.items()}, trainer, batch_idx)

    def _explain_batch(self, batch: dict, trainer, batch_idx: int) -> None:
        wave, ids = batch["waveform"], list(batch["filename"])
        self._scenario = batch["scenario"][0] if "scenario" in batch else "clean"
        with torch.no_grad():
            x, phase = self.features(wave, return_phase=True)
        parts = [batch[k].to(wave.device) if k in batch else None for k in ("target_part", "distractor_part")]
        indices = batch["index"].tolist()
        heard = None if self.heard_clips is None else torch.tensor(
            [i for i, idx in enumerate(indices) if idx < self.heard_clips], dtype=torch.long)
        explained = self.pipeline.explain(x, ids, Sound(phase, wave.shape[-1], *parts, clips=heard),
                                          self._batch_progress(trainer, batch_idx))
        truth = ground_truth(self.features, batch, x.shape[2])
        if truth is not None:
            self._saw_truth = True
            # the truth marks the true class's sound: scored where the model predicts that class
            keep = (explained.pred == batch["target"].to(explained.pred.device)) & truth.flatten(1).any(1)
            self.pipeline.localise(explained, truth, keep, ids)
        clips = [SeenClip(*c) for c in zip(indices, ids, batch["target"].tolist(), explained.pred.tolist())]
        self._seen += clips
        self._classes_out = explained.probs.shape[-1]
        for scored in self.scored:
            self._clips[scored] += clips if scored == "spectrogram" else [clips[i] for i in explained.heard_clips.tolist()]
        if self.sanity:
            keep = self.pipeline.one_clip_at_a_time  # such a model hears each clip through its phase there too
            self._sanity_clips += [SanityClip(idx, ids[i], x[i].cpu(), int(explained.pred[i]),
                                              (phase[i].cpu(), wave.shape[-1]) if keep else None)
                                   for i, idx in enumerate(batch["index"].tolist()) if idx < self.sanity_clips]
        example = [i for i, idx in enumerate(batch["index"].tolist()) if idx < self.examples]
        if explained.separation_bounds:
            kept = explained.heard_clips.tolist()
            self._keep_separation([indices[i] for i in kept], [ids[i] for i in kept], explained)
        for name in self.methods:
            part = explained.methods[name].scored
            for scored in self.scored:
                self._values[scored][name].append(part.values[scored].cpu())
            if example:
                self._save_examples(name, [ids[i] for i in example], x[example], part.x_in[:, example],
                                    part.x_out[:, example], phase[example], wave.shape[-1],
                                    [self._classes(batch["target"][i], explained.pred[i]) for i in example])

    def _batch_progress(self, trainer, batch_idx: int):
        """The explanation stage's progress hook for one test batch's steps: one count over every batch."""
        if not self._progress_chosen:  # here, not in on_test_start: Lightning's bar starts its display after ours
            self._progress, self._progress_chosen = stage_progress(trainer, "explaining"), True
        shown = self._progress
        if shown is None:
            return None
        batches = trainer.num_test_batches[0] if trainer.num_test_batches else float("inf")
        known = batches != float("inf")

        def hook(label: str, done: int, total: int) -> None:
            shown(f"batch {batch_idx + 1}{f'/{int(batches)}' if known else ''}: {label}", batch_idx * total + done,
                  int(batches) * total if known else None)
        return hook

    def _keep_separation(self, indices: list[int], ids: list[str], explained) -> None:
        mix = explained.separation_bounds[MIXTURE].cpu()
        ideal = explained.separation_bounds[IDEAL].cpu()
        by_method = {n: m.si_sdr.cpu() for n, m in explained.methods.items() if m.si_sdr is not None}
        for i, (index, clip) in enumerate(zip(indices, ids)):
            self._separation.append(ClipSeparation(index, clip, float(mix[i]), float(ideal[i]),
                                                   {n: v[:, i].tolist() for n, v in by_method.items()}))

    # -- examples ---------------------------------------------------------------------------------
    def _classes(self, true, pred) -> str:
        """'true dog, predicted cat': the data's class names where it has them, else the class numbers."""
        names = self._class_names
        true, pred = int(true), int(pred)
        return (f"true {names[true] if true < len(names) else true}, "
                f"predicted {names[pred] if pred < len(names) else pred}")

    def _save_examples(self, method: str, ids, x, x_in, x_out, phase, length: int, classes: list[str]) -> None:
        feats = self.features
        sr = feats.sample_rate
        freqs = feats.bin_frequencies()
        with torch.no_grad():
            original = feats.inverse(x, phase, length)
            phases = phase.repeat(len(self.masks), *[1] * (phase.dim() - 1))  # masks outer, clips inner
            rebuilt_in = feats.inverse(x_in.flatten(0, 1), phases, length)
            rebuilt_out = feats.inverse(x_out.flatten(0, 1), phases, length)
        rebuilt_in = rebuilt_in.view(len(self.masks), len(ids), -1)
        rebuilt_out = rebuilt_out.view(len(self.masks), len(ids), -1)
        duration = length / sr
        figures = []
        for j, cid in enumerate(ids):
            folder = example_folder(self.out, cid)
            write_wav(example_original(folder), original[j], sr)
            for ki, mask in enumerate(self.masks):
                for part, rebuilt in zip(MASK_PARTS, (rebuilt_in, rebuilt_out)):
                    write_wav(example_sound(folder, method, mask, part), rebuilt[ki, j], sr)
                figures.append((example_figure(folder, method, mask),
                                [("original", x[j, 0]), (f"masked in ({mask})", x_in[ki, j, 0]),
                                 ("masked out", x_out[ki, j, 0])],
                                f"{cid} ({classes[j]}): {method}, {mask}"))
        save_spectrogram_figures(figures, freqs, duration)

    # -- end ----------------------------------------------------------------------------------------
    def run_key(self, scored: str = "spectrogram") -> RunKey:
        """The key of the rows of ``scored`` (curves, sanity and localisation are of the spectrogram's)."""
        return RunKey(self.model_label, self._scenario, self.protocol, self.fill, scored)

    def _close_progress(self) -> None:
        shown, self._progress = getattr(self, "_progress", None), None
        if shown is not None:
            shown.close()

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._close_progress()
        results = []
        for scored in self.scored:
            n = self.pipeline.count(scored)  # torchmetrics sums every rank's states here
            means = self.pipeline.results(scored)
            results += [Result(self.run_key(scored), name, mask, n, means[name][mask])
                        for name in self.methods for mask in self.masks]
        distortion = self.distortion_records(self.pipeline.count("heard")) if "heard" in self.scored else []
        curves = self.pipeline.curve_results()
        localisation = self.localisation_records(self.run_key(), self.pipeline.localisation_results())
        clips, counts = self._gather(trainer)
        separation = self._gather_separation(trainer)
        sanity = self._sanity(trainer, pl_module) if self.sanity else None
        if trainer.is_global_zero:
            key = self.run_key()
            records = RunRecords(
                key, list(self.methods), list(self.masks), results, clips,
                curves=[CurvePoint(key, name, curve, f, p, len(self._clip_names)) for name, c in curves.items()
                        for curve in CURVES for f, p in zip(self.fractions, c[curve])],
                curve_areas={n: {k: v for k, v in c.items() if k.endswith("_auc")} for n, c in curves.items()},
                fractions=list(self.fractions), sanity=sanity, sanity_layers=list(self.sanity_layers or ()),
                localisation=localisation, distortion=distortion, separation=separation,
                precision=self.precision, tf32=self.tf32, examples=self.out / EXAMPLES,
                sample_rate=self.features.sample_rate)
            write_files(self.out, records, self.facts(trainer, counts))
            log_run(trainer.loggers, records)

    def distortion_records(self, n: int) -> list[DistortionValue]:
        """The rows of distortion.csv: per method, mask and part, and the unmasked clips' floor."""
        by_method, floor = self.pipeline.distortion_results()
        key = self.run_key("heard")
        out = [DistortionValue(key, "", "", "clip", *floor.tolist(), n)]
        for name, means in by_method.items():
            out += [DistortionValue(key, name, mask, part, *means[ki, pi].tolist(), n)
                    for ki, mask in enumerate(self.masks) for pi, part in enumerate(MASK_PARTS)]
        return out

    def _gather_separation(self, trainer) -> list[SeparationValue]:
        """Every rank's per-clip SI-SDR in dataset order: the rows of separation.csv (none outside a mixture)."""
        everything = every_rank(trainer, self._separation)
        key = self.run_key("heard")
        out = []
        for r in sorted((r for part in everything for r in part), key=lambda r: r.index):
            out += [SeparationValue(key, r.clip, MIXTURE, "", r.mix, 0.0),
                    SeparationValue(key, r.clip, IDEAL, "", r.ideal, r.ideal - r.mix)]
            out += [SeparationValue(key, r.clip, name, mask, v[ki], v[ki] - r.mix)
                    for name, v in r.by_method.items() for ki, mask in enumerate(self.masks)]
        return out

    def localisation_records(self, key: RunKey, localised: dict) -> list[LocalisationValue]:
        """The rows of localisation.csv; none when the data had no ground truth."""
        if not self._saw_truth:
            return []
        out = []
        for name, found in localised.items():
            out += [LocalisationValue(key, name, "", metric, value, found["n"]) for metric, value in found["map"].items()]
            out += [LocalisationValue(key, name, mask, metric, value, found["n"])
                    for mask, values in found["mask"].items() for metric, value in values.items()]
        return out

    def _sanity(self, trainer, pl_module) -> list[SanityValue] | None:
        """The randomisation test on the first clips of the test set, gathered from every rank and run by
        rank 0 alone (the others wait at the next collective)."""
        clips = every_rank(trainer, self._sanity_clips)
        if not trainer.is_global_zero:
            return None
        chosen = sorted((c for part in clips for c in part), key=lambda c: c.index)
        if len(chosen) < 2:
            log.warning("sanity check skipped: it needs at least 2 test clips, got %d", len(chosen))
            return None
        x = torch.stack([c.x for c in chosen]).to(pl_module.device)
        target = torch.tensor([c.pred for c in chosen], device=pl_module.device)
        sound = None
        if chosen[0].sound is not None:
            sound = Sound(torch.stack([c.sound[0] for c in chosen]).to(pl_module.device), chosen[0].sound[1])
        shown = stage_progress(trainer, "sanity check")
        try:
            found = self.pipeline.sanity(x, target, [c.clip for c in chosen], self.sanity_layers, self.seed, shown,
                                         sound)
        finally:
            if shown is not None:
                shown.close()
        return [dataclasses.replace(value, key=self.run_key()) for value in found]

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._close_progress()
        claim, self._claim = getattr(self, "_claim", None), None
        if claim is not None:
            claim.close()
        if getattr(self, "pipeline", None) is not None:
            self.pipeline.close()

    def _gather(self, trainer) -> tuple[list[ClipValues], dict]:
        """Every rank's per-clip values in dataset order (per method and mask), and the cache counts summed
        over ranks."""
        local = []
        for scored, by_method in self._values.items():
            values = {n: torch.cat(v, dim=1) for n, v in by_method.items() if v}
            for ci, clip in enumerate(self._clips[scored]):
                local.append(ScoredClip(scored, clip, {n: v[:, ci].numpy() for n, v in values.items()}))
        # one collective: each rank's values, cache counts, the clips it explained and the model's outputs
        everything, counts, seen, outputs = zip(*every_rank(trainer, (local, self.pipeline.counts, self._seen,
                                                                       self._classes_out)))
        in_order = sorted((r for part in everything for r in part), key=lambda r: r.seen.index)
        clips = [ClipValues(self.run_key(scored), r.seen.clip, r.seen.target, r.seen.pred,
                            int(r.seen.target == r.seen.pred), name, mask,
                            dict(zip(METRIC_NAMES, r.values[name][ki].tolist())))
                 for scored in self.scored for name in self.methods for ki, mask in enumerate(self.masks)
                 for r in in_order if r.scored == scored and name in r.values]
        total = {m: {k: sum(c[m][k] for c in counts) for k in ("cached", "computed")} for m in self.methods}
        every = sorted((c for part in seen for c in part), key=dataclasses.astuple)
        self._clip_names = [c.clip for c in every]
        # of the predictions explained (the clean spectrograms'), over every clip of every rank
        self._accuracy = {"correct": sum(int(c.target == c.pred) for c in every), "clips": len(every),
                          "classes": max(outputs)}
        return clips, total

    def facts(self, trainer, counts: dict) -> RunFacts:
        """What run.json says of this run besides its records."""
        return RunFacts(list(self.scored), self._class_names, self.pipeline.options(), self.conciseness_on,
                        self.pipeline.batch_sizes, self.memory_gb, str(trainer.strategy.root_device.type),
                        getattr(trainer, "ckpt_path", None), self.pipeline.weights(), self._clip_names,
                        trainer.world_size, self._accuracy, counts, str(self._cache_root) if self.cache else None)
