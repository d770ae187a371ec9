import ast
import os
import re
import subprocess
import sys
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


def report_imports() -> dict[str, set[str]]:
    """Per module of the report package, the package's modules it imports, at its top or inside a function."""
    modules = {p.stem for p in (ROOT / "report").glob("*.py")}
    graph = {}
    for name in modules:
        path = ROOT / "report" / f"{name}.py"
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("report")):
                inside = (node.module or "").removeprefix("report").lstrip(".")
                found |= {inside.split(".")[0]} if inside else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("report.")}
        graph[name] = found & modules
    return graph


def test_the_report_package_has_no_import_cycle():
    graph = report_imports()
    assert {"pages", "sections"} <= graph["cli"] and "figures" in graph["sections"]  # the imports are seen
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        pytest.fail(f"report/ imports in a cycle: {' -> '.join(err.args[1])}")
