"""Method options: each method declares its options' types and ranges, and a value out of them is refused
when the method is built (and by the callback, before anything is loaded), naming the method, the option
and what it takes."""
from __future__ import annotations

import pytest

from callbacks import ExplainCallback
from audio_xai.errors import UsageValueError
from explain import METHODS, make_method
from tests.helpers import tiny_cnn

# (method, option, value, what the message says the option takes)
BAD = [
    ("gradshap", "samples", -1, "a whole number of at least 1"),
    ("ig", "steps", "many", "a whole number of at least 1"),
    ("ig", "steps", 0, "a whole number of at least 1"),
    ("ig", "steps", -5, "a whole number of at least 1"),
    ("ig", "steps", 2.5, "a whole number of at least 1"),
    ("ig", "steps", True, "a whole number of at least 1"),  # a bool is not a number
    ("smoothgrad", "samples", 0, "a whole number of at least 1"),
    ("smoothgrad", "noise_level", -0.5, "a number of at least 0"),
    ("smoothgrad", "noise_level", float("nan"), "a number of at least 0"),
    ("lime", "num_samples", "50", "a whole number of at least 2"),
    ("lime", "kernel_width", 0, "a number above 0"),
    ("lime", "ratio", 1.5, "a number of at least 0 and at most 1"),
    ("lime", "workers", 0, "a whole number of at least 1 (or null)"),
    ("shap", "background_size", 0, "a whole number of at least 1"),
    ("shap", "rule", "exact", "one of deeplift, gradient"),
    ("occlusion", "window", [8, 0], "two whole numbers, each at least 1"),
]


@pytest.mark.parametrize("name, option, value, takes", BAD)
def test_a_bad_value_is_refused_when_the_method_is_built(name, option, value, takes):
    with pytest.raises(UsageValueError) as err:
        make_method(name, tiny_cnn(), **{option: value})
    assert str(err.value) == f"--explainer.options: {name} option {option} must be {takes}, got {value!r}"


@pytest.mark.parametrize("name, option, value, takes", BAD)
def test_a_bad_value_is_refused_by_the_callback_before_anything_loads(name, option, value, takes):
    with pytest.raises(UsageValueError, match=f"{name} option {option} must be"):
        ExplainCallback("saliency", options={name: {option: value}})


@pytest.mark.parametrize("name, options", [("lime", {"kernel_width": 1, "num_samples": 2, "workers": None}),
                                           ("smoothgrad", {"noise_level": 0, "samples": 1}),
                                           ("gradshap", {"noise_level": 1}), ("ig", {"steps": 1})])
def test_values_at_the_bounds_are_taken_and_a_float_option_takes_an_int(name, options):
    method = make_method(name, tiny_cnn(), **options)
    try:
        assert {k: getattr(method, k) for k in options} == options
    finally:
        method.close()


def test_every_option_is_declared_with_a_default_it_takes_and_a_help():
    for name, cls in METHODS.items():
        for option in cls.declared_options:
            assert option.check(name, option.default) == (list(option.default) if option.pair else option.default)
            assert option.help, (name, option.name)


def test_options_of_a_group_are_refused_with_the_methods_to_name():
    with pytest.raises(UsageValueError, match=r"'all' is a group of methods.*lime") as err:
        ExplainCallback("lime", options={"all": {"num_samples": 20}})
    assert "--explainer.options" in str(err.value)
