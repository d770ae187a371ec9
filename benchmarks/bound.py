"""How far do bf16 autocast (or TF32) move the probabilities the metrics read? The measurement behind
``explain.batching.ERROR_BOUNDS``.

    python -m benchmarks.bound --ckpt runs/quickstart/best.ckpt --data data/quickstart --clips 32 --device cpu

One model (a project checkpoint), ``--clips`` test clips, the maps of ``--methods`` (Saliency, Grad-CAM and the
controls by default: maps that do not depend on the precision), their 14 masks in and out: every input the
metric stage scores, run through the model in float32 (TF32 off) and in the mode asked (``--mode bf16``:
bfloat16 autocast; ``tf32``: TF32 on, CUDA only). It prints the largest |p_mode - p_fp32| over every class of
every input (clean, masked in, masked out), the mode's bound against it, how many AI and Fid-In decisions
lie within the bound of their threshold (the rows the exact mode runs again in float32), how many the
mode alone would flip, and how many still differ from float32 after those rows are run again (the exact
mode's promise: none). Exits 1 when a probability moved by more than the bound or a decision still differs.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from datamodules import ESC50DataModule
from explain import make_masks
from explain.batching import ERROR_BOUNDS, Precision, tf32
from explain.evaluate import exact_thresholds, predict_probs
from explain.masks import apply_mask, fill_values
from explain.metrics import average_increase, fidelity_in, near_thresholds
from explain.pipeline import ExplanationPipeline
from lightning_modules import AudioClassifier


def measure(model, x, ids, methods, mode: str, device, batch: int = 8) -> dict:
    model, x = model.to(device), x.to(device)
    pipe = ExplanationPipeline(model, methods, batch_size=batch).to(device)  # float32 maps
    exact = Precision("32", False)
    fast = Precision("bf16", False) if mode == "bf16" else Precision("32", True)
    with exact.exact(device):
        probs = predict_probs(model, x, batch)
    target = probs.argmax(1)
    inputs, names = [], []
    for name in methods:
        with torch.enable_grad():
            maps = pipe.attribute(name, x, target, ids)
        x_in, x_out = apply_mask(x.unsqueeze(0), make_masks(maps), fill_values(x))
        inputs.append(torch.cat([x_in, x_out]))  # (2 masks, clips, 1, T, F)
        names.append(name)
    both = torch.stack(inputs)  # (methods, 2 masks, clips, ...)
    flat = both.flatten(0, 2)
    with exact.exact(device):
        p32 = predict_probs(model, flat, batch)
    with tf32(fast.tf32), fast.fast(device):
        pf = predict_probs(model, flat, batch)
    with fast.fast(device):
        pf_clean = predict_probs(model, x, batch)
    diff = (pf - p32).abs().view(*both.shape[:3], -1)
    k = both.shape[1] // 2
    bound = fast.bound(device)
    p32_in, pf_in = p32.view(*both.shape[:3], -1)[:, :k], pf.view(*both.shape[:3], -1)[:, :k]
    near = near_thresholds(probs, pf_in, target, bound)

    def flips(p_in):
        return {"AI": int((average_increase(probs, p_in, target) != average_increase(probs, p32_in, target)).sum()),
                "FidIn": int((fidelity_in(probs, p_in, target) != fidelity_in(probs, p32_in, target)).sum())}

    x_in = both[:, :k].flatten(0, 1)  # (methods x masks, clips, ...), as the scorer sees one method's
    exact_in, _ = exact_thresholds(model, x_in, probs, pf_in.flatten(0, 1), target, fast, batch)
    return {"mode": mode, "bound": bound, "clips": len(x), "methods": names,
            "max_dp_clean": float((pf_clean - probs).abs().max()),
            "max_dp_in": float(diff[:, :k].max()), "max_dp_out": float(diff[:, k:].max()),
            "rows_in": int(near.numel()), "near": int(near.sum()), "flips_without_recompute": flips(pf_in),
            "flips_exact": flips(exact_in.view_as(pf_in))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bound", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a checkpoint of this project")
    p.add_argument("--data", required=True, help="an ESC-50-layout folder (the quickstart's: data/quickstart)")
    p.add_argument("--duration", type=float, default=2.5, help="clip length the checkpoint was trained on")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--methods", default="saliency,gradcam,random,energy")
    p.add_argument("--mode", default="bf16", choices=sorted(ERROR_BOUNDS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    module = AudioClassifier.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    for q in module.parameters():
        q.requires_grad_(False)
    dm = ESC50DataModule(root=args.data, batch_size=args.clips, sample_rate=module.features.sample_rate,
                         duration=args.duration)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        x = module.features(batch["waveform"][: args.clips])
    report = measure(module.spectrogram_model, x, list(batch["filename"][: args.clips]),
                     [m.strip() for m in args.methods.split(",")], args.mode, torch.device(args.device))
    report["device"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    worst = max(report["max_dp_clean"], report["max_dp_in"], report["max_dp_out"])
    print(f"{report['mode']} on {report['device']}, {report['clips']} clips, {','.join(report['methods'])}: "
          f"max |dp| clean {report['max_dp_clean']:.2e}, masked in {report['max_dp_in']:.2e}, masked out "
          f"{report['max_dp_out']:.2e}; bound {report['bound']:.1e} ({report['bound'] / max(worst, 1e-12):.1f}x); "
          f"{report['near']} of {report['rows_in']} AI/Fid-In rows within it (run again in float32); "
          f"flips without that: AI {report['flips_without_recompute']['AI']}, "
          f"Fid-In {report['flips_without_recompute']['FidIn']}; with it: AI {report['flips_exact']['AI']}, "
          f"Fid-In {report['flips_exact']['FidIn']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0 if worst <= report["bound"] and not any(report["flips_exact"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
