"""Multi-process test runs, resumable runs, determinism."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.helpers import ROOT, assert_same_results, read_csv, run_cli, run_here

EXPLAIN = ["--explainer.examples", "0", "--explainer.curves", "false", "--trainer.logger", "false",
           "--data.num_workers", "0"]


def explain_dir(base):
    """The explain folder of the run under ``base`` that finished (a killed run leaves one without results)."""
    return next(p for p in base.glob("test-*/explain") if (p / "results.csv").is_file())


def assert_every_rank_ended_cleanly(proc):
    """Lightning's launcher runs rank 1 as a child of rank 0 that writes to the same stdout and stderr."""
    assert "Traceback" not in proc.stderr, proc.stderr[-5000:]
    assert proc.stdout.count("W&B ran offline") == 1  # rank 0 alone says where its W&B run is


def test_a_two_process_fit_ends_cleanly_on_every_rank(quickstart_run, small_test_root):
    proc = run_cli("fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.root", str(small_test_root),
                   "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1",
                   "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
                   "--trainer.default_root_dir", "runs/fit-two", "--trainer.logger.init_args.save_dir", "runs/fit-two",
                   cwd=quickstart_run, timeout=400)
    assert_every_rank_ended_cleanly(proc)
    assert (quickstart_run / "runs" / "fit-two" / "best.ckpt").resolve().is_file()


def test_a_rank_that_fails_at_the_end_fails_the_run(quickstart_run, small_test_root, tmp_path):
    """Rank 1 ends with exit code 3 after the test loop is over: the run's exit code must say so."""
    (tmp_path / "sitecustomize.py").write_text("import atexit, os\n"
                                               "if os.environ.get('LOCAL_RANK') == '1':\n"
                                               "    atexit.register(os._exit, 3)\n")
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    env.pop("AUDIOXAI_RUN_ID", None)
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "test", "--config",
                           str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
                           "--data.root", str(small_test_root), "--trainer.limit_test_batches", "2",
                           "--trainer.logger", "false", "--trainer.default_root_dir", "runs/rank-fails",
                           "--trainer.devices", "2", "--trainer.strategy", "ddp"],
                          cwd=quickstart_run, env=env, capture_output=True, text=True, timeout=400)
    # main.py names the rank, unless Lightning's watcher of its child processes kills rank 0 first
    assert proc.returncode == -signal.SIGKILL or (proc.returncode == 1 and "local rank 1 with exit code 3" in
                                                  proc.stderr), (proc.returncode, proc.stderr[-3000:])


def test_two_processes_give_the_one_process_results_clip_for_clip(quickstart_run, small_test_root, lmac_interpreters):
    lmac = json.dumps({"lmac": {"checkpoint": str(lmac_interpreters["lmac"])}})
    common = ["test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
              "--data.root", str(small_test_root), "--data.batch_size", "3", "--explain", "saliency,lime,shap,lmac",
              "--explainer.options", lmac, "--explainer.lime_samples", "20", "--explainer.shap_background_per_class", "1",
              "--explainer.shap_background_size", "4", "--explainer.cache", "false", "--explainer.examples", "0",
              "--data.num_workers", "0"]
    run_here(*common, "--trainer.logger", "false", "--trainer.default_root_dir", "runs/one", cwd=quickstart_run)
    # with the W&B logger (offline), as users run it: the exit code must cover every rank
    ddp = run_cli(*common, "--trainer.default_root_dir", "runs/two", "--trainer.logger.init_args.save_dir", "runs/two",
                  "--trainer.devices", "2", "--trainer.strategy", "ddp", cwd=quickstart_run, timeout=400)
    assert_every_rank_ended_cleanly(ddp)
    one, two = explain_dir(quickstart_run / "runs" / "one"), explain_dir(quickstart_run / "runs" / "two")
    assert read_csv(two / "results.csv")[0]["n"] == "13"  # every clip once: no repeats to even out the ranks
    for scored in ("spectrogram", "heard"):  # what is heard too, by default
        clips = [r["clip"] for r in read_csv(two / "per_clip.csv")
                 if r["method"] == "lime" and r["mask"] == "bin" and r["scored"] == scored]
        assert len(clips) == len(set(clips)) == 13, scored
    assert (two / "curves.csv").is_file() and (two / "distortion.csv").is_file()
    assert_same_results(one, two)  # curves included: their sums reduce across ranks
    assert len(list((quickstart_run / "runs" / "two").glob("test-*/explain"))) == 1  # written once, by rank 0


