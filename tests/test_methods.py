"""The generation methods behind one interface: their defaults, their per-image plans (from the
image's seed, so shards and resumes are bit-identical), IsSynth's strength by K, DISEF's captions,
caption pairing and filter retries, the preflight of their weights, and the same shots for all."""

import json

import numpy as np
import pytest

from datadream_lib import catalog, datasets, methods, models, params, pipeline, runs, splits, synthesis
from datadream_lib.errors import DataDreamError
from datadream_lib.methods import disef, issynth

ROOT = runs.project_root()
SMALL = dict(images_per_class=3, num_inference_steps=4, synth_batch_size=2, ablation_images_per_class=[3],
             filter_attempts=2)


def _images(run, method):
    folder = catalog.folder(run, method)
    return {(r["class_index"], r["index"]): (folder / r["path"]).read_bytes() for r in catalog.read_manifest(folder)}


# --- the interface ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_brings_its_own_generation_settings(make_params, name):
    method = methods.METHODS[name]
    assert set(method.defaults(16)) == set(methods.GENERATION_PARAMETERS)
    p = params.from_dict({"base": "paper", "synth_method": name})  # nothing set by hand
    for key, value in method.defaults(16).items():
        assert getattr(p, key) == value
    assert "prompt" in method.columns and method.label(p)


def test_switching_methods_never_inherits_datadreams_settings():
    p = params.from_dict({"base": "paper"})
    assert (p.scheduler, p.num_inference_steps, p.guidance_scale, p.strength) == ("pndm", 50, 2.0, None)
    d = p.replace(synth_method="disef")
    assert (d.scheduler, d.num_inference_steps, d.guidance_scale, d.strength) == ("dpmsolver++", 20, 8.0, 0.75)
    i = p.replace(synth_method="issynth")
    assert (i.scheduler, i.num_inference_steps, i.guidance_scale, i.strength) == ("pndm", 50, 3.0, 0.15)
    set_by_hand = params.from_dict({"base": "paper", "synth_method": "issynth", "guidance_scale": 5.0})
    assert set_by_hand.replace(synth_method="disef").guidance_scale == 5.0  # a value set by hand stays


def test_issynth_strength_follows_the_shots_of_each_run():
    assert [issynth.strength_for(k) for k in (16, 8, 4, 2, 1)] == [0.15, 0.20, 0.35, 0.40, 0.50]
    assert (issynth.strength_for(32), issynth.strength_for(3)) == (0.15, 0.40)
    p = params.from_dict({"base": "paper", "synth_method": "issynth"})
    assert [p.replace(shots=k).strength for k in (1, 2, 4, 8, 16)] == [0.50, 0.40, 0.35, 0.20, 0.15]  # Fig. 5 right
    fixed = params.from_dict({"base": "paper", "synth_method": "issynth", "strength": 0.3})
    assert fixed.replace(shots=1).strength == 0.3


def test_strength_is_refused_for_a_text_to_image_method():
    with pytest.raises(DataDreamError, match="strength.*img2img"):
        params.from_dict({"base": "demo", "strength": 0.5})


def test_the_values_used_are_written_to_params_yaml(demo_run):
    p, run, _ = demo_run(synth_method="issynth")
    recorded = params.read_file(run.path(runs.PARAMS_FILE))
    assert (recorded["synth_method"], recorded["guidance_scale"], recorded["strength"], recorded["scheduler"]) == \
        ("issynth", 3.0, 0.35, "pndm")
    assert p.given()["strength"] is None and p.given()["num_inference_steps"] == 20  # the demo sets the steps


# --- plans, shards, resumes ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def disef_run(tmp_path_factory, toy_root):
    """A tiny DISEF run with its captions prepared (shared by the DISEF tests)."""
    p = params.from_dict({"base": "demo", "runs_root": str(tmp_path_factory.mktemp("disef") / "runs"),
                          "data_root": str(toy_root), "synth_method": "disef", **SMALL})
    run, split = splits.start_run(p)
    table = methods.prepare(p, run, split, progress=False)
    return p, run, split, table


