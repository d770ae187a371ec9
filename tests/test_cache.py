"""The attribution cache is keyed by what determines a map, and never hands out a wrong entry; an output
folder belongs to one run at a time."""
import logging
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch

from audio_xai.errors import UsageError
from explain.cache import AttributionCache
from audio_xai.files import claim_folder
from tests.helpers import ROOT, read_csv, run_here


def spec(seed: int) -> torch.Tensor:
    return torch.randn(1, 20, 8, generator=torch.Generator().manual_seed(seed))


def test_an_entry_is_found_only_for_its_own_input_and_target(tmp_path):
    cache = AttributionCache(tmp_path, {"method": "m"})
    x, amap = spec(0), spec(1)
    cache.put("a.wav", x, 3, amap)
    assert torch.equal(cache.get("a.wav", x, 3), amap)
    assert cache.get("a.wav", spec(2), 3) is None  # same file name, other audio
    assert cache.get("a.wav", x, 4) is None  # another target class
    assert cache.get("b.wav", x, 3) is None  # another clip (random methods seed from its id)
    assert AttributionCache(tmp_path, {"method": "other"}).get("a.wav", x, 3) is None
    assert torch.equal(AttributionCache(tmp_path, {"method": "m"}).get("a.wav", x, 3), amap)


@pytest.mark.parametrize("damage", ["another clip's entry", "wrong shape", "NaN", "not an entry", "unreadable"])
def test_a_wrong_entry_is_reported_by_name_and_not_used(tmp_path, caplog, damage):
    cache = AttributionCache(tmp_path, {"method": "m"})
    x = spec(0)
    cache.put("a.wav", x, 3, spec(1))
    path, meta = cache._entry("a.wav", x, 3)
    if damage == "another clip's entry":
        cache.put("b.wav", spec(5), 3, spec(6))
        shutil.copy(cache._entry("b.wav", spec(5), 3)[0], path)
    elif damage == "wrong shape":
        torch.save({**meta, "map": torch.zeros(1, 5, 8)}, path)
    elif damage == "NaN":
        torch.save({**meta, "map": torch.full_like(x, float("nan"))}, path)
    elif damage == "not an entry":
        torch.save(spec(1), path)
    else:
        path.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING, logger="explain.cache"):
        assert cache.get("a.wav", x, 3) is None
    assert str(path) in caplog.text and "recomputing" in caplog.text
    assert not path.exists()


EXPLAIN = ["--explainer.examples", "0", "--trainer.logger", "false", "--data.num_workers", "0", "--data.batch_size", "5"]


def test_changed_audio_under_the_same_names_is_recomputed(quickstart_run, small_test_root, tmp_path):
    """Regenerated audio, another noise, another duration: same file names, new maps; unchanged: all cached."""
    other = tmp_path / "other"
    (other / "meta").mkdir(parents=True)
    shutil.copy(small_test_root / "meta" / "esc50.csv", other / "meta" / "esc50.csv")
    names = sorted(p.name for p in (small_test_root / "audio").iterdir())
    (other / "audio").mkdir()
    for name, source in zip(names, names[1:] + names[:1]):  # every name now holds another clip's audio
        shutil.copy(small_test_root / "audio" / source, other / "audio" / name)
    cache = tmp_path / "cache"
    n = len(read_csv(small_test_root / "meta" / "esc50.csv"))
    n_test = sum(r["fold"] == "5" for r in read_csv(small_test_root / "meta" / "esc50.csv"))

    def run(root, tag, *extra):  # the test is about maps, so one mask is scored
        out = run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path",
                       "runs/quickstart/best.ckpt", "--data.root", str(root), "--explain", "saliency",
                       "--explainer.scored", "spectrogram",
                       "--explainer.cache_dir", str(cache), "--trainer.default_root_dir", f"runs/cache-{tag}",
                       "--explainer.masks", "[bin]", *EXPLAIN, *extra, cwd=quickstart_run).stdout
        return out

    assert n > n_test
    assert f"saliency {n_test} computed, 0 from cache" in run(small_test_root, "first")
    assert f"saliency {n_test} computed, 0 from cache" in run(other, "renamed")
    assert f"saliency {n_test} computed, 0 from cache" in run(small_test_root, "shorter", "--data.duration", "4.0")
    assert f"saliency 0 computed, {n_test} from cache" in run(small_test_root, "again")


def test_a_claimed_folder_is_refused_to_another_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from audio_xai.files import claim_folder; "
         "h = claim_folder(sys.argv[1]); print('claimed', flush=True); time.sleep(60)", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "claimed"
        with pytest.raises(FileExistsError, match="being written by another run"):
            claim_folder(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    claim_folder(tmp_path).close()  # the claim dies with its process: a killed run's command can run again
    (tmp_path / "results.csv").write_text("done\n")
    with pytest.raises(FileExistsError, match="already holds the results"):
        claim_folder(tmp_path)


@pytest.mark.parametrize("below", ["", "explain"])
def test_an_output_folder_that_is_a_file_is_refused_in_one_line(tmp_path, below):
    (tmp_path / "results").write_text("not a folder\n")
    folder = tmp_path / "results" / below
    with pytest.raises(UsageError, match=rf"^{re.escape(str(folder))} cannot be an output folder: .* is a file; "
                                         r"choose another --explainer.output_dir"):
        claim_folder(folder)


def test_a_second_run_into_the_same_output_folder_stops_at_once(quickstart_run, small_test_root, tmp_path):
    out = tmp_path / "shared-output"
    args = ["test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
            "--data.root", str(small_test_root), "--explain", "lime", "--explainer.lime_samples", "150",
            "--explainer.scored", "spectrogram",
            "--explainer.output_dir", str(out), "--explainer.cache", "false", *EXPLAIN]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    env.pop("AUDIOXAI_RUN_ID", None)
    first = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args, "--trainer.default_root_dir", "runs/claim-a"],
                             cwd=quickstart_run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.time() + 240
        while not ((out / ".claim").is_file() and (out / ".claim").read_text()):
            assert first.poll() is None and time.time() < deadline, "the first run did not claim its folder"
            time.sleep(0.2)
        with pytest.raises(AssertionError, match="being written by another run") as err:
            run_here(*args, "--trainer.default_root_dir", "runs/claim-b", cwd=quickstart_run)
        assert "failed (2)" in str(err.value) and "Traceback" not in str(err.value)
        assert first.poll() is None  # the first run goes on
    finally:
        os.killpg(first.pid, 9)
        first.wait()
    assert os.listdir(out) == [".claim"]  # nothing of the second run, and the first was stopped before writing