def test_a_killed_run_resumes_from_the_cache(quickstart_run, small_test_root):
    args = [sys.executable, str(ROOT / "main.py"), "test", "--config", str(ROOT / "configs" / "quickstart.yaml"),
            "--ckpt_path", "runs/quickstart/best.ckpt", "--data.root", str(small_test_root), "--data.batch_size", "1",
            "--explain", "lime", "--explainer.scored", "spectrogram", "--explainer.lime_samples", "150", *EXPLAIN]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    env.pop("AUDIOXAI_RUN_ID", None)
    cache = quickstart_run / "runs" / "resume" / "attribution-cache"
    base = ["--trainer.default_root_dir", "runs/resume/run", "--explainer.cache_dir", str(cache)]
    proc = subprocess.Popen(args + base, cwd=quickstart_run, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(cache.glob("*/*.pt"))) < 4:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(cache.glob("*/*.pt")))
    assert 4 <= done_before < 13, "the run should have been killed part-way"
    assert not list((quickstart_run / "runs" / "resume").glob("run/test-*/explain/results.csv"))
    out = run_here(*args[2:], *base, cwd=quickstart_run).stdout
    assert f"lime {13 - done_before} computed, {done_before} from cache" in out
    resumed = explain_dir(quickstart_run / "runs" / "resume" / "run")
    run_here(*args[2:], "--trainer.default_root_dir", "runs/resume/fresh", "--explainer.cache", "false",
             cwd=quickstart_run)
    assert_same_results(resumed, explain_dir(quickstart_run / "runs" / "resume" / "fresh"), tol=0)


