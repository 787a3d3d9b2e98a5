"""The benchmark scripts run end to end: the GPU check on the tiny preset (timings are not
asserted), and the GPU-hours estimate, whose counts are checked by hand."""

import importlib.util
import json

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
    # EuroSAT by hand: 10 classes x 500 images x 51 UNet calls (PNDM's 50 steps and its warm-up) x 2
    # (guidance) to sample, plus 200 epochs x ceil(10 x 16 / 8) steps x 8 images x 2 (LoRA forward +
    # backward) to adapt
    passes = {name: row["unet_passes"] for name, row in rows.items()}
    assert passes["eurosat"]["DataDream-dset"] == 10 * 500 * 51 * 2 + 200 * 20 * 8 * 2
    assert passes["imagenet"]["DataDream-dset"] == 1000 * 500 * 51 * 2 + 100 * 2000 * 8 * 2  # 100 epochs
    assert passes["eurosat"]["DataDream-cls"] == passes["eurosat"]["DataDream-dset"]  # same compute
    # IsSynth at 16 shots: int(50 x 0.15) + 1 = 8 PNDM calls, no adaptation; DISEF: int(20 x 0.75) = 15
    # DPM-Solver++ calls per candidate; at a pass rate of 0.5 a class judges its budget of 800 candidates
    # (400 kept) and makes 100 more, kept unfiltered
    assert passes["eurosat"]["IsSynth"] == 10 * 500 * 8 * 2
    assert passes["eurosat"]["DISEF"] == 10 * (800 + 100) * 15 * 2
    assert module.estimate(tflops=200.0, disef_pass_rate=1.0)["datasets"][3]["unet_passes"]["DISEF"] == 10 * 500 * 15 * 2
    # AugCond unCLIP: 20 PNDM steps make 21 calls, x 2 for guidance, each a 768-px unCLIP pass counted as its
    # FLOPs' ratio to a 512-px SD 2.1-base pass (baselines.md: 2,149 / 804 GFLOPs, 2.67)
    ratio = result["forward_gflops"]["unet_unclip_768"] / result["forward_gflops"]["unet"]
    assert 2.6 < ratio < 2.75
    augcond = next(label for label in passes["eurosat"] if label.startswith("AugCond unCLIP"))  # its label names its variant
    assert passes["eurosat"][augcond] == pytest.approx(10 * 500 * 21 * 2 * ratio, rel=1e-4)
    assert result["table1_gpu_hours"] == pytest.approx(sum(r["total_gpu_hours"] for r in rows.values()))
    assert module.markdown(result).count("\n| ") == len(datasets.BENCHMARKS) + 1