@pytest.mark.parametrize("name", ["issynth", "disef"])
def test_img2img_images_are_the_same_whatever_the_sharding(demo_run, disef_run, name):
    p, run, split = demo_run(synth_method=name, **SMALL)
    if name == "disef":  # the shared captions
        run.path("adaptation").mkdir(parents=True, exist_ok=True)
        run.path("adaptation", disef.CAPTIONS_FILE).write_bytes(disef_run[1].path("adaptation", disef.CAPTIONS_FILE).read_bytes())
    synthesis.generate(p, run, split, progress=False)
    reference = _images(run, name)
    assert len(reference) == 12
    other = runs.open_run(p, run.dir.parent / "sharded")
    if name == "disef":
        other.path("adaptation").mkdir()
        other.path("adaptation", disef.CAPTIONS_FILE).write_bytes(run.path("adaptation", disef.CAPTIONS_FILE).read_bytes())
    for shard in (1, 0):
        synthesis.generate(p.replace(shard_index=shard, num_shards=2), other, split, progress=False)
    assert _images(other, name) == reference
    (catalog.folder(other, name) / catalog.read_manifest(catalog.folder(other, name))[3]["path"]).unlink()
    synthesis.generate(p, other, split, progress=False)  # a resume regenerates the lost image, bit for bit
    assert _images(other, name) == reference


def test_issynth_plan_takes_shot_index_mod_k(demo_run):
    p, run, split = demo_run(synth_method="issynth", images_per_class=9, ablation_images_per_class=[9])
    method = methods.get(p, run, split)
    plans = [method.plan(job) for job in synthesis.all_jobs(p, split) if job.class_index == 2]
    assert [plan["source_shot"] for plan in plans] == [i % p.shots for i in range(9)]
    assert all(plan["source_image"] == split.shot_order[2][plan["source_shot"]] for plan in plans)
    assert {plan["strength"] for plan in plans} == {0.35}  # K = 4


def test_disef_captions_every_shot_once_and_resumes(disef_run):
    p, run, split, table = disef_run
    assert len(table) == len(split.classnames) * p.shots
    assert {(r.class_index, r.shot) for r in table.itertuples()} == {(c, k) for c in range(4) for k in range(p.shots)}
    for row in table.itertuples():
        assert row.image == split.shot_order[row.class_index][row.shot]
        assert len(disef.models.clip_tokenizer()(row.prompt).input_ids) <= 77  # what SD reads
        assert row.cut_to_77_tokens == (row.prompt != row.caption)
    path = run.path("adaptation", disef.CAPTIONS_FILE)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:10])  # two lost, one torn
    method = methods.get(p, run, split)
    assert len(method.preparation_damage()) == 3
    with pytest.raises(DataDreamError, match="01_adaptation"):
        method.check_prepared()
    again = methods.prepare(p, run, split, progress=False)
    assert again.to_dict("records") == table.to_dict("records")  # the same seeded captions


def test_disef_prompts_with_the_caption_of_another_shot(disef_run):
    p, run, split, _ = disef_run
    method = methods.get(p, run, split)
    method._captions = method.captions()
    jobs = [job for job in synthesis.all_jobs(p.replace(images_per_class=40), split) if job.class_index == 1]
    plans = [method.plan(job) for job in jobs]
    assert all(plan["caption_shot"] != plan["source_shot"] for plan in plans)
    assert len({plan["caption_shot"] for plan in plans}) == p.shots  # every shot's caption is used
    assert all(plan["prompt"] == method._captions[(1, plan["caption_shot"])]["prompt"] for plan in plans)
    fresh = methods.get(p, run, split)  # another process plans the same images the same way
    fresh._captions = fresh.captions()
    assert [fresh.plan(job) for job in jobs] == plans


def test_disef_filter_retries_then_keeps_the_most_probable_attempt(disef_run, monkeypatch):
    p, run, split, _ = disef_run
    method = methods.get(p.replace(filter_attempts=3), run, split)
    method.load()
    jobs = [job for job in synthesis.all_jobs(p, split) if job.class_index == 0][:2]
    jobs = [synthesis.dataclasses.replace(job, plan=method.plan(job)) for job in jobs]
    seen = []

    def scripted(images):
        """job 0 passes at its 2nd attempt; job 1 never does, and its 2nd attempt is its most probable."""
        attempt = len(seen) + 1
        seen.append(len(images))
        rows = []
        for k in range(len(images)):
            passes = attempt == 2 and k == 0
            rows.append([0.9, 0.1, 0, 0] if passes else [0.2 + (0.1 if attempt == 2 else 0), 0.8, 0, 0])
        return np.array(rows[: len(images)])

    monkeypatch.setattr(method, "class_probabilities", scripted)
    out = method.generate(jobs)
    assert seen == [2, 2, 1]  # both tried twice; only job 1 a third time
    first, second = out[0][1], out[1][1]
    assert (first["attempts"], first["kept_attempt"], first["filter_passed"]) == (2, 2, True)
    assert (second["attempts"], second["kept_attempt"], second["filter_passed"]) == (3, 2, False)
    assert second["filter_prob"] == pytest.approx(0.3)
    assert first["attempt_seed"] == method.attempt_seed(jobs[0], 2) != method.attempt_seed(jobs[0], 1) == jobs[0].seed


