"""The installed project: the ``audio-xai`` command, its configs, and the packages it declares."""
import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions

import pytest
import yaml

from tests.helpers import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_a_config_path_is_found_in_the_project_from_any_folder(tmp_path, monkeypatch):
    from audio_xai.cli import HERE, find_configs
    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", "configs/quickstart.yaml", "-c=configs/noise/room.yaml", "--config", "mine.yaml",
            "--trainer.max_epochs", "1"]
    assert find_configs(argv) == ["fit", "--config", str(HERE / "configs" / "quickstart.yaml"),
                                  f"-c={HERE / 'configs' / 'noise' / 'room.yaml'}", "--config", "mine.yaml",
                                  "--trainer.max_epochs", "1"]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quickstart.yaml").write_text("trainer: {}\n")  # the user's own file comes first
    assert find_configs(argv)[2] == "configs/quickstart.yaml"
    assert find_configs(["fit", "--config", "trainer: {max_epochs: 1}" + " " * 300]) == \
        ["fit", "--config", "trainer: {max_epochs: 1}" + " " * 300]  # inline YAML, longer than a file name


@pytest.mark.slow  # builds the project and runs its command
def test_the_installed_command_finds_its_configs_from_another_folder(tmp_path):
    """What a (non-editable) install puts in site-packages, built by the installed setuptools: nothing under a
    generic name at its top (no ``main``, ``errors``, ``files`` or ``benchmarks`` to clash with a user's module), the
    configs beside ``audio_xai``, the report's templates in its package, and the ``audio-xai`` script
    (``audio_xai.cli:main``) finds the configs from any folder."""
    pytest.importorskip("setuptools", reason="the project is built with the installed setuptools (no download)")
    src, lib = tmp_path / "src", tmp_path / "site-packages"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "runs", "data",
                                                             "wandb", "tests"))
    build = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q",
                            "egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib", str(lib)],
                           cwd=src, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    configs = {p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml")}
    assert {"configs/quickstart.yaml", "configs/noise/room.yaml"} <= {c.as_posix() for c in configs}
    assert all((lib / c).is_file() for c in configs) and (lib / "audio_xai" / "cli.py").is_file()
    assert sorted(p.name for p in lib.iterdir()) == sorted(
        ["audio_xai", "callbacks", "configs", "datamodules", "explain", "lightning_modules", "report"])
    templates = {p.relative_to(ROOT) for p in (ROOT / "report" / "templates").rglob("*.j2")}
    assert len(templates) > 5 and all((lib / t).is_file() for t in templates)  # the report's page and texts
    assert PROJECT["scripts"] == {"audio-xai": "audio_xai.cli:main"}
    assert re.search(r"^audio-xai = audio_xai.cli:main$", next(tmp_path.glob("*.egg-info/entry_points.txt")).read_text(), re.M)

    work = tmp_path / "elsewhere"
    work.mkdir()
    # what the generated audio-xai script runs: audio_xai.cli.main() with the command line in sys.argv
    code = "import sys; from audio_xai.cli import main; sys.argv[0] = 'audio-xai'; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, "fit", "--config", "configs/quickstart.yaml", "--print_config"],
                          cwd=work, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(lib)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load(proc.stdout)  # the quickstart's values over the default config's classes
    assert config["model"]["init_args"]["width"] == 8 and config["data"]["init_args"]["root"] == "data/quickstart"
    assert config["model"]["class_path"] == "lightning_modules.AudioClassifier"


def test_every_third_party_import_is_declared():
    """Imports anywhere in a module, at the top or inside a function; tests may use the test extra, the
    benchmarks the bench extra and the Hugging Face classifier the hf extra (which it imports when used)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    local = {p.split(".")[0] for p in setuptools["packages"]} | {"main", "benchmarks", "tests"}
    extras = PROJECT["optional-dependencies"]
    to_dist = packages_distributions()
    files = [p for p in ROOT.rglob("*.py") if not {"runs", "data", "wandb", "build"} & set(p.relative_to(ROOT).parts)
             and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    assert len(files) > 30
    missing = []
    for path in files:
        extra = {"tests": extras["test"], "benchmarks": extras["bench"]}.get(path.relative_to(ROOT).parts[0], [])
        extra = extras["hf"] if path.relative_to(ROOT).as_posix() == "lightning_modules/huggingface.py" else extra
        allowed = names(PROJECT["dependencies"] + extra)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for top in {m.split(".")[0] for m in modules} - local - set(sys.stdlib_module_names):
                dists = names(to_dist.get(top, [top]))
                if not dists & allowed:
                    missing.append(f"{path.relative_to(ROOT)} imports {top} ({', '.join(sorted(dists))})")
    assert not missing, missing
