"""The quickstart's figures over seeds and thread counts: what a user on another machine should expect.

    python -m benchmarks.quickstart_figures run --seeds 0 1 2 --threads 1 2 --out runs/spread
    python -m benchmarks.quickstart_figures table runs/spread/*      # the table again, from finished runs

``run`` runs the quickstart (``quickstart.sh``'s three commands: fit, test of the study's four methods and the
controls with the sanity check, report) once per (seed, thread count), each in its own folder
``OUT/s<seed>-t<threads>`` with its own synthetic data, skipping a command whose output exists. Then (and ``table``)
it prints each figure docs/quickstart.md quotes, one column per run, with its range and whether every run agrees: the
model's accuracy, each method's pick and its FF margin over ``random`` (with the paired interval's sign), the
insertion and deletion AUCs, the sanity check's Spearman of |map| with every layer random, the positive mass
inside the planted boxes; ``--markdown FILE`` writes the table too.

    python -m benchmarks.quickstart_figures methods runs/quickstart   # one run's methods side by side

``methods`` prints, per method of one explained run (its latest ``test-*/explain`` and its ``report/``), FF, Fid-In
and AI at ``minmax`` and at the method's pick, scored on the spectrogram and on what is heard, and the LSD of the
heard audio of its ``minmax`` mask (the kept part): docs/heard.md's table of L-MAC beside the study's methods.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "runs/quickstart"
STUDY = ("saliency", "gradcam", "lime", "shap")


def commands(seed: int) -> list[list[str]]:
    """``quickstart.sh``'s commands at ``seed`` (the model's and the explanations')."""
    config = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--seed_everything", str(seed)]
    main = [sys.executable, str(ROOT / "main.py")]
    return [main + ["fit", *config, "--trainer.logger", "false"],
            main + ["test", *config, "--ckpt_path", f"{QUICKSTART}/best.ckpt", "--explain", "study,controls",
                    "--explainer.sanity", "true", "--explainer.seed", str(seed), "--trainer.logger", "false"],
            main + ["report", QUICKSTART, "--out", f"{QUICKSTART}/report"]]


def done(folder: Path) -> list[bool]:
    """Per command of ``commands``, whether its output is there (a run that died resumes at the next one)."""
    base = folder / QUICKSTART
    return [(base / "best.ckpt").is_file(), any(base.glob("test-*/explain/results.csv")),
            (base / "report" / "summary.csv").is_file()]


class NotFinished(Exception):
    """A folder without the files of a finished run, or a run whose command failed: said in one line."""


def finished(base: Path, need: tuple[str, ...]) -> Path:
    """The newest explained run (its ``explain`` folder) under ``base``, when ``base`` holds each file of ``need``
    (relative to ``base``) too; else ``NotFinished`` naming what is missing."""
    runs = sorted(base.glob("test-*/explain/run.json"))
    missing = [n for n in need if not (base / n).is_file()] + ([] if runs else ["test-*/explain/run.json"])
    if missing:
        raise NotFinished(f"{base}: no finished run here (missing {', '.join(missing)}): give the folder a quickstart "
                          f"ran in (its test and report done), or make one with `run`")
    return runs[-1].parent


def run(seeds: list[int], threads: list[int], out: Path) -> list[Path]:
    folders = []
    for t in threads:
        for seed in seeds:
            folder = out / f"s{seed}-t{t}"
            folders.append(folder)
            folder.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "OMP_NUM_THREADS": str(t), "MKL_NUM_THREADS": str(t), "WANDB_MODE": "disabled"}
            with open(folder / "log.txt", "a") as log:
                for cmd, finished in zip(commands(seed), done(folder)):
                    if finished:
                        continue
                    print(f"{folder.name}: {' '.join(cmd[1:4])}", flush=True)
                    if subprocess.run(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT).returncode:
                        raise NotFinished(f"{folder.name}: `main.py {cmd[2]}` failed: its output is in "
                                          f"{folder / 'log.txt'}; the steps done are kept, and `run` again resumes")
    return folders


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def figures(folder: Path) -> dict[str, str]:
    """The figures of one finished quickstart run, as the strings the table prints."""
    import torch
    base = folder / QUICKSTART
    report = base / "report"
    explain = finished(base, ("best.ckpt", "report/summary.csv"))
    found: dict[str, str] = {}
    ckpt = torch.load(base / "best.ckpt", map_location="cpu", weights_only=False)
    best = next(v for k, v in ckpt.get("callbacks", {}).items() if k.startswith("BestCheckpoint"))
    found["val acc"] = f"{float(best['best_model_score']):.3f}"
    acc = json.loads((explain / "run.json").read_text()).get("accuracy")
    if acc:  # a run written before run.json held it has none
        found["test acc"] = f"{acc['correct'] / acc['clips']:.3f}"
    for r in _rows(report / "summary.csv"):
        if r["method"] not in STUDY:
            continue
        where = "" if r["scored"] == "spectrogram" else " (heard)"
        found[f"{r['method']} pick{where}"] = r["mask"]
        low, high = float(r["FF_vs_random_low"]), float(r["FF_vs_random_high"])
        sign = "above" if low > 0 else "below" if high < 0 else "overlaps"
        found[f"{r['method']} FF - random{where}"] = f"{float(r['FF_vs_random']):+.3f} {sign}"
    for r in _rows(report / "curve_areas.csv"):
        if r["scored"] == "spectrogram":
            found[f"{r['method']} insertion AUC"] = f"{float(r['insertion_auc']):.3f}"
            found[f"{r['method']} deletion AUC"] = f"{float(r['deletion_auc']):.3f}"
    for r in _rows(report / "sanity.csv"):
        if r["layer"] == "conv_block1" and r["similarity"] == "spearman_abs" and r["scored"] == "spectrogram":
            found[f"{r['method']} sanity: Spearman of abs, all layers random"] = f"{float(r['value']):.2f}"
    for r in _rows(report / "localisation.csv"):
        if r["metric"] == "relevance_mass_accuracy" and r["scored"] == "spectrogram":
            found[f"{r['method']} mass in box"] = f"{float(r['value']):.3f}"
    return found