def stop_part_way(args, cwd, started, signum, log):
    """Start ``main.py args``, send ``signum`` once ``started()`` is true; return (exit code, stderr)."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    env.pop("AUDIOXAI_RUN_ID", None)
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None and not started():
                time.sleep(0.2)
            assert proc.poll() is None, f"the run ended before it was stopped:\n{log.read_text()[-3000:]}"
            proc.send_signal(signum)
            code = proc.wait(timeout=120)
        finally:
            proc.kill()
            proc.wait()
    return code, log.read_text()


def test_a_stopped_test_run_says_so_and_how_to_resume(quickstart_run, small_test_root, tmp_path):
    """SIGTERM, what a cluster sends before it kills a job: exit code 143 (as a shell reports it), no
    results, and a message; not a silent exit code 0."""
    run = quickstart_run / "runs" / "stopped-test"
    cache = run / "attribution-cache"
    args = ["test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
            "--data.root", str(small_test_root), "--data.batch_size", "1", "--explain", "lime",
            "--explainer.scored", "spectrogram",
            "--explainer.lime_samples", "150", "--trainer.default_root_dir", str(run / "run"),
            "--explainer.cache_dir", str(cache), *EXPLAIN]
    code, stderr = stop_part_way(args, quickstart_run, lambda: any(cache.glob("*/*.pt")), signal.SIGTERM,
                                 tmp_path / "stderr.txt")
    assert code == 128 + signal.SIGTERM == 143, stderr[-3000:]
    assert "stopped by SIGTERM. No results were written. To resume it, run the same command again: the " \
           "attribution cache keeps the maps computed so far." in stderr
    assert not list(run.glob("run/test-*/explain/results.csv"))


def test_a_stopped_fit_says_which_checkpoint_resumes_it(quickstart_run, small_test_root, tmp_path):
    """SIGINT (Ctrl+C): exit code 130 and the --ckpt_path that resumes the run."""
    run = quickstart_run / "runs" / "stopped-fit"
    args = ["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.root", str(small_test_root),
            "--trainer.max_epochs", "1000", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.logger", "false", "--trainer.default_root_dir", str(run)]
    code, stderr = stop_part_way(args, quickstart_run, lambda: any(run.glob("fit-*/checkpoints/last.ckpt")),
                                 signal.SIGINT, tmp_path / "stderr.txt")
    assert code == 128 + signal.SIGINT == 130, stderr[-3000:]
    hint = re.search(r"^stopped by SIGINT\. To resume it, run the same command with --ckpt_path (\S+)$", stderr, re.M)
    assert hint, stderr[-3000:]
    last = Path(hint.group(1))
    assert last.name == "last.ckpt" and last.parent.parent.parent == run
    assert "epoch" in torch.load(last, map_location="cpu", weights_only=False)


def test_an_output_folder_is_never_overwritten(tmp_path):
    from callbacks import ExplainCallback
    (tmp_path / "results.csv").write_text("earlier\n")
    cb = ExplainCallback("saliency", output_dir=str(tmp_path))

    class Stub:
        default_root_dir = str(tmp_path)
        is_global_zero = True
        datamodule = None
        test_loop = type("L", (), {})()

    from lightning_modules.features import make_features
    module = type("M", (), {"spectrogram_model": torch.nn.Identity(), "features": make_features("mel"),
                            "device": "cpu"})()  # follows the model contract: setup gets as far as the folder
    try:
        cb.setup(Stub(), module, "test")
    except FileExistsError as err:
        assert "earlier run" in str(err)
    else:
        raise AssertionError("an existing results.csv was not protected")
    assert (tmp_path / "results.csv").read_text() == "earlier\n"


def test_same_seed_same_maps():
    from explain import make_method
    from tests.helpers import tiny_cnn
    model = tiny_cnn(num_classes=4)
    g = torch.Generator().manual_seed(9)
    x, bg = torch.randn(2, 1, 101, 64, generator=g) * 15 - 40, torch.randn(3, 1, 101, 64, generator=g) * 15 - 40
    target = torch.tensor([1, 3])
    for name, kw in (("lime", {"num_samples": 30}), ("shap", {})):
        maps = []
        for _ in range(2):
            method = make_method(name, model, seed=3, **kw)
            if method.needs_background:
                method.set_background(bg)
            maps.append(method.attribute(x, target, ids=["a", "b"]))
        assert torch.equal(maps[0], maps[1]), name


def test_a_checkpoint_keeps_its_own_feature_type_in_the_cli(quickstart_run, small_test_root):
    """Documented: the checkpoint's hyperparameters (features, width, classes) override the config's."""
    run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
             "--model.features", "stft", "--data.root", str(small_test_root), "--explain", "gradcam",
             "--explainer.scored", "spectrogram",
             "--trainer.default_root_dir", "runs/other-features", "--explainer.masks", "[bin]", *EXPLAIN,
             cwd=quickstart_run)
    rows = read_csv(explain_dir(quickstart_run / "runs" / "other-features") / "results.csv")
    assert {r["model"] for r in rows} == {"mel"}


def test_constant_attribution_maps_give_finite_metrics():
    from explain.evaluate import MaskScorer
    from tests.helpers import tiny_cnn
    model = tiny_cnn(num_classes=4)
    x = torch.randn(3, 1, 101, 64) * 10 - 40
    with torch.no_grad():
        probs = model(x).softmax(-1)
    scorer = MaskScorer()
    for value in (0.0, 1.5, -2.0):
        scorer.update(model, x, probs, probs.argmax(-1), torch.full_like(x, value), batch_size=16)
    for mask, values in scorer.compute().items():
        assert all(v == v and abs(v) != float("inf") for v in values.values()), mask
    with torch.no_grad():
        nan_map = torch.full_like(x, float("nan"))
    try:
        scorer.update(model, x, probs, probs.argmax(-1), nan_map, batch_size=16)
    except ValueError as err:
        assert "NaN" in str(err)
    else:
        raise AssertionError("a NaN map was scored")
