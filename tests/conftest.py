"""Shared fixtures: tiny demo parameters whose run and data folders live in a temporary directory."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from datadream_lib import data, params  # noqa: E402


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data.make_toy_dataset(root)
    return root


@pytest.fixture
def make_params(tmp_path, toy_root):
    """Demo params with runs under tmp_path and the shared toy data; keyword overrides."""
    def make(**overrides):
        values = {"base": "demo", "runs_root": str(tmp_path / "runs"), "data_root": str(toy_root), **overrides}
        return params.from_dict(values)
    return make


@pytest.fixture
def demo_run(make_params):
    """(params, run, split) of a fresh demo run."""
    def make(**overrides):
        p = make_params(**overrides)
        run, split = data.start_run(p)
        return p, run, split
    return make