def test_disef_manifest_rows_record_plan_and_filter(disef_run):
    p, run, split, _ = disef_run
    synthesis.generate(p, run, split, progress=False)
    rows = catalog.read_manifest(catalog.folder(run, "disef"))
    assert len(rows) == 12
    for row in rows:
        assert set(methods.METHODS["disef"].columns) <= set(row)
        assert 1 <= row["kept_attempt"] <= row["attempts"] <= p.filter_attempts
        assert (row["sampler"], row["guidance"], row["strength"], row["source"]) == ("dpmsolver++", 8.0, 0.75, "DISEF")
        assert row["first_timestep"] < 1000


# --- weights and shots -----------------------------------------------------------------------------

def test_preflight_names_the_disef_weights_to_set(tmp_path):
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "model_index.json").write_text("{}")
    clip = tmp_path / "clip.safetensors"
    clip.write_bytes(b"x")
    base = {"base": "paper", "synth_method": "disef", "sd_model": str(sd), "clip_pretrained": str(clip),
            "runs_root": str(tmp_path / "runs"), "device": "cpu", "local_files_only": True, "fid_features": "inception",
            "inception_weights": str(clip), "stages": ["adaptation", "synthesis", "classification"]}
    llava = tmp_path / "llava"
    llava.mkdir()
    with pytest.raises(DataDreamError, match="caption_model folder .* has no config.json"):
        pipeline.preflight(params.from_dict({**base, "caption_model": str(llava)}))
    (llava / "config.json").write_text("{}")
    with pytest.raises(DataDreamError, match="filter_pretrained '/nowhere/filter.bin' is not a file"):
        pipeline.preflight(params.from_dict({**base, "caption_model": str(llava), "filter_pretrained": "/nowhere/filter.bin"}))
    with pytest.raises(DataDreamError, match="LLaVA weights 'nobody/no-llava' are not reachable.*caption_model"):
        pipeline.preflight(params.from_dict({**base, "caption_model": "nobody/no-llava"}))
    filter_file = tmp_path / "filter.safetensors"
    filter_file.write_bytes(b"x")
    pipeline.preflight(params.from_dict({**base, "caption_model": str(llava), "filter_pretrained": str(filter_file)}))


SPLIT_PARAMETERS = ("dataset", "data_root", "seed", "split_seed", "val_fraction", "test_fraction", "class_names",
                    "skip_corrupt_images", "max_shots", "shots")


@pytest.mark.parametrize("name", datasets.BENCHMARKS)
def test_baseline_presets_read_the_same_shots_as_datadream(name):
    paper = ROOT / "params" / "paper"
    runs_of = {m: params.load_runs(paper / f"{name}_{m}.yaml") for m in ("dset", "issynth", "disef")}
    for dset, issynth_p, disef_p in zip(*runs_of.values(), strict=True):
        for p, method in ((issynth_p, "issynth"), (disef_p, "disef")):
            assert p.synth_method == method and p.clf_settings == ["synthetic", "synthetic_real"]
            assert {k: getattr(p, k) for k in SPLIT_PARAMETERS} == {k: getattr(dset, k) for k in SPLIT_PARAMETERS}
            assert runs.run_dir(p) != runs.run_dir(dset)


def test_the_same_parameters_draw_the_same_shots_for_every_method(make_params):
    drawn = {m: splits.build_split(make_params(synth_method=m)) for m in methods.METHODS}
    reference = drawn.pop("datadream")
    for split in drawn.values():
        assert json.dumps(split.shot_order) == json.dumps(reference.shot_order)


def test_a_long_caption_is_cut_where_stable_diffusion_stops_reading():
    tokenizer = models.clip_tokenizer()
    caption = " ".join(["word"] * 100)
    prompt, cut = disef.cut_to_text_encoder(caption, tokenizer)
    assert cut and len(tokenizer(prompt).input_ids) == 77 and caption.startswith(prompt)
    assert disef.cut_to_text_encoder("a short one", tokenizer) == ("a short one", False)


# --- the schedule and the sources, as the methods' authors run them ---------------------------------

