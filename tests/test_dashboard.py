"""W&B: what fit and test runs log (job type, group, flat config keys, the per-(method, mask) child runs), read
back from the offline runs' own files, and the dashboard built from it (``main.py dashboard``), offline."""
import json
import socket

import numpy as np
import pytest
import yaml

from explain.base import is_control
from explain.curves import CURVES
from explain.metrics import HIGHER_IS_BETTER, METRIC_NAMES
from explain.records import Result, RunKey
from tests.helpers import ROOT, read_csv, read_wandb_runs, run_cli

QUICKSTART = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
GROUP = "dash-test"  # the test run's group, given on the command line over the config's


# -- what a panel names, read from the saved spec's JSON (W&B's wire format, not the package's classes) --------
# fields of a panel's config that only present (titles, aggregation, sizes)
PRESENTING = {"chartTitle", "vertical", "groupAgg", "groupArea", "limit", "barLimit", "aggregate", "columnCount"}


def _key(accessor: str) -> tuple[str, str]:
    """('config' | 'summary' | 'history', name) of one accessor string of a panel."""
    for prefix, section in (("summary:", "summary"), ("summary_metrics.", "summary"), ("config:", "config"),
                            ("config.", "config")):
        if accessor.startswith(prefix):
            name = accessor[len(prefix):]
            return section, name.split(".value")[0] if section == "config" else name
    raise AssertionError(f"unexpected accessor {accessor!r}")


def panel_keys(panel: dict) -> set[tuple[str, str]]:
    """Every (section, key) a panel reads: summary keys for run-level charts, history keys for line plots and
    media, config keys for grouping and axes. A config field not understood here fails the test."""
    config, kind = panel["config"], panel["viewType"]
    unknown = set(config) - PRESENTING - {"metrics", "xAxis", "yAxis", "zAxis", "groupBy", "columns", "mediaKeys"}
    assert not unknown, f"{kind}: fields {unknown} not checked"
    plain = "history" if kind in ("Run History Line Plot", "Media Browser") else "summary"
    keys = set()
    for m in config.get("metrics", []) + config.get("mediaKeys", []):
        keys.add(_key(m) if ":" in m or m.startswith(("summary_metrics.", "config.")) else (plain, m))
    for axis in ("xAxis", "yAxis", "zAxis"):
        if axis in config:
            keys.add(_key(config[axis]) if ":" in config[axis] else ("history", config[axis]))
    if "groupBy" in config:
        keys.add(("config", config["groupBy"].split(".value")[0]))
    keys |= {_key(c["accessor"]) for c in config.get("columns", [])}
    return keys


def runset_filter(filters: dict) -> dict:
    """{(section, name): (op, value)} of a runset's conjunctive filters."""
    out = {}
    for f in filters["filters"]:
        assert f.get("connector", "AND") == "AND" and not f.get("disabled")
        out[(f["key"]["section"], f["key"]["name"])] = (f["op"], f["value"])
    return out


def grids(spec: dict) -> list[tuple[dict, list[dict]]]:
    """(filters, panels) of every panel grid of the report and of the workspace view."""
    out = [(runset_filter(rs["filters"]), b["metadata"]["panelBankSectionConfig"]["panels"])
           for b in spec["report"]["spec"]["blocks"] if b["type"] == "panel-grid"
           for rs in b["metadata"]["runSets"]]
    view = spec["workspace"]["spec"]["section"]
    view_filter = runset_filter(view["runSets"][0]["filters"])
    out += [(view_filter, s["panels"]) for s in view["panelBankConfig"]["sections"]]
    return out


def selected(runs: list[dict], filters: dict) -> list[dict]:
    def keep(run):
        for (section, name), (op, value) in filters.items():
            have = {("run", "jobType"): run["job_type"], ("run", "group"): run["group"]}.get((section, name))
            assert have is not None or section == "config", f"filter on {section}.{name} not checked"
            if section == "config":
                have = run["config"].get(name.split(".value")[0])
            if not (have == value if op == "=" else have in value if op == "IN" else False):
                return False
        return True
    return [r for r in runs if keep(r)]


