"""The examples run as tests (short versions), so they cannot rot."""

import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_logistic_regression_learns():
    pytest.importorskip("sklearn")
    example = load_example("digits_logistic_regression")
    x_train, x_test, y_train, y_test = example.load()
    w, b, losses = example.train(x_train, y_train, steps=80)
    assert losses[-1] < 0.25 * losses[0]
    assert np.all(np.isfinite(losses))
    assert example.accuracy(x_test, y_test, w, b) > 0.93
