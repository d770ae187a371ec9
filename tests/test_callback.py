"""The explanation callback's options: bad values are refused with a message naming the option."""
import pytest

from callbacks import ExplainCallback
from errors import UsageError
from tests.helpers import ROOT, run_here


@pytest.mark.parametrize("option, value", [("batch_size", 0), ("batch_size", -3), ("examples", -1),
                                           ("lime_samples", 1), ("shap_background_per_class", 0),
                                           ("shap_background_size", -5)])
def test_bad_numbers_name_their_option(option, value):
    with pytest.raises(UsageError, match=f"--explainer.{option} must be a whole number of at least"):
        ExplainCallback("saliency", **{option: value})


def test_zero_examples_and_an_automatic_batch_are_allowed():
    cb = ExplainCallback("saliency", examples=0, batch_size=None)
    assert cb.examples == 0 and cb.batch_size is None


@pytest.mark.slow
def test_a_bad_option_through_the_cli_is_one_line(tmp_path):
    with pytest.raises(AssertionError) as err:
        run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--explain", "saliency",
                 "--explainer.batch_size", "-3", "--trainer.logger", "false", cwd=tmp_path)
    assert "failed (2)" in str(err.value) and "--explainer.batch_size must be a whole number" in str(err.value)
    assert "Traceback" not in str(err.value)