@pytest.mark.parametrize("config_spacing", [None, "leading", "linspace"])
def test_disef_starts_at_t749_however_the_weights_folder_was_made(demo_run, monkeypatch, config_spacing):
    """SD 2.1-base's hub scheduler config has no timestep_spacing; save_pretrained writes `leading`."""
    config = {k: v for k, v in models.SD_SCHEDULER.items() if k != "timestep_spacing"}
    if config_spacing:
        config["timestep_spacing"] = config_spacing
    monkeypatch.setattr(models, "SD_SCHEDULER", config)
    p, run, split = demo_run(synth_method="disef", num_inference_steps=20, strength=0.75)
    method = methods.get(p, run, split)
    method.load()
    assert method.start == 749 and method.describe(0)["timestep_spacing"] == "linspace"
    q, other, _ = demo_run(synth_method="issynth", run_name="issynth", num_inference_steps=50, strength=0.15)
    pndm = methods.get(q, other, split)
    pndm.load()
    assert pndm.start == 141  # PNDM's leading spacing, as the hub config gives it (t 141, 121, ..., 1)


def test_unet_calls_count_pndms_warm_up_and_img2imgs_first_step():
    from datadream_lib.methods import stable_diffusion

    assert stable_diffusion.unet_calls("pndm", 50, None) == 51
    assert stable_diffusion.unet_calls("pndm", 50, 0.15) == 8  # int(50 * 0.15) + 1
    assert stable_diffusion.unet_calls("dpmsolver++", 20, 0.75, "linspace") == 15


def test_an_issynth_source_of_a_non_square_shot_has_no_black_bars(tmp_path):
    from PIL import Image

    from datadream_lib.methods import stable_diffusion

    wide = np.zeros((40, 100, 3), dtype=np.uint8)
    wide[..., 0] = 200  # a red frame, twice as wide as high
    Image.fromarray(wide).save(tmp_path / "wide.png")
    cropped = np.asarray(stable_diffusion.source_image(str(tmp_path / "wide.png"), 32, fit=issynth.IsSynth.source_fit))
    assert cropped.shape == (32, 32, 3) and cropped[..., 0].min() > 150  # the centre of the frame, no bars
    padded = np.asarray(stable_diffusion.source_image(str(tmp_path / "wide.png"), 32, fit=disef.DISEF.source_fit))
    assert padded[0, 16, 0] == 0 and padded[16, 16, 0] > 150  # DISEF's authors pad with black


def test_the_llava_prompt_is_the_authors_llava_v1_conversation():
    prompt = disef.llava_prompt("Forest")
    assert prompt.startswith("A chat between a curious human and an artificial intelligence assistant. ")
    assert prompt.endswith(" USER: <image>\nProvide a detailed caption for the image focusing on the object, "
                           "knowing it's a Forest. ASSISTANT:")


def test_the_filter_uses_the_authors_template_of_the_dataset(disef_run, monkeypatch):
    assert disef.filter_prompts("eurosat", ["Forest"]) == ["a centered satellite photo of a Forest."]
    assert disef.filter_prompts("fgvc_aircraft", ["707-320"]) == ["a photo of a 707-320, a type of aircraft."]
    assert disef.filter_prompts("food101", ["apple pie"]) == ["a photo of a apple pie."]
    p, run, split, _ = disef_run
    seen = []
    monkeypatch.setattr(disef, "filter_prompts", lambda dataset, names: seen.append((dataset, names)) or
                        [disef.FILTER_TEMPLATE.format(n) for n in names])
    methods.get(p, run, split).load()
    assert seen == [(p.dataset, split.classnames)]


def test_a_compiled_disef_retries_in_batches_of_the_first_size(disef_run, monkeypatch):
    p, run, split, _ = disef_run
    method = methods.get(p.replace(filter_attempts=3), run, split)
    method.load()
    method.speed["compiled"] = True  # as on a GPU with compile
    jobs = [job for job in synthesis.all_jobs(p, split) if job.class_index == 0][:2]
    jobs = [synthesis.dataclasses.replace(job, plan=method.plan(job)) for job in jobs]
    sizes = []
    img2img = method.img2img
    monkeypatch.setattr(method, "img2img", lambda batch, prompts, seeds: sizes.append(len(batch)) or img2img(batch, prompts, seeds))
    calls = []
    monkeypatch.setattr(method, "class_probabilities", lambda images: calls.append(len(images)) or
                        np.array([[0.9, 0.1, 0, 0] if len(calls) == 1 else [0.1, 0.9, 0, 0]]
                                 + [[0.1, 0.9, 0, 0]] * (len(images) - 1)))
    out = method.generate(jobs)
    assert sizes == [2, 2, 2] and calls == [2, 1, 1]  # job 0 passes at once; job 1's retries keep the shape
    assert [row["attempts"] for _, row in out] == [1, 3]
