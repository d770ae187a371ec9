import re
import os
import subprocess
import sys

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
