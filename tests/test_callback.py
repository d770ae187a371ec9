"""The explanation callback's options: bad values are refused with a message naming the option."""
import pytest

from callbacks import ExplainCallback
from audio_xai.errors import UsageError
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


@pytest.mark.parametrize("fractions", [[0.3], [0.0, 0.5], [0.5, 1.0], [0.0, 1.0, 0.5]])
def test_fractions_must_span_the_whole_curve(fractions):
    """A curve's area over part of the range would read as a perfect (deletion) or a useless map."""
    with pytest.raises(UsageError, match=r"--explainer.fractions must be increasing fractions from 0 to 1"):
        ExplainCallback("saliency", fractions=fractions)


def test_the_least_fractions_are_0_and_1():
    assert ExplainCallback("saliency", fractions=[0, 1]).fractions == (0, 1)


def test_an_empty_list_of_sanity_layers_is_refused():
    with pytest.raises(UsageError, match=r"--explainer.sanity_layers is empty.*head, fc1"):
        ExplainCallback("saliency", sanity=True, sanity_layers=[])
