"""Explanation speed, side by side: ours, the study's reference approach, and the bare model passes.

    python -m benchmarks.explain --width 64 --clips 16 --device cuda --out bench.json

On one model (a Cnn14 of the given width with random weights, or a checkpoint of this project, ``--ckpt``,
with its own width, classes and feature type) and one set of inputs (clips of the built-in synthetic
dataset), per method it measures seconds per clip and peak memory:

- ours: ``explain.pipeline.ExplanationPipeline``, the code ``main.py test --explain`` runs (batched on
  the device): a method's ``attribute`` step, and its ``score`` step for the metric stage;
- reference: the study's approach, one clip at a time: ``lime``'s LimeImageExplainer with its defaults
  (10 perturbations per model call), ``shap.DeepExplainer`` with the same background, captum's Saliency
  and LayerGradCam per clip, the metric stage per clip and per mask with Quantus for SPS and COMP, and the
  captum methods (ig, smoothgrad, occlusion, gradshap, deeplift, inputxgrad) as captum's classes called
  on one clip at a time with their own defaults for batching (the floor as baseline, our other options);
- bound: only the model passes the method needs, in the largest batch ours uses (LIME: its perturbed
  forwards; SHAP: clip x background forward and backward; metrics: 1 + 2 x 14 forwards per clip;
  Saliency, Grad-CAM and Input x Gradient: one forward and backward per clip; IG: steps, SmoothGrad and
  GradientSHAP: samples forwards and backwards per clip; DeepLIFT: the clip and its baseline forward and
  backward; Occlusion: one forward per rectangle; curves: 1 + 2 forwards per inner fraction; heard: 2 x 14
  forwards per clip, the inverse to audio and the front-end left out, so its efficiency is the share of the
  model passes in the heard stage), forward-only passes under the same autocast as ours.

The ``heard`` stage scores saliency's masks on what is heard of them (``--explainer.scored heard``: each
masked spectrogram to audio with the clip's phase, the front-end, the model; explain/heard.py); the study had
no such stage, so it has no reference.

Each figure is the median of ``--repeat`` runs after a warm-up run of the same step on two clips (the
reference: one run). Speed-up = reference / ours; efficiency = bound / ours (1 means nothing but the model
passes). With the study's four methods, ``metrics`` and ``curves`` measured, it also estimates the full
study from its own figures (``study_estimate``: 5 runs x 400 clips, 4 methods and 2 controls each scored
and curved). ``--tf32`` allows TF32 on CUDA, as ``--explainer.tf32 true`` does.

Achieved TFLOP/s per stage: the model FLOPs of the bound's passes (per input, forward and forward + backward
to the input, counted with ``torch.utils.flop_counter.FlopCounterMode``) over ours' time, beside the card's
dense peak for the mode's dtype (``PEAKS``; none on a CPU or an unlisted card). Padded rows are not counted:
it is the useful work's rate.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from datamodules import ESC50DataModule, write_synthetic_esc50
from explain import MASK_NAMES, make_masks
from explain.lime import scale01
from explain.masks import SILENCE_DB, apply_mask
from explain.metrics import average_drop, average_gain, average_increase, faithfulness_of_features, fidelity_in
from explain.batching import CUDA_MEMORY_GB, autocast, cudnn_autotune, tf32
from explain.curves import cells_at
from explain.heard import Sound
from explain.pipeline import ExplanationPipeline
from lightning_modules import AudioClassifier, Cnn14, make_features
from torch.utils.flop_counter import FlopCounterMode

CAPTUM = ("ig", "smoothgrad", "occlusion", "gradshap", "deeplift", "inputxgrad")
STUDY = ("saliency", "gradcam", "lime", "shap")
METHODS = (*STUDY, *CAPTUM, "metrics", "curves", "heard")
# Dense (no sparsity) peak TFLOP/s of the tensor cores per dtype (float32: CUDA cores), from the vendor's data
# sheets; the first name found in the device's name counts (so the PCIe H100 before the SXM one).
PEAKS = {"H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0},
         "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
         "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
         "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
         "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0}}
STUDY_CLIPS, STUDY_RUNS, STUDY_SCORED = 400, 5, len(STUDY) + 2  # ESC-50's test fold; 5 runs; 4 methods + 2 controls


class Meter:
    """Wall time (synchronised on CUDA) and peak memory of a block, above what was in use when it began:
    allocated GPU memory on CUDA; on a CPU, the process's resident memory, sampled every 2 ms."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._peak = _rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self.start = time.perf_counter()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.seconds = time.perf_counter() - self.start
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.seconds = time.perf_counter() - self.start
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss())
        self.peak_mb = max(0.0, (peak - self._base) / 2**20)


