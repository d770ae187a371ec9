"""``python main.py dashboard --entity E --project P [--group G] [--out dash.json]``: a W&B Report, and a saved
workspace view, that compare the explanation runs of a project (``callbacks/wandb_log.py`` says what those runs
log). Online (a login and network) it saves both and prints their URLs; offline it writes their spec as JSON.
The spec is built from the keys ``callbacks/wandb_log.py`` names, never from what a server holds."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from callbacks.wandb_log import (AUDIO, BEST_MASK, COMPARED, CURVE_AREAS, FIGURES, FRACTION, LAYERS_RANDOMISED,
                                 MASK_RUN, METHOD_RUN, RUN_METHOD, RUN_METHOD_MASK, best_key, choose_wandb_mode,
                                 compared_key, margin_key)
from audio_xai.errors import UsageValueError, program
from explain import METHODS
from explain.base import is_control
from explain.curves import CURVES
from explain.localisation import MAP_METRICS, MASK_METRICS
from explain.metrics import HIGHER_IS_BETTER, METRIC_LABELS, STUDY_METRICS
from explain.sanity import SIMILARITIES
from audio_xai.files import write_json

from .checks import FLAG_METRIC

DEFAULT_OUT = "dashboard.json"
# W&B's bar and line panels draw 10 runs unless told otherwise; a study has hundreds of child runs
MANY = 10000
# W&B's rule for project names (wandb.Settings refuses these characters); entities are user or team names
PROJECT_FORBIDDEN = "/\\#?%:"
ENTITY = re.compile(r"[A-Za-z0-9_-]+")


def check_names(entity: str, project: str, group: str | None) -> None:
    """The options' formats, before anything is built or sent."""
    if not ENTITY.fullmatch(entity):
        hint = ("; give the project alone with --project" if "/" in entity else "")
        raise UsageValueError(f"--entity {entity!r}: a W&B entity is a user or team name of letters, digits, '-' "
                              f"and '_' (e.g. my-team){hint}")
    found = sorted(set(project) & set(PROJECT_FORBIDDEN))
    if not project.strip() or project != project.strip() or len(project) > 128 or found:
        why = (f"it contains {' '.join(found)}" if found else "it is longer than 128 characters"
               if len(project) > 128 else "it is empty or starts or ends with a space")
        raise UsageValueError(f"--project {project!r}: not a W&B project name ({why}); a project name has at most "
                              f"128 characters and none of {' '.join(PROJECT_FORBIDDEN)} (the entity goes to "
                              "--entity)")
    if group is not None and (not group.strip() or group != group.strip()):
        raise UsageValueError(f"--group {group!r}: name the runs' group (the config's "
                              "trainer.logger.init_args.group, e.g. study), or leave --group out for every run")


def _bar(title: str, metrics: list, groupby: str):
    import wandb_workspaces.reports.v2 as wr
    # repeated runs (seeds) of one group: their mean, with the standard error as error bars
    return wr.BarPlot(title=title, metrics=metrics, groupby=wr.Config(groupby), groupby_aggfunc="mean",
                      groupby_rangefunc="stderr", max_runs_to_show=MANY, max_bars_to_show=MANY)


def _line(title: str, x: str, y: str):
    import wandb_workspaces.reports.v2 as wr
    return wr.LinePlot(title=title, x=x, y=[y], groupby=wr.Config(RUN_METHOD), groupby_aggfunc="mean",
                       groupby_rangefunc="stderr", max_runs_to_show=MANY)


def _label(metric: str) -> str:
    return f"{METRIC_LABELS[metric]} ({'higher' if HIGHER_IS_BETTER[metric] else 'lower'} is better)"