def _number(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def _category(value: str) -> str | None:
    """What must agree across runs: a pick's name, or the word after a number (above / below / overlaps)."""
    if _number(value) is None:
        return value
    return value.split(maxsplit=1)[1] if " " in value else None


def table(folders: list[Path]) -> str:
    per_run = {f.name: figures(f) for f in folders}
    names = list(dict.fromkeys(k for found in per_run.values() for k in found))
    head = ["figure", *per_run, "range", "all agree"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        values = [found.get(name, "") for found in per_run.values()]
        numbers = [n for n in map(_number, values) if n is not None]
        span = f"{min(numbers):.3g} to {max(numbers):.3g}" if numbers else ""
        kinds = {_category(v) for v in values}
        agree = "" if kinds == {None} else "yes" if len(kinds) == 1 else "no"
        lines.append("| " + " | ".join([name, *values, span, agree]) + " |")
    return "\n".join(lines)


def methods_table(base: Path) -> str:
    explain = finished(base, ("report/summary.csv",))
    results = {(r["method"], r["mask"], r["scored"]): r for r in _rows(explain / "results.csv")}
    picks = {(r["method"], r["scored"]): r["mask"] for r in _rows(base / "report" / "summary.csv")}
    lsd = {r["method"]: float(r["lsd_db"]) for r in _rows(explain / "distortion.csv")
           if r["mask"] == "minmax" and r["part"] == "in"}
    methods = list(dict.fromkeys(m for m, _, _ in results))
    head = ["method", "scored", "FF minmax", "Fid-In minmax", "AI minmax", "pick", "FF pick", "Fid-In pick",
            "AI pick", "LSD minmax in (dB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        for scored in ("spectrogram", "heard"):
            at = results.get((method, "minmax", scored))
            if at is None:
                continue
            pick = picks.get((method, scored), "")
            best = results.get((method, pick, scored), {})
            cells = [method, scored, *(f"{float(at[k]):.3f}" for k in ("FF", "FidIn")), f"{float(at['AI']):.1f}",
                     pick, *(f"{float(best[k]):.3f}" if best else "" for k in ("FF", "FidIn")),
                     f"{float(best['AI']):.1f}" if best else "",
                     f"{lsd[method]:.1f}" if scored == "heard" and method in lsd else ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def at_least(least: int):
    """An argparse type: a whole number of at least ``least``."""
    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {least}, got {text!r}")
        return value
    return whole


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the quickstart per (seed, threads), then print the table")
    r.add_argument("--seeds", type=at_least(0), nargs="+", default=[0, 1, 2])
    r.add_argument("--threads", type=at_least(1), nargs="+", default=[1, 2])
    r.add_argument("--out", type=Path, default=Path("runs/spread"))
    t = sub.add_parser("table", help="the table of finished runs' folders")
    t.add_argument("folders", type=Path, nargs="+")
    m = sub.add_parser("methods", help="one explained run's methods side by side (its report built)")
    m.add_argument("folder", type=Path, help="the run's default_root_dir, e.g. runs/quickstart")
    for p in (r, t, m):
        p.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    try:
        if args.command == "methods":
            text = methods_table(args.folder)
        else:
            text = table(run(args.seeds, args.threads, args.out) if args.command == "run" else args.folders)
    except NotFinished as err:
        parser.error(str(err))
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
