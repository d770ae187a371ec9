"""Multi-process test runs, resumable runs, determinism."""
import os
import signal
import subprocess
import sys
import time

import torch

from tests.conftest import ROOT, assert_same_results, read_csv, run_cli

EXPLAIN = ["--explainer.examples", "0", "--trainer.logger", "false", "--data.num_workers", "0"]


def explain_dir(base):
    return next(base.glob("test-*/explain"))


def test_two_processes_give_the_one_process_results_clip_for_clip(quickstart_run, small_test_root):
    common = ["test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
              "--data.root", str(small_test_root), "--data.batch_size", "3", "--explain", "saliency,lime,shap",
              "--explainer.lime_samples", "20", "--explainer.shap_background_per_class", "1",
              "--explainer.cache", "false", *EXPLAIN]
    run_cli(*common, "--trainer.default_root_dir", "runs/one", cwd=quickstart_run, timeout=400)
    run_cli(*common, "--trainer.default_root_dir", "runs/two", "--trainer.devices", "2", "--trainer.strategy", "ddp",
            cwd=quickstart_run, timeout=400)
    one, two = explain_dir(quickstart_run / "runs" / "one"), explain_dir(quickstart_run / "runs" / "two")
    assert read_csv(two / "results.csv")[0]["n"] == "13"  # every clip once: no repeats to even out the ranks
    clips = [r["clip"] for r in read_csv(two / "per_clip.csv") if r["method"] == "lime" and r["mask"] == "bin"]
    assert len(clips) == len(set(clips)) == 13
    assert_same_results(one, two)
    assert len(list((quickstart_run / "runs" / "two").glob("test-*/explain"))) == 1  # written once, by rank 0


def test_a_killed_run_resumes_from_the_cache(quickstart_run, small_test_root):
    args = [sys.executable, str(ROOT / "main.py"), "test", "--config", str(ROOT / "configs" / "quickstart.yaml"),
            "--ckpt_path", "runs/quickstart/best.ckpt", "--data.root", str(small_test_root), "--data.batch_size", "1",
            "--explain", "lime", "--explainer.lime_samples", "150", *EXPLAIN]
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
    out = run_cli(*args[2:], *base, cwd=quickstart_run, env=env).stdout
    assert f"lime {13 - done_before} computed, {done_before} from cache" in out
    resumed = explain_dir(quickstart_run / "runs" / "resume" / "run")
    run_cli(*args[2:], "--trainer.default_root_dir", "runs/resume/fresh", "--explainer.cache", "false",
            cwd=quickstart_run, env=env)
    assert_same_results(resumed, explain_dir(quickstart_run / "runs" / "resume" / "fresh"), tol=0)


def test_an_output_folder_is_never_overwritten(tmp_path):
    from callbacks import ExplainCallback
    (tmp_path / "results.csv").write_text("earlier\n")
    cb = ExplainCallback("saliency", output_dir=str(tmp_path))

    class Stub:
        default_root_dir = str(tmp_path)
        test_loop = type("L", (), {})()

    module = type("M", (), {"spectrogram_model": torch.nn.Identity(), "features": None, "device": "cpu"})()
    try:
        cb.setup(Stub(), module, "test")
    except FileExistsError as err:
        assert "earlier run" in str(err)
    else:
        raise AssertionError("an existing results.csv was not protected")
    assert (tmp_path / "results.csv").read_text() == "earlier\n"


def test_same_seed_same_maps():
    from explain import make_method
    from tests.conftest import tiny_cnn
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
    run_cli("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
            "--model.features", "stft", "--data.root", str(small_test_root), "--explain", "gradcam",
            "--trainer.default_root_dir", "runs/other-features", *EXPLAIN, cwd=quickstart_run)
    rows = read_csv(explain_dir(quickstart_run / "runs" / "other-features") / "results.csv")
    assert {r["model"] for r in rows} == {"mel"}


def test_constant_attribution_maps_give_finite_metrics():
    from explain.evaluate import MaskScorer
    from tests.conftest import tiny_cnn
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