def _rss() -> int:
    """Resident memory of this process in bytes."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def load_model(args, device):
    """The spectrogram model and its front-end: a project checkpoint through the LightningModule (its own
    width, classes and feature type), or a Cnn14 of ``--width`` with random weights."""
    if args.ckpt:
        module = AudioClassifier.load_from_checkpoint(args.ckpt, map_location="cpu")
        features, model = module.features, module.spectrogram_model
    else:
        features = make_features(args.features)
        model = Cnn14(features.num_bins, 50, args.width)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, features.to(device)


def load_inputs(args, features, device):
    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-")) / "synthetic"
    if not (root / "meta" / "esc50.csv").is_file():  # enough synthetic clips for --clips in the test fold
        write_synthetic_esc50(root, num_classes=10, clips_per_fold=max(4, -(-args.clips // 10)))
    dm = ESC50DataModule(root=str(root), batch_size=max(args.clips, 1), sample_rate=features.sample_rate)
    dm.setup("test")
    test = next(iter(dm.test_dataloader()))
    if len(test["waveform"]) < args.clips:
        raise SystemExit(f"--clips {args.clips}: the test folds of {root} hold {len(test['waveform'])} clips; "
                         "ask for fewer or point --data at a larger dataset")
    train = dm.train_set
    bg_wave = torch.stack([train[i]["waveform"] for i in range(min(args.background, len(train)))])
    with torch.no_grad():
        x, phase = features(test["waveform"][: args.clips].to(device), return_phase=True)
        bg = torch.cat([features(w.to(device)) for w in bg_wave.split(16)])
    return x, bg, list(test["filename"][: args.clips]), Sound(phase, test["waveform"].shape[-1])


# -- reference approaches (one clip at a time) ------------------------------------------------------------
def reference_gradient(name, model, x, target):
    from captum.attr import LayerAttribution, LayerGradCam, Saliency
    for i in range(len(x)):
        xi = x[i:i + 1].clone()
        if name == "saliency":
            Saliency(model).attribute(xi, target=int(target[i]), abs=False)
        else:
            cam = LayerGradCam(model, model.conv_block6.conv2).attribute(xi, target=int(target[i]))
            LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")


def reference_lime(model, x, target, samples):
    from lime.lime_image import LimeImageExplainer
    for i in range(len(x)):
        lo, hi = x[i].min(), x[i].max()
        image = scale01(x[i:i + 1])[0, 0].T.double().cpu().numpy()

        def classifier_fn(images):
            db = torch.from_numpy(images[..., 0]).float().to(x.device) * (hi - lo) + lo
            with torch.no_grad():
                return model(db.transpose(1, 2).unsqueeze(1)).softmax(-1).cpu().numpy()

        with contextlib.redirect_stderr(io.StringIO()):  # lime's own progress bar
            LimeImageExplainer(random_state=0).explain_instance(image, classifier_fn, labels=(int(target[i]),),
                                                                 top_labels=None, num_samples=samples)


def reference_shap(model, x, bg):
    import shap
    explainer = shap.DeepExplainer(model, bg)
    for i in range(len(x)):
        explainer.shap_values(x[i:i + 1], ranked_outputs=1, check_additivity=False)


def reference_metrics(model, x, target, attributions):
    import quantus
    sps = quantus.Sparseness(normalise=True, abs=True, disable_warnings=True, display_progressbar=False)
    comp = quantus.Complexity(normalise=True, abs=True, disable_warnings=True, display_progressbar=False)
    for i in range(len(x)):
        xi, ci = x[i:i + 1], target[i:i + 1]
        with torch.no_grad():
            p = model(xi).softmax(-1)
        masks = make_masks(attributions[i:i + 1])
        for k in range(len(MASK_NAMES)):
            x_in, x_out = apply_mask(xi, masks[k])
            with torch.no_grad():
                p_in, p_out = model(x_in).softmax(-1), model(x_out).softmax(-1)
            for fn, q in ((faithfulness_of_features, p_out), (average_increase, p_in), (average_drop, p_in),
                          (average_gain, p_in), (fidelity_in, p_in)):
                fn(p, q, ci).item()
            m = masks[k].cpu().numpy().astype(np.float64)
            if not np.all(m == m.flat[0]):  # Quantus refuses constant masks
                xs = np.zeros_like(m)
                sps(model=None, x_batch=xs, y_batch=np.zeros(1, int), a_batch=m, channel_first=True)
                comp(model=None, x_batch=xs, y_batch=np.zeros(1, int), a_batch=m, channel_first=True)


def reference_captum(name, method, model, x, target):
    """captum's class for ``method`` (ours, for its options) called on one clip at a time."""
    from captum.attr import (DeepLift, GradientShap, InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion,
                             Saliency)
    for i in range(len(x)):
        xi, ti = x[i:i + 1].clone(), int(target[i])
        floor = torch.full_like(xi, SILENCE_DB)
        spread = float(xi.max() - xi.min())
        if name == "ig":
            IntegratedGradients(model).attribute(xi, floor, target=ti, n_steps=method.steps)
        elif name == "smoothgrad":
            NoiseTunnel(Saliency(model)).attribute(xi, nt_type="smoothgrad", nt_samples=method.samples,
                                                   stdevs=method.noise_level * spread, target=ti, abs=False)
        elif name == "occlusion":
            Occlusion(model).attribute(xi, (1, *method.window), strides=(1, *method.stride), baselines=SILENCE_DB,
                                       target=ti)
        elif name == "gradshap":
            GradientShap(model).attribute(xi, floor, n_samples=method.samples, stdevs=method.noise_level * spread,
                                          target=ti)
        elif name == "deeplift":
            DeepLift(model).attribute(xi, floor, target=ti)
        else:
            InputXGradient(lambda z: model(z + SILENCE_DB)).attribute(xi - SILENCE_DB, target=ti)