def test_throughput_runs_every_stage_both_ways_on_the_tiny_preset(tmp_path):
    spec = importlib.util.spec_from_file_location("throughput", runs.project_root() / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = []  # every section is written as soon as it is measured (a run stopped at a time limit keeps them)
    module._save = lambda report, out, original=module._save: (saved.append(set(report)), original(report, out))
    report = module.main(["--models", "tiny", "--images", "2", "16", "--steps", "2", "--adapt-steps", "1", "8",
                          "--workers", "0", "--clf-batches", "2", "--out", str(tmp_path / "rates.json")])
    assert "synthesis" in saved[0] and "adaptation" not in saved[0] and len(saved) >= 4
    assert report["complete"] and json.loads((tmp_path / "rates.json").read_text())["complete"]
    assert report["environment"]["packages"]["diffusers"] and report["environment"]["torch_threads"] > 0
    synth = report["synthesis"]
    assert (synth["authors"]["fused"], synth["authors"]["batch"], synth["library"]["fused"]) == (False, 10, True)
    assert report["adaptation"]["authors"]["precision"] == "no" and report["device"] == "cpu"
    assert set(report["ratios"]) == {"synthesis", "adaptation", "classifier_input", "classifier_input_over_step"}
    assert min(report["classifier"]["input_images_per_second"].values()) > 0
    assert report["classifier"]["step_images_per_second"] > 0
    assert {"torch", "diffusers"} <= set(report["versions"])
    by_method = report["synthesis_by_method"]
    assert set(by_method) == {"DataDream-cls", "IsSynth", "DA-Fusion", "AugCond unCLIP"}
    for pair in by_method.values():  # each timed twice (n1 and n2 images); a rate is None exactly where noise
        for side in ("authors", "library"):  # swamped the difference (the longer run was not the slower one)
            rate, (t1, t2) = pair[side]["images_per_second"], pair[side]["seconds"]
            assert min(t1, t2) > 0 and (rate is None) == (t2 <= t1), pair
            made = None if rate is None else rate * (t2 - t1)  # (16 - 2) images of each class, in t2 - t1 seconds
            assert made is None or (round(made / 14) >= 1 and made == pytest.approx(14 * round(made / 14), rel=0.02)), pair
        rates = [pair[side]["images_per_second"] for side in ("authors", "library")]
        assert (pair["ratio"] is None) == (None in rates), pair
        assert pair["ratio"] is None or pair["ratio"] == pytest.approx(rates[1] / rates[0], abs=0.01), pair
    assert by_method["IsSynth"]["library"]["fused"] is None and by_method["DataDream-cls"]["library"]["fused"] is True


def test_cost_estimate_from_measured_rates_is_checked_by_hand():
    spec = importlib.util.spec_from_file_location("cost_estimate", runs.project_root() / "benchmarks" / "cost_estimate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rates = {"models": "full_random", "device": "a GPU", "date": "2026-11-23", "steps": 50, "guidance": 2.0,
             "synthesis": {"library": {"images_per_second": 5.0}},
             "adaptation": {"library": {"seconds_per_step": 0.2, "batch": 8}},
             "classifier": {"input_images_per_second": {"library": 1000.0}, "step_images_per_second": 1500.0}}
    result = module.estimate(tflops=200.0, rates=rates)
    assert "a GPU" in result["source"] and "2026-11-23" in module.markdown(result)
    eurosat = {r["dataset"]: r for r in result["datasets"]}["eurosat"]
    # EuroSAT DataDream-dset by hand: 200 epochs x 20 steps at 0.2 s; 5,000 images at 5 per second; the classifier's
    # 10 epochs of real_finetune (10 x 16 shots x 31 repeats), synthetic and synthetic_real at the slower 1,000 img/s,
    # its val (each epoch of the 3 trained settings) and test (all 4 settings) at 2 x 1,500; FID's Inception on
    # 5,000 + 13,500 + 5,400 images at 200 TFLOP/s
    f = module.forward_flops()
    real = 10 * 16 * (500 // 16)
    clf_train = 10 * (real + 5000 + (5000 + real))
    clf_eval = 4 * 8100 + 3 * 10 * 5400
    seconds = (200 * 20 * 0.2 + 10 * 500 / 5.0 + clf_train / 1000.0 + clf_eval / 3000.0
               + (5000 + 13500 + 5400) * f["inception"] / 200e12)
    assert eurosat["gpu_hours"]["DataDream-dset"] == pytest.approx(seconds / 3600, rel=1e-6)
    assert result["table1_gpu_hours"] < module.estimate(tflops=200.0)["table1_gpu_hours"] * 10  # same counts


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", runs.project_root() / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_check_carries_what_the_machine_lacks_at_the_locked_versions():
    module = _gpu_check()
    lock = module.read_lock()
    carry = module.to_carry(lock)
    assert set(module.NEEDED) | set(module.AT_LOCKED_VERSION) <= set(carry) <= set(lock)
    # what the machine has stays its own, but for the packages pinned on purpose; torch always does
    assert not (set(carry) & module.ON_THE_MACHINE) - set(module.AT_LOCKED_VERSION)
    assert "torch" not in carry and not any(name.startswith("nvidia-") for name in carry)
    # everything a carried package needs from the lock is carried or on the machine
    for name, info in lock.items():
        if info["via"] & set(carry):
            assert name in carry or name in module.ON_THE_MACHINE, name
    assert "ftfy" in carry and "nbclient" in carry  # open_clip's and papermill's needs the machine lacks
