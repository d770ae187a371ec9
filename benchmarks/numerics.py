"""Do the explanation's numbers depend on the device, the batch, TF32 or bf16? One model, one set of clips.

    python -m benchmarks.numerics --ckpt runs/quickstart/best.ckpt --data data/quickstart --clips 16 \\
        --device cuda --out numerics.json

For each mode (``fp32``: TF32 off, the default of ``test --explain``; ``tf32``: TF32 on; ``bf16``: bfloat16
autocast of the forward-only passes) the clips are explained with the study's methods and the controls
(``ExplanationPipeline``, as ``test --explain`` runs them) twice on ``--device``: as one batch and one clip
at a time. Each is compared with the same clips explained as one batch on the CPU in fp32. Per comparison:
the largest difference of the clean probabilities (against the metrics' ``PROB_TOL``), the predicted classes
that differ, per method the largest difference of the maps (relative to the map's largest value), and per
metric over every (method, mask, clip) how many clip values differ: for AI and Fid-In (thresholds) a flip,
for the others more than ``--tol``.

On a CPU (``--device cpu``) the fp32 comparisons must be exact: the command exits 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from datamodules import ESC50DataModule
from explain import METRIC_NAMES, parse_methods
from explain.metrics import PROB_TOL
from explain.pipeline import ExplanationPipeline
from lightning_modules import AudioClassifier

MODES = {"fp32": {"tf32": False, "precision": "32"}, "tf32": {"tf32": True, "precision": "32"},
         "bf16": {"tf32": False, "precision": "bf16"}}
THRESHOLDS = ("AI", "FidIn")


def load(args):
    module = AudioClassifier.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    model, features = module.spectrogram_model, module.features
    for p in model.parameters():
        p.requires_grad_(False)
    dm = ESC50DataModule(root=args.data, batch_size=args.clips, sample_rate=features.sample_rate,
                         duration=args.duration)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    if len(batch["waveform"]) < args.clips:
        raise SystemExit(f"--clips {args.clips}: the test folds of {args.data} hold {len(batch['waveform'])} clips")
    with torch.no_grad():
        x = features(batch["waveform"][: args.clips])
    background = features(dm.background(2, args.background)["waveform"])
    return model, x, list(batch["filename"][: args.clips]), background


def explain(model, x, ids, background, device, mode: dict, one_at_a_time: bool, args) -> dict:
    """Probabilities, maps and per-clip values of every method, on ``device``, as one batch or clip by clip."""
    model = model.to(device)
    methods = parse_methods(args.methods)
    pipe = ExplanationPipeline(model, methods, {"lime": {"num_samples": args.lime_samples}}, **mode).to(device)
    for name in pipe.backgrounds_needed():
        pipe.set_background(name, background.to(device))
    parts = [slice(i, i + 1) for i in range(len(x))] if one_at_a_time else [slice(0, len(x))]
    outs = [pipe.explain(x[p].to(device), ids[p]) for p in parts]
    pipe.close()
    return {"probs": torch.cat([o.probs.cpu() for o in outs]),
            "maps": {n: torch.cat([o.methods[n].maps.cpu() for o in outs]) for n in methods},
            "values": {n: torch.cat([o.methods[n].scored.values["spectrogram"].cpu() for o in outs], dim=1)
                       for n in methods}}


def compare(a: dict, b: dict, tol: float) -> dict:
    """Differences of two explanations of the same clips (see the module's docstring)."""
    out = {"max_prob_diff": float((a["probs"] - b["probs"]).abs().max()),
           "pred_differ": int((a["probs"].argmax(1) != b["probs"].argmax(1)).sum()),
           "map_rel_diff": {}, "values_differ": {m: 0 for m in METRIC_NAMES}, "values": 0}
    for n in a["maps"]:
        scale = b["maps"][n].flatten(1).abs().amax(1).clamp_min(1e-12)
        out["map_rel_diff"][n] = float(((a["maps"][n] - b["maps"][n]).flatten(1).abs().amax(1) / scale).max())
        va, vb = a["values"][n], b["values"][n]  # (masks, clips, metrics)
        for j, m in enumerate(METRIC_NAMES):
            diff = (va[..., j] - vb[..., j]).abs()
            differ = (diff > 0) if m in THRESHOLDS else (diff > tol)
            out["values_differ"][m] += int(differ.sum())
        out["values"] += va.shape[0] * va.shape[1]
    return out


def run(args) -> dict:
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    device = torch.device(args.device)
    model, x, ids, background = load(args)
    cpu = explain(model, x, ids, background, torch.device("cpu"), MODES["fp32"], False, args)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "clips": len(x), "prob_tol": PROB_TOL, "modes": {}}
    for name in args.modes:
        batched = explain(model, x, ids, background, device, MODES[name], False, args)
        single = explain(model, x, ids, background, device, MODES[name], True, args)
        report["modes"][name] = {"batch_vs_single": compare(batched, single, args.tol),
                                 "vs_cpu_fp32": compare(batched, cpu, args.tol)}
    return report


def failures(report: dict) -> list[str]:
    """What must hold on a CPU: fp32 on the CPU equals itself exactly, batched or clip by clip."""
    fp32 = report["modes"].get("fp32")
    if report["device"] != "cpu" or fp32 is None:
        return []
    bad = []
    for key, c in fp32.items():
        if c["pred_differ"] or any(c["values_differ"][m] for m in THRESHOLDS):
            bad.append(f"fp32 {key}: predictions or AI/Fid-In differ")
        if key == "vs_cpu_fp32" and (c["max_prob_diff"] or any(c["values_differ"].values())):
            bad.append("fp32 on the CPU differs from itself")
    return bad


def summary(report: dict) -> str:
    lines = [f"device {report['device']}, torch {report['torch']}, {report['clips']} clips; PROB_TOL {report['prob_tol']}"]
    for name, mode in report["modes"].items():
        for key, c in mode.items():
            differ = ", ".join(f"{m} {v}" for m, v in c["values_differ"].items() if v)
            lines.append(f"{name:>5} {key:<16} max |dp| {c['max_prob_diff']:.2e}, predictions differ {c['pred_differ']}, "
                         f"largest map difference {max(c['map_rel_diff'].values()):.1e}; clip values differing "
                         f"(of {c['values']} per metric): {differ or 'none'}")
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.numerics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a checkpoint of this project")
    p.add_argument("--data", required=True, help="an ESC-50-layout folder (the quickstart's: data/quickstart)")
    p.add_argument("--duration", type=float, default=2.5, help="clip length the checkpoint was trained on")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--background", type=int, default=20, help="SHAP background clips")
    p.add_argument("--lime-samples", type=int, default=100)
    p.add_argument("--methods", default="study,controls")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tol", type=float, default=1e-4, help="a continuous metric's value differs above this")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in MODES for m in args.modes):
        p.error(f"--modes: known modes are {', '.join(MODES)}")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    report = run(args)
    print(summary(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    bad = failures(report)
    for line in bad:
        print("FAILED:", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