def sections() -> list[tuple[str, str, str, list]]:
    """(title, what it shows, the job type of the runs it draws, panels), in the dashboard's order."""
    import wandb_workspaces.reports.v2 as wr
    controls = [n for n in METHODS if is_control(n)]
    per_run = "one bar per (model, scenario, protocol, fill, method"
    out = [
        ("Each method's best mask", f"Per metric, {per_run}): its best mask by the study's rule, as the report picks "
         f"it for the run alone (the mask is the method run's config {BEST_MASK}); mean and standard error over "
         "repeated runs.", METHOD_RUN,
         [_bar(f"{_label(m)}: each method's best mask", [best_key(m)], RUN_METHOD) for m in STUDY_METRICS]),
        ("Every mask", f"Per metric, {per_run}, mask), ordered by model and scenario.", MASK_RUN,
         [_bar(f"{_label(m)}: every mask", [m], RUN_METHOD_MASK) for m in STUDY_METRICS]),
        ("Faithfulness against conciseness, and all seven metrics", "One point or line per (run, method, mask); "
         "axes of metrics where lower is better are inverted, so up is better on every axis.", MASK_RUN,
         [wr.ScatterPlot(title="FF against SPS", x=wr.SummaryMetric("SPS"), y=wr.SummaryMetric("FF")),
          wr.ParallelCoordinatesPlot(title="The seven metrics", columns=[
              *(wr.ParallelCoordinatesPlotColumn(wr.Config(k)) for k in ("scenario", "method", "mask")),
              *(wr.ParallelCoordinatesPlotColumn(wr.SummaryMetric(m), display_name=METRIC_LABELS[m],
                                                 inverted=not HIGHER_IS_BETTER[m]) for m in STUDY_METRICS)])]),
        ("Margins over the controls", f"{FLAG_METRIC} of each (method, mask) minus the control map's same mask, "
         "paired over the clips both explained (the report's margins.csv); a method that explains something is "
         "above 0.", MASK_RUN,
         [_bar(f"{FLAG_METRIC} minus {c}", [margin_key(FLAG_METRIC, c)], RUN_METHOD_MASK) for c in controls]),
        ("Deletion and insertion curves", "The model's probability of its class as the highest-ranked cells are "
         "deleted from the clip, or inserted into silence; and the areas under the curves.", METHOD_RUN,
         [*(_line(f"{c} curve", FRACTION, c) for c in CURVES),
          _bar("Areas under the curves", list(CURVE_AREAS), RUN_METHOD)]),
        ("Sanity cascade", "Similarity of each method's maps on the trained model and on the model with its layers "
         "randomised from the head down (x: how many layers are random); a map that stays similar does not "
         "follow the model.", METHOD_RUN,
         [_line(f"{s} against the trained model's maps", LAYERS_RANDOMISED, s) for s in SIMILARITIES]),
        ("Localisation", "Against the ground truth where the data has one (the synthetic signatures, the "
         "mixture scenario): the maps' relevance mass and rank, the pointing game and the truth's share of the "
         "cells (the chance level of relevance mass).", METHOD_RUN,
         [_bar("Each method's maps against the ground truth", list(MAP_METRICS), RUN_METHOD)]),
        ("Localisation of the masks", "Precision and recall of every mask against the ground truth.", MASK_RUN,
         [_bar("Mask precision and recall", list(MASK_METRICS), RUN_METHOD_MASK)]),
    ]
    for field in COMPARED:
        out.append((f"Comparison by {field}", f"Each (model, scenario, method, mask) under each {field} side by "
                    f"side (the {field} last in the bar's label).", MASK_RUN,
                    [_bar(f"{_label(m)} by {field}", [m], compared_key(field)) for m in STUDY_METRICS]))
    out.append(("Examples", "Each method's example clips: a spectrogram figure per mask, and the original, "
                "masked-in and masked-out audio.", METHOD_RUN,
                [wr.MediaBrowser(title="Figures and audio", media_keys=[FIGURES, AUDIO], num_columns=2)]))
    return out


