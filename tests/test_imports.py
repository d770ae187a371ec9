import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from graphlib import CycleError, TopologicalSorter

import pytest

from tests.helpers import ROOT

HEAVY = ("captum", "shap", "lime", "skimage")


@pytest.mark.slow
def test_the_report_and_the_method_registry_import_no_explanation_library():
    """The report, the registry, masks and metrics stay cheap to import: the methods load captum, shap, lime
    and scikit-image only when they run."""
    code = ("import report.cli, report.tables, explain, explain.masks, explain.metrics, sys; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules)); print(sorted(explain.METHODS))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded, methods = proc.stdout.splitlines()
    assert loaded == "[]"
    declared = re.findall(r'^@register\("(\w+)"\)', "".join(p.read_text() for p in (ROOT / "explain").glob("*.py")), re.M)
    assert methods == str(sorted(declared)) and len(declared) >= 12  # every method registered all the same


# the project's layers along the data flow, lowest first: a module imports only from its own layer or below
LAYERS = (("audio_xai", "audio_xai.errors", "audio_xai.files"), ("datamodules",), ("lightning_modules",), ("explain",),
          ("callbacks",), ("report",), ("audio_xai.cli", "main", "benchmarks"))


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the layers' packages and top-level modules below ``root``."""
    tops = {name.split(".")[0] for layer in LAYERS for name in layer}
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[0] in tops:
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(name: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement of module ``name`` reaches (a package's name or one of its modules)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package, up ``level - 1`` packages
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])])
    return [f"{base}.{a.name}" for a in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Per project module, the project modules it imports anywhere in its file (at its top or inside a function,
    under ``if TYPE_CHECKING`` too): ``from p import m`` counts as importing ``p.m`` where that is a module,
    else ``p``."""
    modules = project_modules(root)
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(name, path, node):
                    while target and target not in modules:
                        target = target.rpartition(".")[0]
                    if target and target != name:
                        found.add(target)
        graph[name] = found
    return graph


def layer(module: str) -> int:
    """The layer of the longest name in ``LAYERS`` that is ``module`` or a package above it."""
    found = [(len(name), i) for i, names in enumerate(LAYERS) for name in names
             if module == name or module.startswith(name + ".")]
    return max(found)[1]


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a higher layer than its own."""
    return [f"{a} -> {b}" for a, targets in sorted(graph.items()) for b in sorted(targets) if layer(b) > layer(a)]


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of imports among ``graph``'s modules (empty where there is none)."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as err:
        return err.args[1]
    return []


def test_imports_run_one_way_along_the_data_flow():
    graph = import_graph(ROOT)
    # the graph sees imports of every form: relative, absolute, of a module and of a name, inside a function
    assert {"report.pages", "report.sections", "explain.records", "audio_xai.files"} <= graph["report.cli"]
    assert "explain.curves" in graph["report.checks"] and "lightning_modules.features" in graph["explain.heard"]
    assert len(graph) > 70 and {"main", "audio_xai.cli", "benchmarks.explain", "audio_xai.errors"} <= set(graph)
    assert not upward(graph), upward(graph)
    assert cycle(graph) == [], " -> ".join(cycle(graph))


def test_the_import_checks_find_a_planted_cycle_and_an_upward_import(tmp_path):
    """The same checks over a planted tree: a cycle hidden inside a function, and a lower layer importing a
    higher one, both by relative and by absolute imports, between packages and inside ``audio_xai``."""
    files = {"audio_xai/__init__.py": "", "audio_xai/errors.py": "", "audio_xai/cli.py": "import explain.a\n",
             "audio_xai/files.py": "def h():\n    from audio_xai import cli\n", "explain/__init__.py": "", "report/__init__.py": "",
             "explain/a.py": "from .b import x\n",
             "explain/b.py": "def f():\n    from explain import c\n",
             "explain/c.py": "import explain.a\n",
             "explain/d.py": "def g():\n    from report.page import y\n",
             "report/page.py": "from audio_xai.errors import UsageError\nfrom explain.a import x\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["explain.a"] == {"explain.b"} and graph["explain.b"] == {"explain.c"}
    # a package of two layers: its command line above everything, its files module at the bottom
    assert upward(graph) == ["audio_xai.files -> audio_xai.cli", "explain.d -> report.page"]
    assert set(cycle(graph)) == {"explain.a", "explain.b", "explain.c"}
    assert cycle({**graph, "explain.c": set()}) == []