def missing_keys(spec: dict, runs: list[dict]) -> list[str]:
    """Each key some panel names that none of the runs its grid selects has logged, and each grid that
    selects no run."""
    missing = []
    for filters, panels in grids(spec):
        chosen = selected(runs, filters)
        if not chosen:
            missing.append(f"no run matches {filters}")
            continue
        for panel in panels:
            for section, key in panel_keys(panel):
                if not any(key in r[section] for r in chosen):
                    missing.append(f"{panel['viewType']} {panel['config'].get('chartTitle')!r}: {section} {key}")
    return missing


# -- the dashboard command, offline -----------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """A login but no network: any connection attempt fails as it would without one."""
    def refuse(*args, **kwargs):
        raise OSError("no network in this test")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)


def test_dashboard_offline_writes_the_spec_and_says_how_to_publish_it(tmp_path, monkeypatch, capsys, no_network):
    from audio_xai.cli import main
    monkeypatch.chdir(tmp_path)
    main(["dashboard", "--entity", "my-team", "--project", "audio-xai", "--group", "study"])  # returns: exit 0
    out = capsys.readouterr().out
    assert "offline" in out and "wandb login" in out and "run this command again" in out
    spec = json.loads((tmp_path / "dashboard.json").read_text())  # the default --out
    assert spec["report"]["project"] == {"name": "audio-xai", "entityName": "my-team"}
    assert spec["workspace"]["entity"] == "my-team" and spec["workspace"]["project"] == "audio-xai"
    filters = [f for f, _ in grids(spec)]
    assert len(filters) > 10 and all(f[("run", "group")] == ("=", "study") for f in filters)
    main(["dashboard", "--entity", "my-team", "--project", "audio-xai", "--out", str(tmp_path / "d" / "all.json")])
    assert all(("run", "group") not in f for f, _ in grids(json.loads((tmp_path / "d" / "all.json").read_text())))