def occlusion_positions(method, shape) -> int:
    """Rectangles per clip, as captum places them (the last one in each axis cut to fit)."""
    n = 1
    for w, s, size in zip(method.window, method.stride, shape[2:]):
        w = min(w, size)
        n *= -(-(size - w) // s) + 1
    return n


def captum_passes(name, method, shape) -> tuple[int, int]:
    """(forward, forward and backward) model passes per clip of a captum method's bound."""
    if name == "occlusion":
        return occlusion_positions(method, shape), 0
    return 0, {"ig": getattr(method, "steps", 1), "deeplift": 2}.get(name, getattr(method, "samples", 1))


def bound_captum(name, method, model, x, fwd_bs, bwd_bs):
    forward, backward = captum_passes(name, method, x.shape)
    if forward:
        bound_forward(model, x, forward, fwd_bs)
    else:
        bound_backward(model, x, backward, bwd_bs)


# -- bounds: the bare model passes --------------------------------------------------------------------------
def bound_forward(model, x, repeats, batch):
    rows = x.repeat_interleave(repeats, 0) if repeats > 1 else x
    with torch.no_grad():
        for chunk in rows.split(batch):
            model(chunk)


def bound_backward(model, x, repeats, batch):
    rows = x.repeat_interleave(repeats, 0) if repeats > 1 else x
    for chunk in rows.split(batch):
        chunk = chunk.clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(model(chunk)[:, 0].sum(), chunk)


def model_flops(model, sample) -> tuple[int, int]:
    """FLOPs of one input shaped like ``sample`` (1, ...): a forward pass, and a forward and backward pass to the
    input (as the gradient methods run: the weights take no gradient)."""
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model(sample)
    x = sample.detach().clone().requires_grad_(True)
    with FlopCounterMode(display=False) as both, torch.enable_grad():
        model(x)[:, 0].sum().backward()  # not autograd.grad: the counter's module hooks refuse it
    return forward.get_total_flops(), both.get_total_flops()


def dtype_of(precision: str, tf32_on: bool) -> str:
    return "bf16" if precision == "bf16" else "tf32" if tf32_on else "fp32"


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """The card's dense peak for ``dtype`` from ``PEAKS``; None on a CPU or a card not listed."""
    for card, peaks in PEAKS.items():
        if card.lower() in device_name.lower():
            return peaks[dtype]
    return None


def measure(device, fn, x, repeat: int) -> tuple[float, float]:
    """Median seconds and largest peak memory (MB) of ``fn(x)`` over ``repeat`` runs, after one warm-up run
    on the first two clips (cuDNN's algorithm choice, the allocator, lazy imports, worker threads)."""
    fn(x[:2])
    seconds, peaks = [], []
    for _ in range(repeat):
        with Meter(device) as m:
            fn(x)
        seconds.append(m.seconds)
        peaks.append(m.peak_mb)
    return float(statistics.median(seconds)), max(peaks)


def study_estimate(methods: dict, clips: int = STUDY_CLIPS, runs: int = STUDY_RUNS) -> dict | None:
    """Seconds of the full study from this run's per-clip figures: ``runs`` test runs (mel clean, its three
    noise scenarios, STFT clean) of ``clips`` clips, each explaining the study's four methods and the two
    controls (whose maps cost nothing beside the rest) and scoring every one of the six with the metric
    stage and the deletion/insertion curves. None when a stage it needs was not measured."""
    needed = (*STUDY, "metrics", "curves")
    if any(n not in methods for n in needed):
        return None
    per_clip = {k: sum(methods[n][k] for n in STUDY) + STUDY_SCORED * (methods["metrics"][k] + methods["curves"][k])
                for k in ("ours_s", "bound_s")}
    return {"clips": clips, "runs": runs, "scored_maps": STUDY_SCORED,
            **{k.replace("_s", "_hours"): v * clips * runs / 3600 for k, v in per_clip.items()}}


def run(args) -> dict:
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    torch.manual_seed(0)
    with tf32(args.tf32), cudnn_autotune(device):  # as ExplanationPipeline.explain runs
        return _run(args, device)


def _run(args, device) -> dict:
    model, features = load_model(args, device)
    x, bg, ids, sound = load_inputs(args, features, device)
    stages = {"metrics", "curves", "heard"}
    explained = [m for m in args.methods if m not in stages] or ["saliency"]  # scored stages use saliency's maps
    options = {"lime": {"num_samples": args.lime_samples}, "shap": {"background_size": len(bg)},
               "ig": {"steps": args.steps} if args.steps else {},
               **{n: {"samples": args.samples} if args.samples else {} for n in ("smoothgrad", "gradshap")}}
    pipe = ExplanationPipeline(model, explained, {n: options.get(n, {}) for n in explained}, batch_size=args.batch,
                               precision=args.precision, curves="curves" in args.methods,
                               tf32=args.tf32, memory_gb=args.memory_gb).to(device)
    for name in pipe.backgrounds_needed():
        pipe.set_background(name, bg)
    probs = pipe.predict(x)  # also sizes the batches
    target = probs.argmax(1)
    fwd_bs, bwd_bs = pipe.batch_sizes["forward"], pipe.batch_sizes["backward"]
    amp = lambda: autocast(device, args.precision)  # what ours runs forward-only passes under  # noqa: E731

    def clip_ids(xs):  # the warm-up runs on the first clips: their ids
        return ids[:len(xs)]

    flops = model_flops(model, x[:1])  # (forward, forward and backward) of one input
    results, maps = {}, {}
    for name in METHODS:
        if name not in args.methods:
            continue
        entry = {}
        scored = explained[0]
        if name in stages:
            if scored not in maps:
                maps[scored] = pipe.attribute(scored, x, target, ids)
            attr = maps[scored]
            if name == "heard":
                listener = ExplanationPipeline(model, [scored], batch_size=args.batch, precision=args.precision,
                                               tf32=args.tf32, memory_gb=args.memory_gb, scored="heard",
                                               features=features).to(device)
                listener.batch_sizes = pipe.batch_sizes
                ours = lambda xs: listener.score_heard(scored, xs, pipe.predict(xs), target[:len(xs)],  # noqa: E731
                                                       attr[:len(xs)], Sound(sound.phase[:len(xs)], sound.length))
                reference = None  # the study heard nothing
                passes = 2 * len(MASK_NAMES)
            elif name == "metrics":
                ours = lambda xs: pipe.score(scored, xs, pipe.predict(xs), target[:len(xs)], attr[:len(xs)])  # noqa: E731
                reference = lambda xs: reference_metrics(model, xs, target[:len(xs)], attr[:len(xs)])  # noqa: E731
                passes = 1 + 2 * len(MASK_NAMES)
            else:
                ours = lambda xs: pipe.curve(scored, xs, probs[:len(xs)], target[:len(xs)], attr[:len(xs)],  # noqa: E731
                                             clip_ids(xs))
                reference = None  # the study computed no curves
                passes = 1 + 2 * sum(0 < cells_at(f, x[0].numel()) < x[0].numel() for f in pipe.fractions)

            def bound(xs, passes=passes):
                with amp():
                    bound_forward(model, xs, passes, fwd_bs)
            counts = (passes, 0)  # forward, and forward and backward passes per clip
        else:
            method = pipe.methods[name]
            ours = lambda xs, name=name: pipe.attribute(name, xs, target[:len(xs)], clip_ids(xs))  # noqa: E731
            if name == "lime":
                reference = lambda xs: reference_lime(model, xs, target, args.lime_samples)  # noqa: E731
            elif name == "shap":
                reference = lambda xs: reference_shap(model, xs, bg)  # noqa: E731
            elif name in CAPTUM:
                reference = lambda xs, name=name, m=method: reference_captum(name, m, model, xs, target)  # noqa: E731
            else:
                reference = lambda xs, name=name: reference_gradient(name, model, xs, target)  # noqa: E731

            if name == "lime":
                counts = (args.lime_samples, 0)
            elif name == "shap":
                counts = (0, len(bg))
            elif name in CAPTUM:
                counts = captum_passes(name, method, x.shape)
            else:
                counts = (0, 1)

            def bound(xs, name=name, method=method):
                if name == "lime":
                    with amp():
                        bound_forward(model, xs, args.lime_samples, fwd_bs)
                elif name == "shap":
                    bound_backward(model, xs, len(bg), bwd_bs)
                elif name in CAPTUM:
                    if method.gradient_free:
                        with amp():
                            bound_captum(name, method, model, xs, fwd_bs, bwd_bs)
                    else:
                        bound_captum(name, method, model, xs, fwd_bs, bwd_bs)
                else:
                    bound_backward(model, xs, 1, bwd_bs)
        entry["ours_s"], entry["peak_mem_mb"] = measure(device, ours, x, args.repeat)
        if name in explained:
            maps[name] = pipe.attribute(name, x, target, ids)
        if reference is not None and not args.skip_reference:
            entry["reference_s"] = measure(device, reference, x, 1)[0]
        entry["bound_s"] = measure(device, bound, x, args.repeat)[0]
        # per clip, as the table and JSON report them
        results[name] = {k: (v / len(x) if k.endswith("_s") else v) for k, v in entry.items()}
        results[name].setdefault("reference_s", float("nan"))
        results[name]["tflops"] = (counts[0] * flops[0] + counts[1] * flops[1]) / results[name]["ours_s"] / 1e12
    pipe.close()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    width = getattr(model, "width", args.width)
    dtype = dtype_of(args.precision, args.tf32 and device.type == "cuda")
    return {"device": name, "torch": torch.__version__, "width": width, "features": features.kind, "clips": len(x),
            "lime_samples": args.lime_samples, "background": len(bg), "precision": args.precision,
            "tf32": args.tf32, "repeat": args.repeat, "memory_gb": args.memory_gb, "batch": pipe.batch_sizes,
            "methods": results, "flops_per_input": {"forward": flops[0], "forward_backward": flops[1]},
            "dtype": dtype, "peak_tflops": peak_tflops(name, dtype) if device.type == "cuda" else None,
            "study": study_estimate(results)}


def table(report: dict) -> str:
    lines = [f"device: {report['device']}, Cnn14 width {report['width']}, {report['clips']} clips, "
             f"LIME {report['lime_samples']} samples, SHAP background {report['background']}, "
             f"precision {report['precision']}, TF32 {'on' if report['tf32'] else 'off'}, batch {report['batch']}, "
             f"median of {report['repeat']}",
             f"{'method':<10} {'ours s/clip':>12} {'reference':>10} {'bound':>9} {'speed-up':>9} {'efficiency':>10} "
             f"{'peak MB':>9} {'TFLOP/s':>9} {'of peak':>8}"]
    peak = report.get("peak_tflops")
    for name, r in report["methods"].items():
        share = f"{r['tflops'] / peak:>8.1%}" if peak else f"{'-':>8}"
        lines.append(f"{name:<10} {r['ours_s']:>12.4f} {r['reference_s']:>10.4f} {r['bound_s']:>9.4f} "
                     f"{r['reference_s'] / r['ours_s']:>9.2f} {r['bound_s'] / r['ours_s']:>10.2f} {r['peak_mem_mb']:>9.0f} "
                     f"{r['tflops']:>9.3f} {share}")
    lines.append(f"TFLOP/s: model FLOPs of the bound's passes ({report['flops_per_input']['forward'] / 1e9:.2f} GFLOP "
                 f"forward per input) over ours' time; {report['dtype']} peak "
                 f"{f'{peak:g} TFLOP/s' if peak else 'unknown (a CPU or an unlisted card)'}")
    study = report.get("study")
    if study:
        lines.append(f"full study in {report['dtype']} ({study['runs']} runs x {study['clips']} clips; 4 methods + 2 "
                     f"controls, each scored and curved): ours {study['ours_hours']:.2f} h, bound "
                     f"{study['bound_hours']:.2f} h")
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=16, help="Cnn14 width (64 = PANNs)")
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--lime-samples", type=int, default=1000)
    p.add_argument("--background", type=int, default=100, help="SHAP background clips")
    p.add_argument("--steps", type=int, default=None, help="IG steps (default: the method's)")
    p.add_argument("--samples", type=int, default=None, help="SmoothGrad and GradientSHAP samples (default: theirs)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="32", choices=["32", "bf16"])
    p.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (as --explainer.tf32 true)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per figure after a warm-up; the median counts")
    p.add_argument("--features", default="mel", choices=["mel", "stft"])
    p.add_argument("--batch", type=int, default=None, help="model batch (default: automatic)")
    p.add_argument("--memory-gb", type=float, default=CUDA_MEMORY_GB,
                   help="GPU memory per model call for the automatic batch (as --explainer.memory_gb)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--data", default=None, help="an ESC-50-layout folder (default: synthetic data in a temp folder)")
    p.add_argument("--ckpt", default=None, help="a checkpoint of this project to take the weights from")
    p.add_argument("--skip-reference", action="store_true", help="measure ours and the bound only")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    if args.repeat < 1 or args.clips < 1:
        p.error("--repeat and --clips must be at least 1")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    report = run(args)
    print(table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
