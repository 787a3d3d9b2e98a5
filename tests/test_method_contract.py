"""The contract every registered generation method keeps (as diffusers runs its shared pipeline
tests over every pipeline): a new method gets these tests by being added to `methods.METHODS`.

Its parameter group gives valid defaults at every K; its plan comes from the image's seed with no
model loaded; its images are bit-identical made in one process, by two shards, and after a kill
(rows and images lost, a block resumed in its middle); its manifest rows carry the columns it
documents; its weights are checked before any work; it reports its cost. Nothing here names a method:
the runs are each method's smallest (`small_params`: the 'smoke' base and its group's own sizes)."""

import dataclasses
import json

import pytest

from datadream_lib import catalog, methods, models, params, pipeline, runs, schema, splits, synthesis
from datadream_lib.errors import DataDreamError

NAMES = sorted(methods.METHODS)
ENGINE_COLUMNS = {"class_index", "class_name", "index", "seed", "path", "method", "variant", "resolution", "batch_size",
                  "environment", "torch_threads", "bytes", "sha256"}


def _images(run, name):
    folder = catalog.folder(run, name)
    return {(r["class_index"], r["index"]): (folder / r["path"]).read_bytes() for r in catalog.read_manifest(folder)}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shots", [1, 2, 3, 4, 8, 16, 32])
def test_the_group_gives_valid_defaults_at_every_k(name, shots):
    group = methods.METHODS[name].parameters
    defaults = schema.group_defaults(group, shots)
    p = params.from_dict({"base": "paper", "synth_method": name, "shots": shots})
    assert dataclasses.asdict(p.method) == defaults and None not in defaults.values()
    assert set(defaults) <= set(p.to_dict()) and all(getattr(p.method, k) == v for k, v in defaults.items())
    assert not set(defaults) & set(schema.FIELDS)  # a group holds no parameter of the run's own
    assert methods.METHODS[name].label(p)


@pytest.mark.parametrize("name", NAMES)
def test_another_methods_parameter_is_refused_with_its_owner(name):
    mine = set(schema.group_fields(methods.METHODS[name].parameters))
    foreign = {key: other for other, method in methods.METHODS.items()
               for key in schema.group_fields(method.parameters) if key not in mine}
    for key, owner in list(foreign.items())[:3]:
        value = params.from_dict({"base": "paper", "synth_method": owner}).value(key)
        with pytest.raises(DataDreamError, match=f"'{key}' belongs to synth_method .*'{owner}'"):
            params.from_dict({"base": "paper", "synth_method": name, key: value})


@pytest.mark.parametrize("name", NAMES)
def test_images_are_the_same_in_one_process_two_shards_and_after_a_kill(small_params, name):
    p = small_params(name, images_per_class=5)
    run, split = splits.start_run(p)
    methods.prepare(p, run, split, progress=False)
    method = methods.get(p, run, split)  # plans come from the seed, with no model loaded
    jobs = synthesis.all_jobs(p, split)
    plans = [method.plan(job) for job in jobs]
    assert [methods.get(p, run, split).plan(job) for job in jobs] == plans
    synthesis.generate(p, run, split, progress=False)
    reference = _images(run, name)
    assert len(reference) == 4 * 5

    rows = catalog.read_manifest(catalog.folder(run, name))
    for row in rows:  # the documented columns, and the plan each row was made from
        assert set(methods.METHODS[name].columns) | ENGINE_COLUMNS <= set(row)
        assert row["method"] == name
    by_key = {(r["class_index"], r["index"]): r for r in rows}
    for job, plan in zip(jobs, plans):
        assert {k: by_key[job.key][k] for k in plan} == plan

    for label, shard_runs in (("sharded", 2), ("killed", 1)):
        other = runs.open_run(p, run.dir.parent / label)
        if methods.METHODS[name].prepares:  # the same preparation (adapters, captions), copied
            for source in run.path("adaptation").rglob("*"):
                if source.is_file():
                    target = other.dir / source.relative_to(run.dir)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(source.read_bytes())
        for shard in range(shard_runs):
            synthesis.generate(p.replace(shard_index=shard, num_shards=shard_runs), other, split, progress=False)
        if label == "killed":  # the last 7 rows lost, some of their images never written; a block resumes midway
            folder = catalog.folder(other, name)
            manifest = folder / catalog.manifest_name(0, 1)
            lines = manifest.read_text().splitlines()
            manifest.write_text("\n".join(lines[:-7]) + "\n")
            for line in lines[-7::2]:
                (folder / json.loads(line)["path"]).unlink()
            synthesis.generate(p, other, split, progress=False)
        assert _images(other, name) == reference, label


@pytest.mark.parametrize("name", NAMES)
def test_weights_are_checked_before_any_work(tmp_path, name):
    mine = params.from_dict({"base": "paper", "synth_method": name})
    weights = [family.weights for family in models.FAMILIES.values() if mine.has(family.weights)]  # sd_model, unclip_model
    p = params.from_dict({"base": "paper", "synth_method": name, "runs_root": str(tmp_path / "runs"), "device": "cpu",
                          "local_files_only": True, "models": "pretrained", "stages": ["synthesis"],
                          **{key: str(tmp_path / f"no-{key}") for key in weights}})
    with pytest.raises(DataDreamError, match="|".join(weights)):
        pipeline.preflight(p)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", NAMES)
def test_the_method_reports_its_cost(name):
    p = params.from_dict({"base": "paper", "synth_method": name})
    cost = methods.METHODS[name].cost(p, n_classes=10, images=500, filter_pass_rate=0.5)
    assert isinstance(cost, methods.Cost)
    assert cost.images_made >= 10 * 500 and cost.vae_decodes == cost.images_made
    assert cost.unet_passes >= cost.images_made * 2  # at least one guided UNet call per image made
    assert methods.METHODS[name].cost(p, n_classes=20, images=500).unet_passes > cost.unet_passes / 2 * 1.99
