"""``python main.py report RESULTS... --out FOLDER``: tables, intervals and an HTML page from explained runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audio_xai.errors import program
from explain.metrics import METRIC_NAMES
from explain.summary import N_BOOT, SEED
from audio_xai.files import atomic_write, write_csv

from explain.records import (SEPARATION_MEASURES, SETTINGS, SI_SDRI, CurveArea, DistortionValue, LocalisationValue,
                             MarginValue, SanityValue, report_settings, write_records)

from . import pages, sections
from .accuracy import run_accuracy
from .checks import (FLAG_METRIC, controls_of, curve_area_records, margin_index, margin_records, margins, not_beaten,
                     read_curves, read_localisation, read_sanity)
from .compare import compare, compared_setting, difference_rows, pick_rows
from .heard import HEARD_METRICS, heard_comparison, read_distortion, read_separation
from .tables import ReportInputError, best_rows, full_tables, metrics_of, read_results, score, split_fields
from .uncertainty import attach_intervals

# what a report writes in its --out folder, by name: the terminal's summary, the W&B artifact and the writers use these
FILES = {"page": "report.html", "summary": "summary.csv", "summary_md": "summary.md", "comparison": "comparison.csv",
         "comparison_md": "comparison.md", "picks": "picks.csv", "margins": "margins.csv",
         "curve_areas": "curve_areas.csv", "sanity": "sanity.csv", "localisation": "localisation.csv",
         "heard": "heard.csv", "tables": "tables", "distortion": "tables/distortion.csv",
         "distortion_md": "tables/distortion.md", "separation": "tables/separation.csv",
         "separation_md": "tables/separation.md"}
ARTIFACT = ("page", "summary", "comparison", "picks", "margins", "curve_areas", "sanity", "localisation", "heard",
            "distortion", "separation")  # the files a --wandb report uploads


SUMMARY_COLUMNS = ["model", "scenario", "method", "mask", "score", "n", *METRIC_NAMES]


def summary_table(summary: dict, split: list[str], checks: dict | None = None) -> tuple[list[str], list[list]]:
    """The columns and rows of summary.csv: the metrics every row has, then ``protocol`` and ``fill`` where the
    report holds several (``split``), then, where there are controls, each pick's FF margin over each
    control with its interval, and ``not_above``: the controls it does not beat on FF."""
    rows = [r for best in summary.values() for r in best]
    metrics = metrics_of(rows)
    controls, index = (checks or {}).get("controls", []), (checks or {}).get("index", {})
    columns = [c for c in SUMMARY_COLUMNS if c not in METRIC_NAMES or c in metrics] + split
    if controls:
        columns += [f"{FLAG_METRIC}_vs_{c}{end}" for c in controls for end in ("", "_low", "_high")] + ["not_above"]
    table = []
    for r in rows:
        line = [r.model, r.scenario, r.method, r.mask, r.score, r.n, *(r.values[m] for m in metrics),
                *(getattr(r, f) for f in split)]
        for c in controls:
            found = index.get((r.ident, c, FLAG_METRIC))
            line += [found.margin, *(found.ci or ("", ""))] if found else ["", "", ""]
        table.append(line + ([",".join(not_beaten(r, index, controls))] if controls else []))
    return columns, table


def read_checks(rows: list, summary: dict, n_boot: int, seed: int) -> dict:
    """Margins over the controls and what the run folders hold beside results.csv: curves, sanity, localisation."""
    found = margins(rows, n_boot, seed)
    picks = [r for best in summary.values() for r in best]
    return {"margins": found, "index": margin_index(found), "controls": controls_of(rows),
            "picked": {r.ident for r in picks}, "picks": {(r.group, r.method): r.mask for r in picks},
            "curves": read_curves(rows), "sanity": read_sanity(rows), "localisation": read_localisation(rows),
            "split": split_fields(rows)}


def write_checks(out: Path, checks: dict, settings: tuple[str, ...]) -> None:
    """The checks' files; ``settings``: the run key's settings they name (``report_settings``)."""
    if checks["margins"]:
        write_records(out / FILES["margins"], margin_records(checks["margins"], checks["picked"]), MarginValue,
                      settings=settings)
    if checks["curves"]:
        write_records(out / FILES["curve_areas"], curve_area_records(checks["curves"]), CurveArea, settings=settings)
    if checks["sanity"]:
        write_records(out / FILES["sanity"], [r for s in checks["sanity"] for r in s.rows], SanityValue,
                      settings=settings)
    if checks["localisation"]:
        write_records(out / FILES["localisation"], checks["localisation"], LocalisationValue, settings=settings)


def read_heard(rows: list, comparison, n_boot: int, seed: int) -> dict:
    """What is heard (``report/heard.py``): the comparison along ``scored`` (the report's own where it compares
    that), distortion and separation per run key."""
    reuse = comparison is not None and comparison.setting == "scored"
    return {"comparison": comparison if reuse else heard_comparison(rows, n_boot, seed),
            "distortion": read_distortion(rows), "separation": read_separation(rows, n_boot, seed)}


SEPARATION_COLUMNS = ["method", "mask", "n", *(f"{m}{end}" for m in SEPARATION_MEASURES for end in ("", "_low", "_high")),
                      "best_control", *(f"{SI_SDRI}_vs_control{end}" for end in ("", "_low", "_high")), "beats"]


def write_heard(out: Path, heard: dict, shown: dict, settings: tuple[str, ...]) -> None:
    """heard.csv (every (method, mask) and metric that scoring what is heard changes), and the distortion and
    separation tables (tables/distortion.*, tables/separation.*)."""
    if heard["comparison"] is not None:
        differences, _ = heard["comparison"].columns(settings=True)
        write_csv(out / FILES["heard"], differences, difference_rows(heard["comparison"], True, HEARD_METRICS))
    if heard["distortion"]:
        write_records(out / FILES["distortion"], [r for rows in heard["distortion"].values() for r in rows],
                      DistortionValue, settings=settings)
        atomic_write(out / FILES["distortion_md"], lambda f: f.write(pages.render(
            "groups.md.j2", title="What is heard: its distance from what was scored", groups=shown["distortion"])))
    if heard["separation"]:
        named = [f for f in SETTINGS if f in settings]
        table = []
        for key, found in heard["separation"].items():
            for s in found:
                margin = [s.control, *((s.margin, *(s.margin_ci or ("", ""))) if s.control else ("", "", "")),
                          "" if s.beats is None else int(s.beats)]
                table.append([key.model, key.scenario, *(getattr(key, f) for f in named), s.method, s.mask, s.n,
                              *(v for m in SEPARATION_MEASURES for v in (s.means[m], *s.ci.get(m, ("", "")))),
                              *margin])
        write_csv(out / FILES["separation"], ["model", "scenario", *named, *SEPARATION_COLUMNS], table)
        atomic_write(out / FILES["separation_md"], lambda f: f.write(pages.render(
            "groups.md.j2", title="What is heard: the target recovered from the mixture", groups=shown["separation"])))


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"{program()} report", description=__doc__)
    p.add_argument("results", nargs="+", help="results.csv files or run folders (searched for results.csv); runs "
                   "of one model and scenario that differ in one setting (protocol, fill) are also compared")
    p.add_argument("--compare", choices=SETTINGS, help="the setting to compare along where the runs differ in several "
                   "(runs are paired where the others are equal); default: the one that differs (protocol where several do)")
    p.add_argument("--out", required=True, help="folder for the tables, summary.csv and report.html")
    p.add_argument("--bootstrap", type=int, default=N_BOOT, help="bootstrap resamples per mean (0: no intervals)")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the bootstrap")
    p.add_argument("--examples", type=int, default=4, help="example clips per run shown with audio in the HTML")
    p.add_argument("--wandb", action="store_true", help="also log the summary and the HTML to a W&B run")
    p.add_argument("--wandb-project", default="audio-xai")
    return p.parse_args(argv)


def check_out(out: str) -> Path:
    """``--out`` must be (or become) a folder: a file there or above it is named before any work."""
    path = Path(out)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise ReportInputError(f"--out {out}: {p} is a file, not a folder; choose another --out")
    return path


def build(args: argparse.Namespace) -> dict:
    out = check_out(args.out)
    skipped: list[str] = []
    rows = score(read_results(args.results, skipped))
    if args.bootstrap > 0:
        attach_intervals(rows, args.bootstrap, args.seed)
    full, summary = full_tables(rows), best_rows(rows)
    split = split_fields(rows)
    setting = compared_setting(rows, args.compare)
    comparison = compare(rows, setting, args.bootstrap, args.seed) if setting else None
    checks = read_checks(rows, summary, args.bootstrap, args.seed)
    heard = read_heard(rows, comparison, args.bootstrap, args.seed)
    settings = report_settings(r.run for r in rows)
    out.mkdir(parents=True, exist_ok=True)
    columns, table = summary_table(summary, split, checks)
    write_checks(out, checks, settings)
    write_csv(out / FILES["summary"], columns, [[*r[:4], f"{r[4]:.6f}", *r[5:]] for r in table])
    accuracy = {s: run_accuracy(s) for s in sorted({r.source for r in rows})}
    result = {"rows": rows, "summary": summary, "full": full, "out": out, "skipped": skipped,
              "comparison": comparison, "checks": checks, "heard": heard, "examples": args.examples,
              "accuracy": accuracy}
    result["sections"] = shown = sections.contexts(result)
    if shown["heard"] is not None:
        write_heard(out, heard, shown["heard"], settings)
    if comparison is not None:
        differences, picks = comparison.columns()
        write_csv(out / FILES["comparison"], differences, difference_rows(comparison))
        write_csv(out / FILES["picks"], picks, pick_rows(comparison))
        atomic_write(out / FILES["comparison_md"],
                     lambda f: f.write(pages.render("comparison.md.j2", comparison=shown["comparison"])))
    for key, table in full.items():
        stem = "_".join(key)
        metrics = metrics_of(table)
        write_csv(out / FILES["tables"] / f"{stem}.csv", ["mask", "score", "n", *metrics],
                  [[r.mask, f"{r.score:.6f}", r.n, *(r.values[m] for m in metrics)] for r in table])
        atomic_write(out / FILES["tables"] / f"{stem}.md",
                     lambda f, t=table, k=key: f.write(pages.render("table.md.j2", **sections.full_table(k, t))))
    atomic_write(out / FILES["summary_md"], lambda f: f.write(pages.render("summary.md.j2", **shown)))
    atomic_write(out / FILES["page"], lambda f: f.write(pages.render(
        "report.html.j2", rows=len(rows), notes=skipped, sections=[(n, c) for n, c in shown.items() if c is not None])))
    return result


def log_wandb(result: dict, project: str) -> None:
    from callbacks.wandb_log import REPORT, choose_wandb_mode
    choose_wandb_mode()
    import wandb
    # its own run even where another is still open in this process (a fit or test run in-process leaves
    # Lightning's run open; wandb.init would otherwise log into that one)
    run = wandb.init(project=project, job_type=REPORT, dir=str(result["out"]), reinit="create_new",
                     config={"results": sorted({r.source for r in result["rows"]})})
    columns, data = summary_table(result["summary"], split_fields(result["rows"]), result["checks"])
    run.log({"report/summary": wandb.Table(columns=columns, data=data)})
    artifact = wandb.Artifact("explanation-report", type="report")
    for name in ARTIFACT:
        if (result["out"] / FILES[name]).is_file():
            artifact.add_file(str(result["out"] / FILES[name]))
    run.log_artifact(artifact)
    run.finish()


def main(argv: list[str]) -> None:
    args = parse(argv)
    result = build(args)
    out = result["out"]
    files = {name: out / path for name, path in FILES.items()}
    sys.stdout.write(pages.render("terminal.txt.j2", **result["sections"], notes=result["skipped"], files=files))
    if args.wandb:
        log_wandb(result, args.wandb_project)


if __name__ == "__main__":
    main(sys.argv[1:])
