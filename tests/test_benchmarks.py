"""The GPU check script runs end to end (here on the tiny preset; timings are not asserted)."""

import importlib.util

from datadream_lib import runs


def test_full_size_check_runs_on_the_tiny_preset(tmp_path):
    spec = importlib.util.spec_from_file_location("full_size_check", runs.project_root() / "benchmarks" / "full_size_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--models", "tiny", "--adapt-steps", "2", "--synth-batch", "2", "--steps", "2",
                          "--clf-batch", "4", "--out", str(tmp_path / "report.json")])
    assert report["adaptation"]["steps"] == 2 and report["synthesis"]["images"] == 2
    assert report["synthesis"]["size"] == [32, 32] and report["classifier"]["batch"] == 8
    assert (tmp_path / "report.json").exists()
