"""The benchmark scripts run end to end: the GPU check on the tiny preset (timings are not
asserted), and the GPU-hours estimate, whose counts are checked by hand."""

import importlib.util

import pytest

from datadream_lib import datasets, runs


def test_full_size_check_runs_on_the_tiny_preset(tmp_path):
    spec = importlib.util.spec_from_file_location("full_size_check", runs.project_root() / "benchmarks" / "full_size_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--models", "tiny", "--adapt-steps", "2", "--synth-batch", "2", "--steps", "2",
                          "--clf-batch", "4", "--out", str(tmp_path / "report.json")])
    assert report["adaptation"]["steps"] == 2 and report["synthesis"]["images"] == 2
    assert report["synthesis"]["size"] == [32, 32] and report["classifier"]["batch"] == 4
    assert (tmp_path / "report.json").exists()


def test_cost_estimate_counts_the_unet_passes_of_the_presets():
    spec = importlib.util.spec_from_file_location("cost_estimate", runs.project_root() / "benchmarks" / "cost_estimate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.estimate(tflops=200.0)
    assert 700 < result["forward_gflops"]["unet"] < 900  # SD 2.1-base UNet at 512 px: ~0.8 TFLOPs per sample
    rows = {r["dataset"]: r for r in result["datasets"]}
    assert list(rows) == list(datasets.BENCHMARKS)
    # EuroSAT by hand: 10 classes x 500 images x 50 steps x 2 (guidance) to sample, plus
    # 200 epochs x ceil(10 x 16 / 8) steps x 8 images x 2 (LoRA forward + backward) to adapt
    passes = {name: row["unet_passes"] for name, row in rows.items()}
    assert passes["eurosat"]["DataDream-dset"] == 10 * 500 * 50 * 2 + 200 * 20 * 8 * 2
    assert passes["imagenet"]["DataDream-dset"] == 1000 * 500 * 50 * 2 + 100 * 2000 * 8 * 2  # 100 epochs
    assert passes["eurosat"]["DataDream-cls"] == passes["eurosat"]["DataDream-dset"]  # same compute
    # IsSynth at 16 shots: int(50 x 0.15) = 7 of PNDM's 50 steps, no adaptation; DISEF: int(20 x 0.75) = 15
    # DPM-Solver++ steps per attempt, 2 attempts assumed
    assert passes["eurosat"]["IsSynth"] == 10 * 500 * 7 * 2
    assert passes["eurosat"]["DISEF"] == 10 * 500 * 2 * 15 * 2
    assert module.estimate(tflops=200.0, disef_attempts=1.0)["datasets"][3]["unet_passes"]["DISEF"] == 10 * 500 * 15 * 2
    assert result["table1_gpu_hours"] == pytest.approx(sum(r["total_gpu_hours"] for r in rows.values()))
    assert module.markdown(result).count("\n| ") == len(datasets.BENCHMARKS) + 1


def test_throughput_runs_every_stage_both_ways_on_the_tiny_preset():
    spec = importlib.util.spec_from_file_location("throughput", runs.project_root() / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--models", "tiny", "--images", "1", "2", "--steps", "2", "--adapt-steps", "1", "2",
                          "--workers", "0", "--clf-batches", "2"])
    synth = report["synthesis"]
    assert (synth["authors"]["fused"], synth["authors"]["batch"], synth["library"]["fused"]) == (False, 10, True)
    assert report["adaptation"]["authors"]["precision"] == "no" and report["device"] == "cpu"
    assert set(report["ratios"]) == {"synthesis", "adaptation", "classifier_input_over_step"}
    assert report["classifier"]["input_images_per_second"] > 0 and report["classifier"]["step_images_per_second"] > 0
    assert {"torch", "diffusers"} <= set(report["versions"])