def _placed(panels: list) -> list:
    """Two panels per row (W&B's grid is 24 units wide)."""
    import wandb_workspaces.reports.v2 as wr
    for i, panel in enumerate(panels):
        panel.layout = wr.Layout(x=12 * (i % 2), y=8 * (i // 2), w=12, h=8)
    return panels


def _filters(job_types: list[str], group: str | None):
    from wandb_workspaces import expr
    kind = expr.Metric("JobType")
    conditions = [kind == job_types[0] if len(job_types) == 1 else kind.isin(job_types)]
    return expr.And(*conditions, *([expr.Metric("Group") == group] if group else []))


def build(entity: str, project: str, group: str | None, online: bool):
    """The Report and the Workspace, unsaved. Offline their runsets name no project: naming one makes the
    package look its id up on the server."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    where = {"entity": entity, "project": project} if online else {}
    of = f"group {group}" if group else "every group"
    blocks = [wr.P(f"Explanation runs of {entity}/{project}, {of}. Each panel draws the child runs that every "
                   "`test --explain` run logs: one per method and one per (method, mask).")]
    view = []
    # the workspace gets panels of its own (a panel object belongs to one grid or section)
    for (title, text, kind, panels), (_, _, _, copies) in zip(sections(), sections()):
        blocks += [wr.H2(title), wr.P(text),
                   wr.PanelGrid(runsets=[wr.Runset(name=kind, filters=_filters([kind], group), **where)],
                                panels=_placed(panels))]
        view.append(ws.Section(name=title, panels=_placed(copies), is_open=True))
    report = wr.Report(entity=entity, project=project, title=f"audio-xai: explanation metrics ({of})",
                       description="Built by `audio-xai dashboard`.", blocks=blocks, width="fluid")
    workspace = ws.Workspace(entity=entity, project=project, name=f"audio-xai explanations ({of})", sections=view,
                             runset_settings=ws.RunsetSettings(filters=_filters([METHOD_RUN, MASK_RUN], group)))
    return report, workspace


def spec(report, workspace) -> dict:
    """What would be saved: the report's and the workspace view's models, as JSON."""
    dump = dict(mode="json", by_alias=True, exclude_none=True)
    return {"report": report._to_model().model_dump(**dump), "workspace": workspace._to_model().model_dump(**dump)}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"{program()} dashboard", description=__doc__.split("\n\n")[0])
    p.add_argument("--entity", required=True, help="W&B user or team that owns the project")
    p.add_argument("--project", required=True, help="W&B project the runs were logged to (the config's "
                   "trainer.logger.init_args.project, audio-xai by default)")
    p.add_argument("--group", help="only the runs of this group (the config's trainer.logger.init_args.group: "
                   "study, quickstart); default every run of the project")
    p.add_argument("--out", help=f"also write the spec as JSON here (offline: always, default {DEFAULT_OUT})")
    return p.parse_args(argv)


def check_out(out: str) -> Path:
    path = Path(out)
    if path.is_dir():
        raise UsageValueError(f"--out {out}: is a folder; name a file, e.g. {path / DEFAULT_OUT}")
    for p in path.parents:
        if p.exists() and not p.is_dir():
            raise UsageValueError(f"--out {out}: {p} is a file, not a folder; choose another --out")
    return path


def main(argv: list[str]) -> None:
    args = parse(argv)
    check_names(args.entity, args.project, args.group)
    out = check_out(args.out or DEFAULT_OUT)
    online = choose_wandb_mode() == "online"
    report, workspace = build(args.entity, args.project, args.group, online)
    try:
        if args.out or not online:
            write_json(out, spec(report, workspace))
            panels = sum(len(s[3]) for s in sections())
            print(f"dashboard: {out} (a W&B report and a workspace view, {panels} panels each)")
        if online:
            report.save()
            workspace.save()
    except ValueError as err:  # online, how wandb-workspaces says that the server has no such project
        if not online or "not found" not in str(err):
            raise
        raise UsageValueError(f"--entity {args.entity} --project {args.project}: {err} Upload the runs there first "
                              "(`wandb sync`), or name the entity and project they were logged to") from None
    if online:
        print(f"report: {report.url}\nworkspace view: {workspace.url}")
    else:
        print("W&B is offline (no login or no network), so nothing was published. To publish: `wandb login`, "
              "upload the runs (`wandb sync` as each run printed), then run this command again with the network: "
              "it saves the report and the view and prints their URLs.")