@pytest.mark.parametrize("option,value", [
    ("--entity", "my-team/audio-xai"), ("--entity", "https://wandb.ai/my-team"), ("--entity", "my team"),
    ("--entity", ""), ("--project", "my-team/audio-xai"), ("--project", "a:b"), ("--project", "a#b"),
    ("--project", ""), ("--project", " audio-xai"), ("--project", "p" * 129), ("--group", ""),
])
def test_a_wrong_entity_project_or_group_is_a_one_line_error(tmp_path, monkeypatch, capsys, no_network, option,
                                                              value):
    from audio_xai.cli import main
    monkeypatch.chdir(tmp_path)
    given = {"--entity": "my-team", "--project": "audio-xai", option: value}
    with pytest.raises(SystemExit) as exit:
        main(["dashboard", *(a for kv in given.items() for a in kv)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option} {value!r}") and len(err.splitlines()) == 2  # the error and the debug hint
    assert not (tmp_path / "dashboard.json").exists()


def test_an_out_that_is_a_folder_or_below_a_file_is_named(tmp_path, capsys, no_network):
    from audio_xai.cli import main
    (tmp_path / "file").write_text("")
    for out, says in ((tmp_path, "is a folder"), (tmp_path / "file" / "d.json", "is a file, not a folder")):
        with pytest.raises(SystemExit):
            main(["dashboard", "--entity", "my-team", "--project", "audio-xai", "--out", str(out)])
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out {out}:") and says in err


@pytest.mark.parametrize("project", ["audio-xai", "a/b", "a:b", "a#b", "a?b", "a%b", "a\\b", "p" * 128, "p" * 129,
                                     "My study 2"])
def test_project_names_are_refused_as_wandb_refuses_them(project):
    """wandb's own settings are the oracle for the characters and the length."""
    import wandb
    from audio_xai.errors import UsageValueError
    from report.dashboard import check_names
    try:
        wandb.Settings(project=project)
        wandb_accepts = True
    except Exception:
        wandb_accepts = False
    try:
        check_names("my-team", project, None)
        accepted = True
    except UsageValueError:
        accepted = False
    assert accepted == wandb_accepts


def test_the_spec_names_no_project_in_its_runsets_offline(no_network):
    """Naming one makes wandb-workspaces look its id up on the server; offline the runsets are the report's."""
    from report.dashboard import build, spec
    built = spec(*build("my-team", "audio-xai", None, online=False))
    for block in built["report"]["spec"]["blocks"]:
        for rs in block.get("metadata", {}).get("runSets", []):
            assert "project" not in rs


# -- what the runs log --------------------------------------------------------------------------------------
def _log_offline(folder, records) -> list[dict]:
    """``log_explanation`` of these records into an offline run of its own, read back from W&B's files."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    from callbacks.wandb_log import log_explanation
    # a run of its own: a WandbLogger alone would reuse a run another test left open in this process
    run = wandb.init(project="audio-xai-test", dir=str(folder), mode="offline", group="g", job_type="explain",
                     reinit="create_new")
    logger = WandbLogger(save_dir=str(folder), experiment=run)
    log_explanation(logger, records)
    logger.experiment.finish()
    return read_wandb_runs(folder)


def test_with_wandb_disabled_an_explanation_run_logs_nothing_and_ends(tmp_path, monkeypatch):
    """``WANDB_MODE=disabled`` (W&B's own switch) gives a stand-in run, as ``mode="disabled"`` does here (the
    variable itself would stay in W&B's process-wide settings for the tests after this one): its child runs must
    not ask for a login."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    from callbacks.wandb_log import log_explanation
    from explain.records import ClipValues, Result, RunKey, RunRecords
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    key = RunKey("mel", "clean", "study", "floor", "spectrogram")
    values = {m: 0.5 for m in METRIC_NAMES}
    records = RunRecords(key, ["saliency", "random"], ["bin"],
                         [Result(key, m, "bin", 1, values) for m in ("saliency", "random")],
                         [ClipValues(key, "a.wav", 0, 0, 1, m, "bin", values) for m in ("saliency", "random")])
    run = wandb.init(project="audio-xai-test", dir=str(tmp_path), mode="disabled", reinit="create_new")
    assert run.disabled
    log_explanation(WandbLogger(save_dir=str(tmp_path), experiment=run), records)
    run.finish()
    assert not list(tmp_path.rglob("offline-run-*")) and not list(tmp_path.rglob("run-*"))


def test_child_runs_hold_the_reports_picks_intervals_and_paired_margins(tmp_path):
    """A planted run: saliency's ``bin`` is its best mask on FF alone, ``topK_5`` on the six other study metrics,
    so the study's rule picks ``topK_5`` (scores 1e-9 ** (1/7) against 1e-9 ** (6/7)) where a per-metric best would
    pick ``bin`` for FF; the control lacks one clip, so a margin is the mean difference over the three clips both
    explained, not the difference of the means. W&B's values, read back from its files, are the report's
    (summary.csv, margins.csv) of the same files, value for value."""
    from callbacks.wandb_log import (BEST_MASK, HIGH, LOW, MASK_RUN, METHOD_RUN, RUN_KEYS, SCORE, best_key,
                                     margin_key)
    from explain.records import ClipValues, RunRecords, write_records
    from explain.summary import N_BOOT
    from report.cli import build, parse

    key = RunKey("mel", "clean", protocol="study", fill="floor")
    names = ["a.wav", "b.wav", "c.wav", "d.wav"]
    better = {m: 1.0 if HIGHER_IS_BETTER[m] else -1.0 for m in METRIC_NAMES}
    planted = {("saliency", "bin"): lambda m, i: 0.9 + i / 8 if m == "FF" else 0.3 - better[m] * 0.1 + i / 8,
               ("saliency", "topK_5"): lambda m, i: 0.5 + i / 8 if m == "FF" else 0.3 + better[m] * 0.1 + i / 8,
               ("random", "bin"): lambda m, i: 0.2 + i * i / 16,
               ("random", "topK_5"): lambda m, i: 0.4 - i * i / 16}
    clips = [ClipValues(key, clip, 0, 0, 1, method, mask, {m: value(m, i) for m in METRIC_NAMES})
             for (method, mask), value in planted.items() for i, clip in enumerate(names)
             if not (method == "random" and clip == "a.wav")]
    by = {k: [c for c in clips if (c.method, c.mask) == k] for k in planted}
    results = [Result(key, method, mask, len(rows), {m: float(np.mean([c.values[m] for c in rows]))
                                                     for m in METRIC_NAMES}) for (method, mask), rows in by.items()]
    out = tmp_path / "explain"
    write_records(out / "results.csv", results, Result)
    write_records(out / "per_clip.csv", clips, ClipValues)
    build(parse([str(out), "--out", str(tmp_path / "report")]))
    summary, margins = read_csv(tmp_path / "report" / "summary.csv"), read_csv(tmp_path / "report" / "margins.csv")

    records = RunRecords(key, ["saliency", "random"], ["bin", "topK_5"], results, clips, examples=out / "examples")
    # the child runs only: wandb 0.31 may write the parent's file late where other runs ran in this process
    # (test_fit_and_test_runs_carry_job_type_group_and_flat_keys reads a parent)
    runs = [r for r in _log_offline(tmp_path / "wandb", records) if r["job_type"] in (MASK_RUN, METHOD_RUN)]
    masks = {(r["config"]["method"], r["config"]["mask"]): r for r in runs if r["job_type"] == "explain-mask"}
    methods = {r["config"]["method"]: r for r in runs if r["job_type"] == "explain-method"}
    assert set(masks) == set(planted) and set(methods) == {"saliency", "random"}
    assert all({k: r["config"][k] for k in RUN_KEYS} == {"model": "mel", "scenario": "clean", "protocol": "study",
                                                        "fill": "floor", "scored": "spectrogram"} for r in runs)
    # the pick: the study's rule, as summary.csv has it; a control gets none
    assert [(r["method"], r["mask"]) for r in summary] == [("saliency", "topK_5")]
    saliency = methods["saliency"]
    assert saliency["config"][BEST_MASK] == "topK_5" and BEST_MASK not in methods["random"]["config"]
    assert saliency["summary"][best_key(SCORE)] == pytest.approx(1e-9 ** (1 / 7), rel=1e-9)
    assert f"{saliency['summary'][best_key(SCORE)]:.6f}" == summary[0]["score"]
    assert all(saliency["summary"][best_key(m)] == float(summary[0][m]) for m in METRIC_NAMES)
    assert masks[("saliency", "bin")]["summary"][SCORE] == pytest.approx(1e-9 ** (6 / 7), rel=1e-9)
    # the margins: paired over b, c and d, with the report's intervals
    assert len(margins) == 2 * len(METRIC_NAMES)
    for row in margins:
        run = masks[(row["method"], row["mask"])]["summary"]
        name = margin_key(row["metric"], row["control"])
        own = [planted[(row["method"], row["mask"])](row["metric"], i) for i in (1, 2, 3)]
        control = [planted[(row["control"], row["mask"])](row["metric"], i) for i in (1, 2, 3)]
        assert run[name] == pytest.approx(np.mean(np.subtract(own, control)), abs=1e-12)
        assert row["n_paired"] == "3" and (run[name], run[name + LOW], run[name + HIGH]) == (
            float(row["margin"]), float(row["ci_low"]), float(row["ci_high"]))
    assert margin_key("FF", "random") not in masks[("random", "bin")]["summary"]  # no margin over itself
    # each mask's interval of each metric is the bootstrap of its clips' mean (its seed: the metric's place)
    from explain.bootstrap import bootstrap_ci
    values = [planted[("saliency", "bin")]("AD", i) for i in range(4)]
    assert (masks[("saliency", "bin")]["summary"]["AD" + LOW], masks[("saliency", "bin")]["summary"]["AD" + HIGH]) == \
        bootstrap_ci(values, N_BOOT, seed=METRIC_NAMES.index("AD"))
    assert masks[("saliency", "bin")]["config"]["by_protocol"] == "mel/clean/saliency/bin/floor/spectrogram/study"


@pytest.fixture(scope="module")
def dashboard_run(quickstart_run, tmp_path_factory):
    """A small quickstart-style ``test`` (the study's methods and the controls, the sanity check, two masks)
    through the real command line, in a folder of its own, with the group given on the command line: (that
    folder, its explain folder)."""
    work = tmp_path_factory.mktemp("dashboard")
    run_cli("test", "--config", str(ROOT / "configs" / "quickstart.yaml"),
            "--ckpt_path", str(quickstart_run / "runs" / "quickstart" / "best.ckpt"),
            "--data.root", str(quickstart_run / "data" / "quickstart"), "--explain", "study,controls",
            "--explainer.sanity", "true", "--explainer.sanity_clips", "2", "--explainer.masks", "[bin,topK_5]",
            "--explainer.lime_samples", "20", "--explainer.examples", "1", "--data.batch_size", "3",
            "--trainer.limit_test_batches", "2", "--trainer.logger.init_args.group", GROUP, cwd=work)
    return work, next(work.glob("runs/quickstart/test-*/explain"))


def test_fit_and_test_runs_carry_job_type_group_and_flat_keys(quickstart_run, dashboard_run):
    work, out = dashboard_run
    from callbacks.wandb_log import RUN_KEYS
    fit = [r for r in read_wandb_runs(quickstart_run / "runs" / "quickstart" / "wandb") if r["job_type"] == "fit"]
    assert len(fit) == 1
    assert fit[0]["group"] == QUICKSTART["trainer"]["logger"]["init_args"]["group"]  # the config's
    assert fit[0]["config"]["model"] == QUICKSTART["model"]["features"] and fit[0]["config"]["seed"] == 0
    assert "fit" in fit[0]["tags"]
    test = [r for r in read_wandb_runs(work / "runs" / "quickstart" / "wandb") if r["job_type"] == "explain"]
    assert len(test) == 1 and test[0]["group"] == GROUP  # overridden on the command line
    row = read_csv(out / "results.csv")[0]
    assert {k: test[0]["config"][k] for k in RUN_KEYS} == {k: row[k] for k in RUN_KEYS}
    assert {row[k] for k in RUN_KEYS} | {"explain"} <= set(test[0]["tags"])
    assert test[0]["config"]["methods"] == json.loads((out / "run.json").read_text())["methods"]


def test_one_child_run_per_method_and_mask_holds_the_files_values(dashboard_run):
    """Each child run holds its row's values, curves, sanity cascade, localisation and examples, as the run's
    files have them."""
    work, out = dashboard_run
    runs = read_wandb_runs(work / "runs" / "quickstart" / "wandb")
    parent = next(r for r in runs if r["job_type"] == "explain")
    everything = read_csv(out / "results.csv")
    # what is heard has child runs of its own, of its own values
    for scored in ("heard",):
        heard = {(r["config"]["method"], r["config"]["mask"]): r for r in runs
                 if r["job_type"] == "explain-mask" and r["config"]["scored"] == scored}
        rows = {(r["method"], r["mask"]): r for r in everything if r["scored"] == scored}
        assert set(heard) == set(rows)
        for key, run in heard.items():
            assert all(run["summary"][m] == pytest.approx(float(rows[key][m]), rel=1e-6) for m in METRIC_NAMES), key
    runs = [r for r in runs if r["config"].get("scored", "spectrogram") == "spectrogram"]
    results = [r for r in everything if r["scored"] == "spectrogram"]
    masks = {(r["config"]["method"], r["config"]["mask"]): r for r in runs if r["job_type"] == "explain-mask"}
    assert set(masks) == {(r["method"], r["mask"]) for r in results}
    by_row = {(r["method"], r["mask"]): r for r in results}
    for key, run in masks.items():
        assert run["group"] == GROUP and run["config"]["parent"] == parent["id"]
        for m in METRIC_NAMES:
            assert run["summary"][m] == pytest.approx(float(by_row[key][m]), rel=1e-6), (key, m)
    for r in read_csv(out / "localisation.csv"):
        if r["mask"]:
            assert masks[(r["method"], r["mask"])]["summary"][r["metric"]] == pytest.approx(float(r["value"]))
    methods = {r["config"]["method"]: r for r in runs if r["job_type"] == "explain-method"}
    assert set(methods) == {r["method"] for r in results}
    curves, sanity = read_csv(out / "curves.csv"), read_csv(out / "sanity.csv")
    layers = json.loads((out / "run.json").read_text())["sanity"]["layers"]
    for method, run in methods.items():
        for c in CURVES:
            mine = [r for r in curves if r["method"] == method and r["curve"] == c]
            assert run["history"]["fraction"] == pytest.approx([float(r["fraction"]) for r in mine])
            assert run["history"][c] == pytest.approx([float(r["prob"]) for r in mine], rel=1e-6)
        mine = [float(next(r["value"] for r in sanity if r["method"] == method and r["layer"] == layer
                           and r["similarity"] == "spearman_abs")) for layer in layers]
        assert run["history"]["layers_randomised"] == list(range(1, len(layers) + 1))
        assert run["history"]["spearman_abs"] == pytest.approx(mine, rel=1e-6, nan_ok=True)
        clip = next((out / "examples").iterdir()).name
        assert run["summary"]["examples/figures"]["captions"] == [f"{clip}: bin", f"{clip}: topK_5"]
        assert len(run["summary"]["examples/audio"]["captions"]) == 1 + 2 * 2  # original, each mask in and out


def test_the_child_runs_picks_and_margins_are_the_reports_of_the_run(dashboard_run, tmp_path):
    """W&B's best mask per method and its margins over the controls, with their intervals, read back from the
    offline runs' files, equal the report's summary.csv and margins.csv of the run folder alone, for both inputs
    scored."""
    from callbacks.wandb_log import BEST_MASK, HIGH, LOW, SCORE, best_key, margin_key
    from report.cli import build, parse
    work, out = dashboard_run
    build(parse([str(out), "--out", str(tmp_path)]))
    summary, margins = read_csv(tmp_path / "summary.csv"), read_csv(tmp_path / "margins.csv")
    runs = read_wandb_runs(work / "runs" / "quickstart" / "wandb")
    scored = sorted({r["scored"] for r in summary})
    assert scored == ["heard", "spectrogram"] and len(margins) > 0
    for input_scored in scored:
        mine = [r for r in runs if r["config"].get("scored") == input_scored]
        methods = {r["config"]["method"]: r for r in mine if r["job_type"] == "explain-method"}
        masks = {(r["config"]["method"], r["config"]["mask"]): r for r in mine if r["job_type"] == "explain-mask"}
        picks = {r["method"]: r for r in summary if r["scored"] == input_scored}
        assert {m for m, r in methods.items() if BEST_MASK in r["config"]} == set(picks) == {
            m for m in methods if not is_control(m)}
        for method, pick in picks.items():
            run = methods[method]
            assert run["config"][BEST_MASK] == pick["mask"]
            assert f"{run['summary'][best_key(SCORE)]:.6f}" == pick["score"]
            assert all(run["summary"][best_key(m)] == float(pick[m]) for m in METRIC_NAMES)
        rows = [r for r in margins if r["scored"] == input_scored]
        assert {(r["method"], r["mask"], r["control"]) for r in rows} == {
            (m, k, c) for (m, k) in masks for c in ("random", "energy") if c != m}
        for r in rows:
            found = masks[(r["method"], r["mask"])]["summary"]
            name = margin_key(r["metric"], r["control"])
            assert (found[name], found[name + LOW], found[name + HIGH]) == (
                float(r["margin"]), float(r["ci_low"]), float(r["ci_high"])), (r["method"], r["mask"], name)


def test_every_key_a_dashboard_panel_names_is_logged_by_a_quickstart_run(dashboard_run, no_network):
    from report.dashboard import build, spec
    work, _ = dashboard_run
    runs = read_wandb_runs(work / "runs" / "quickstart" / "wandb")
    built = spec(*build("my-team", "audio-xai", GROUP, online=False))
    assert missing_keys(built, runs) == []
    # the check fails for a panel naming a key no run logged, and for a group no run is in
    panels = next(b for b in built["report"]["spec"]["blocks"] if b["type"] == "panel-grid")
    panels["metadata"]["panelBankSectionConfig"]["panels"][0]["config"]["metrics"].append("no_such_key")
    assert len(missing_keys(built, runs)) == 1
    assert all(m.startswith("no run matches") for m in missing_keys(spec(*build("t", "p", "other", False)), runs))
