"""The generation methods behind one interface: their defaults, their per-image plans (from the
image's seed, so shards and resumes are bit-identical), IsSynth's strength by K, DISEF's captions,
caption pairing and filter retries, the preflight of their weights, and the same shots for all."""

import json

import numpy as np
import pytest
import torch

from datadream_lib import catalog, datasets, methods, models, params, pipeline, runs, schema, splits, synthesis
from datadream_lib.errors import DataDreamError
from datadream_lib.methods import disef, issynth
from tests.conftest import small_values

ROOT = runs.project_root()


def _images(run, method):
    folder = catalog.folder(run, method)
    return {(r["class_index"], r["index"]): (folder / r["path"]).read_bytes() for r in catalog.read_manifest(folder)}


# --- the interface ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_brings_its_own_generation_settings(make_params, name):
    method = methods.METHODS[name]
    defaults = schema.group_defaults(method.parameters, 16)
    assert {"scheduler", "num_inference_steps", "guidance_scale", "resolution"} <= set(defaults)
    p = params.from_dict({"base": "paper", "synth_method": name})  # nothing set by hand
    assert p.method == method.parameters(**defaults)
    for key, value in defaults.items():
        assert getattr(p.method, key) == value
    assert "prompt" in method.columns and method.label(p)


def test_switching_methods_never_inherits_datadreams_settings():
    p = params.from_dict({"base": "paper"})
    assert (p.method.scheduler, p.method.num_inference_steps, p.method.guidance_scale, p.has("strength")) == ("pndm", 50, 2.0, False)
    d = p.replace(synth_method="disef")
    assert (d.method.scheduler, d.method.num_inference_steps, d.method.guidance_scale, d.method.strength) == ("dpmsolver++", 20, 8.0, 0.75)
    i = p.replace(synth_method="issynth")
    assert (i.method.scheduler, i.method.num_inference_steps, i.method.guidance_scale, i.method.strength) == ("pndm", 50, 3.0, 0.15)
    set_by_hand = params.from_dict({"base": "paper", "synth_method": "issynth", "guidance_scale": 5.0})
    assert set_by_hand.replace(synth_method="disef").method.guidance_scale == 5.0  # a value set by hand stays
    budget = params.from_dict({"base": "paper", "synth_method": "disef", "filter_budget": 7})
    back = budget.replace(synth_method="datadream")  # a value of DISEF's own group does not follow to DataDream
    assert not back.has("filter_budget") and "filter_budget" not in back.to_dict()
    assert back.replace(synth_method="disef").method.filter_budget == 7  # ... and comes back with DISEF


def test_issynth_strength_follows_the_shots_of_each_run():
    assert [issynth.strength_for(k) for k in (16, 8, 4, 2, 1)] == [0.15, 0.20, 0.35, 0.40, 0.50]
    assert (issynth.strength_for(32), issynth.strength_for(3)) == (0.15, 0.40)
    p = params.from_dict({"base": "paper", "synth_method": "issynth"})
    assert [p.replace(shots=k).method.strength for k in (1, 2, 4, 8, 16)] == [0.50, 0.40, 0.35, 0.20, 0.15]  # Fig. 5 right
    fixed = params.from_dict({"base": "paper", "synth_method": "issynth", "strength": 0.3})
    assert fixed.replace(shots=1).method.strength == 0.3


def test_strength_is_refused_for_a_text_to_image_method():
    with pytest.raises(DataDreamError, match="'strength' belongs to synth_method 'issynth' / 'disef', not to this run's 'datadream'"):
        params.from_dict({"base": "demo", "strength": 0.5})


def test_the_values_used_are_written_to_params_yaml(demo_run):
    p, run, _ = demo_run(synth_method="issynth")
    recorded = params.read_file(run.path(runs.PARAMS_FILE))
    assert (recorded["synth_method"], recorded["guidance_scale"], recorded["strength"], recorded["scheduler"]) == \
        ("issynth", 3.0, 0.35, "pndm")
    assert "strength" not in p.given() and p.given()["num_inference_steps"] == 20  # the demo sets the steps


# --- plans, shards, resumes ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def disef_run(tmp_path_factory, toy_root):
    """A tiny DISEF run with its captions prepared (shared by the DISEF tests)."""
    p = params.from_dict(small_values("disef", runs_root=str(tmp_path_factory.mktemp("disef") / "runs"),
                                      data_root=str(toy_root)))
    run, split = splits.start_run(p)
    table = methods.prepare(p, run, split, progress=False)
    return p, run, split, table


@pytest.mark.parametrize("name", ["issynth", "disef"])
def test_img2img_images_are_the_same_whatever_the_sharding(demo_run, disef_run, name):
    p, run, split = demo_run(**small_values(name))
    if name == "disef":  # the shared captions
        run.path("adaptation").mkdir(parents=True, exist_ok=True)
        run.path("adaptation", disef.CAPTIONS_FILE).write_bytes(disef_run[1].path("adaptation", disef.CAPTIONS_FILE).read_bytes())
    synthesis.generate(p, run, split, progress=False)
    reference = _images(run, name)
    assert len(reference) == 4 * p.images_per_class
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
        assert len(models.clip_tokenizer()(row.prompt).input_ids) <= 77  # what SD reads
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


def test_disef_image_rule_prompts_with_the_caption_of_another_shot(disef_run):
    p, run, split, _ = disef_run
    p = p.replace(filter_rule="image")
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


def test_disef_image_rule_retries_then_keeps_the_most_probable_attempt(disef_run, monkeypatch):
    p, run, split, _ = disef_run
    method = methods.get(p.replace(filter_attempts=3, filter_rule="image"), run, split)
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
    assert (first["unfiltered"], second["unfiltered"]) == (False, True)
    assert second["filter_prob"] == pytest.approx(0.3)
    assert first["attempt_seed"] == method.attempt_seed(jobs[0], 2) != method.attempt_seed(jobs[0], 1) == jobs[0].seed


def test_disef_manifest_rows_record_plan_and_filter(disef_run):
    p, run, split, _ = disef_run
    synthesis.generate(p, run, split, progress=False)
    folder = catalog.folder(run, "disef")
    rows = sorted(catalog.read_manifest(folder), key=lambda r: (r["class_index"], r["index"]))
    assert len(rows) == 4 * p.images_per_class
    method = methods.get(p, run, split)
    method._captions = method.captions()
    for row in rows:
        assert set(methods.METHODS["disef"].columns) <= set(row)
        assert (row["sampler"], row["guidance"], row["strength"], row["method"], row["variant"]) == ("dpmsolver++", 8.0, 0.75, "disef", None)
        assert row["first_timestep"] < 1000 and row["filter_rule"] == "class"
        plan = method.candidate(row["class_index"], row["candidate"])
        assert {k: row[k] for k in plan} == plan  # the row names the candidate and how it was made
        assert row["unfiltered"] == (row["candidate"] >= p.method.filter_budget * disef.DRAW_BATCH)
        assert row["unfiltered"] or row["filter_passed"]
    for c in range(4):  # candidates in stream order, `attempts` of them made for each image
        mine = [r for r in rows if r["class_index"] == c]
        assert [r["candidate"] for r in mine] == list(np.cumsum([r["attempts"] for r in mine]) - 1)
    summary = methods.class_summary(folder)
    assert list(summary["class_index"]) == [0, 1, 2, 3]
    for r in summary.itertuples():
        mine = [row for row in rows if row["class_index"] == r.class_index]
        kept_filtered = sum(not row["unfiltered"] for row in mine)
        assert r.unfiltered_share == pytest.approx(1 - kept_filtered / p.images_per_class)
        assert r.filter_judged == (p.method.filter_budget * disef.DRAW_BATCH if r.unfiltered_share else mine[-1]["candidate"] + 1)
        assert r.filter_pass_rate == pytest.approx(kept_filtered / r.filter_judged)


def _scripted_filter(method, verdict):
    """Replace the filter: candidate j of class c passes when verdict(c, j); probabilities otherwise
    favour the next class. Returns the list of candidates judged."""
    judged = []
    classes = len(method.split.classnames)
    real_made = method._made

    def made(c, j):
        plan, image, _ = real_made(c, j)
        judged.append(j)
        probs = np.full(classes, 0.1 / (classes - 1))
        probs[c if verdict(c, j) else (c + 1) % classes] = 0.9
        return plan, image, probs

    method._made = made
    return judged


@pytest.mark.parametrize("budget", [0, 2, 100])
def test_disef_class_budget_keeps_unfiltered_images_only_once_it_is_spent(disef_run, budget):
    p, run, split, _ = disef_run
    method = methods.get(p.replace(filter_budget=budget, images_per_class=6), run, split)
    method.load(batch_size=4)
    method._listed = {}  # a fresh class stream, whatever the fixture's run has listed
    judged = _scripted_filter(method, lambda c, j: j % 3 == 2)  # every third candidate passes
    jobs = [job for job in synthesis.all_jobs(p.replace(images_per_class=6), split) if job.class_index == 1]
    out = method.generate(jobs[:4]) + method.generate(jobs[4:])  # two calls: the stream goes on
    rows = [made for _, made in out]
    spent = budget * disef.DRAW_BATCH
    expected, j = [], -1
    for _ in range(6):  # the rule, written out: the next passing candidate, or any once the budget is spent
        j += 1
        while not (j % 3 == 2 or j >= spent):
            j += 1
        expected.append(j)
    assert [r["candidate"] for r in rows] == expected
    assert [r["unfiltered"] for r in rows] == [j >= spent for j in expected]
    assert [r["filter_passed"] for r in rows] == [j % 3 == 2 for j in expected]
    assert judged == list(range(expected[-1] + 1))  # each candidate judged once, none skipped
    if budget == 2:
        assert expected == [2, 5, 8, 11, 14, 16]  # 16 candidates judged, then the next one kept unfiltered


def test_disef_refills_draw_a_new_shot_and_caption_from_their_seeds(disef_run):
    p, run, split, _ = disef_run
    method = methods.get(p, run, split)
    method._captions = method.captions()
    stream = [method.candidate(2, j) for j in range(8 * 40)]
    assert len({q["attempt_seed"] for q in stream}) == len(stream)  # each candidate its own noise
    batches = [stream[b:b + 8] for b in range(0, len(stream), 8)]
    for batch in batches:  # the captions are the batch's shots, shuffled within it
        assert sorted(q["caption_shot"] for q in batch) == sorted(q["source_shot"] for q in batch)
    assert all(len({q["source_shot"] for q in batch}) < 8 for batch in batches)  # with replacement (K 4, 8 draws)
    own = np.mean([q["caption_shot"] == q["source_shot"] for q in stream])
    assert 0.15 < own < 0.6  # an image's own shot's caption is possible (E = 1/K + ... at K 4)
    assert len({(q["source_shot"], q["caption_shot"]) for q in stream}) == p.shots ** 2
    refills = [(a["source_shot"], a["caption_shot"]) != (b["source_shot"], b["caption_shot"]) for a, b in zip(stream, stream[1:])]
    assert np.mean(refills) > 0.5  # a rejected candidate's refill is mostly another shot or caption, not only noise
    for q in stream[:16]:
        assert q["prompt"] == method._captions[(2, q["caption_shot"])]["prompt"]
        assert q["source_image"] == split.shot_order[2][q["source_shot"]]
    fresh = methods.get(p, run, split)  # another process draws the same stream
    fresh._captions = fresh.captions()
    assert [fresh.candidate(2, j) for j in range(len(stream))] == stream
    assert fresh.candidate(3, 0) != stream[0]


def test_disef_class_rule_shards_by_class_and_resumes_bit_for_bit(demo_run, disef_run):
    from datadream_lib.synthesis import shard_of

    p, run, split = demo_run(**small_values("disef", run_name="disef_resume", images_per_class=5))
    run.path("adaptation").mkdir(parents=True, exist_ok=True)
    run.path("adaptation", disef.CAPTIONS_FILE).write_bytes(disef_run[1].path("adaptation", disef.CAPTIONS_FILE).read_bytes())
    assert methods.METHODS["disef"].whole_classes(p) and not methods.METHODS["disef"].whole_classes(p.replace(filter_rule="image"))
    owners = {shard_of(block, 5, 3, whole_classes=True) for block in synthesis.blocks(synthesis.all_jobs(p, split), 2)
              if block[0].class_index == 1}
    assert owners == {1}
    synthesis.generate(p, run, split, progress=False)
    reference = _images(run, "disef")
    other = runs.open_run(p, run.dir.parent / "disef_resumed")
    other.path("adaptation").mkdir()
    other.path("adaptation", disef.CAPTIONS_FILE).write_bytes(run.path("adaptation", disef.CAPTIONS_FILE).read_bytes())
    synthesis.generate(p, other, split, progress=False)
    folder = catalog.folder(other, "disef")
    manifest = folder / catalog.manifest_name(0, 1)
    lines = manifest.read_text().splitlines()
    killed = [json.loads(line) for line in lines[-7:]]  # a kill: the last 7 images unlisted (and some not written)
    manifest.write_text("\n".join(lines[:-7]) + "\n")
    for row in killed[::2]:
        (folder / row["path"]).unlink()
    synthesis.generate(p, other, split, progress=False)
    assert _images(other, "disef") == reference
    assert catalog.read_manifest(folder) and all(r["candidate"] is not None for r in catalog.read_manifest(folder))


# --- weights and shots -----------------------------------------------------------------------------

def test_preflight_names_the_disef_weights_to_set(tmp_path):
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "model_index.json").write_text("{}")
    from safetensors.torch import save_file

    clip = tmp_path / "clip.safetensors"
    save_file({"w": torch.zeros(2)}, str(clip))  # a readable weights file (preflight reads its header)
    base = {"base": "paper", "synth_method": "disef", "sd_model": str(sd), "clip_pretrained": str(clip),
            "runs_root": str(tmp_path / "runs"), "device": "cpu", "local_files_only": True, "fid_features": "inception",
            "inception_weights": str(clip), "stages": ["adaptation", "synthesis", "classification"]}
    llava = tmp_path / "llava"
    llava.mkdir()
    with pytest.raises(DataDreamError, match="caption_model folder .* has no config.json"):
        pipeline.preflight(params.from_dict({**base, "caption_model": str(llava)}))
    (llava / "config.json").write_text("{}")
    with pytest.raises(DataDreamError, match="caption_model folder .* has a config but no .safetensors weights"):
        pipeline.preflight(params.from_dict({**base, "caption_model": str(llava)}))
    save_file({"w": torch.zeros(2)}, str(llava / "model.safetensors"))
    with pytest.raises(DataDreamError, match="filter_pretrained '/nowhere/filter.bin' is not a file"):
        pipeline.preflight(params.from_dict({**base, "caption_model": str(llava), "filter_pretrained": "/nowhere/filter.bin"}))
    with pytest.raises(DataDreamError, match="LLaVA weights 'nobody/no-llava' are not reachable.*caption_model"):
        pipeline.preflight(params.from_dict({**base, "caption_model": "nobody/no-llava"}))
    filter_file = tmp_path / "filter.safetensors"
    save_file({"w": torch.zeros(2)}, str(filter_file))
    pipeline.preflight(params.from_dict({**base, "caption_model": str(llava), "filter_pretrained": str(filter_file)}))


SPLIT_PARAMETERS = ("dataset", "data_root", "seed", "split_seed", "val_fraction", "test_fraction", "class_names",
                    "skip_corrupt_images", "max_shots", "shots")


@pytest.mark.parametrize("name", datasets.BENCHMARKS)
def test_baseline_presets_read_the_same_shots_as_datadream(name):
    table1 = ROOT / "params" / "paper" / "table1.yaml"
    runs_of = {m: params.load_runs(table1, {"dataset": name, "method": m}) for m in ("dset", "issynth", "disef", "dafusion", "augcond")}
    for dset, *others in zip(*runs_of.values(), strict=True):
        for p, method in zip(others, ("issynth", "disef", "dafusion", "augcond")):
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
    assert method.sd.start == 749 and method.describe(0)["timestep_spacing"] == "linspace"
    q, other, _ = demo_run(synth_method="issynth", run_name="issynth", num_inference_steps=50, strength=0.15)
    pndm = methods.get(q, other, split)
    pndm.load()
    assert pndm.sd.start == 141  # PNDM's leading spacing, as the hub config gives it (t 141, 121, ..., 1)


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
    monkeypatch.setattr(disef.filter, "filter_prompts", lambda dataset, names: seen.append((dataset, names)) or
                        [disef.FILTER_TEMPLATE.format(n) for n in names])
    methods.get(p, run, split).load()
    assert seen == [(p.dataset, split.classnames)]


def test_a_compiled_disef_retries_in_batches_of_the_first_size(disef_run, monkeypatch):
    p, run, split, _ = disef_run
    method = methods.get(p.replace(filter_attempts=3, filter_rule="image"), run, split)
    method.load()
    method.sd.speed["compiled"] = True  # as on a GPU with compile
    jobs = [job for job in synthesis.all_jobs(p, split) if job.class_index == 0][:2]
    jobs = [synthesis.dataclasses.replace(job, plan=method.plan(job)) for job in jobs]
    sizes = []
    img2img = method.sd.img2img
    monkeypatch.setattr(method.sd, "img2img", lambda batch, *rest: sizes.append(len(batch)) or img2img(batch, *rest))
    calls = []
    monkeypatch.setattr(method, "class_probabilities", lambda images: calls.append(len(images)) or
                        np.array([[0.9, 0.1, 0, 0] if len(calls) == 1 else [0.1, 0.9, 0, 0]]
                                 + [[0.1, 0.9, 0, 0]] * (len(images) - 1)))
    out = method.generate(jobs)
    assert sizes == [2, 2, 2] and calls == [2, 1, 1]  # job 0 passes at once; job 1's retries keep the shape
    assert [row["attempts"] for _, row in out] == [1, 3]


def test_img2img_takes_a_strength_per_image_and_records_its_first_timestep(demo_run):
    """A method may plan a strength per image (DA-Fusion will): one batch of mixed strengths makes
    the images of the uniform batches, and each row records its own first timestep."""
    p, run, split = demo_run(synth_method="issynth", num_inference_steps=10)
    method = methods.get(p, run, split)
    method.load()
    paths = [split.shot_order[c][0] for c in range(3)]
    prompts, seeds = ["a", "b", "c"], [1, 2, 3]
    mixed = method.sd.img2img(paths, prompts, seeds, [0.3, 0.8, 0.3])
    low = method.sd.img2img([paths[0], paths[2]], ["a", "c"], [1, 3], [0.3, 0.3])
    high = method.sd.img2img([paths[1]], ["b"], [2], [0.8])
    as_bytes = lambda images: [np.asarray(image).tobytes() for image in images]  # noqa: E731
    assert as_bytes(mixed) == as_bytes([low[0], high[0], low[1]])
    assert as_bytes(mixed)[0] != as_bytes(method.sd.img2img(paths[:1], ["a"], [1], [0.8]))[0]
    assert method.sd.first_timestep(0.3) < method.sd.first_timestep(0.8) < 1000
    jobs = [synthesis.dataclasses.replace(job, plan={**method.plan(job), "strength": s})
            for job, s in zip(synthesis.all_jobs(p, split)[:2], (0.3, 0.8))]
    made = [row for _, row in method.generate(jobs)]
    assert [row["first_timestep"] for row in made] == [method.sd.first_timestep(0.3), method.sd.first_timestep(0.8)]


def test_damaged_or_changed_captions_are_redone_and_their_images_made_again(demo_run, disef_run):
    p, run, split = demo_run(**small_values("disef", run_name="captions"))
    run.path("adaptation").mkdir(parents=True, exist_ok=True)
    path = run.path("adaptation", disef.CAPTIONS_FILE)
    path.write_bytes(disef_run[1].path("adaptation", disef.CAPTIONS_FILE).read_bytes())
    synthesis.generate(p, run, split, progress=False)
    folder = catalog.folder(run, "disef")
    reference = _images(run, "disef")
    lines = path.read_text().splitlines()
    # a deleted line, a garbage line, a line of valid JSON that is no caption row: each is a caption to redo
    broken = [lines[0], "\x00garbage", json.dumps({"note": "not a caption"}), *lines[4:]]
    path.write_text("\n".join(broken) + "\n")
    method = methods.get(p, run, split)
    assert len(method.preparation_damage()) == 2 + 1  # shots 1 and 2 of class 0 ... and the one deleted
    assert pipeline.damaged_outputs(p, run, split, "adaptation")
    methods.prepare(p, run, split, progress=False)  # redone, seeded: the same captions, so no image is stale
    assert methods.get(p, run, split).preparation_damage() == []
    assert pipeline.damaged_outputs(p, run, split, "synthesis") == []
    # a caption that reads otherwise than when its images were made (made again on other hardware, say)
    made = [r for r in catalog.read_manifest(folder) if r["class_index"] == 1]
    rows = [r for r in catalog.read_jsonl(path) if "shot" in r]  # (the garbage lines stay in the file, ignored)
    target = next(r for r in rows if (r["class_index"], r["shot"]) == (1, made[0]["caption_shot"]))
    rows = [{**r, "prompt": r["prompt"] + " at dusk"} if r is target else r for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stale = pipeline.damaged_outputs(p, run, split, "synthesis")
    assert all("changed since" in line for line in stale)
    assert len(stale) == len(made)  # the class rule: a caption steers the class's whole stream, made anew
    synthesis.generate(p, run, split, progress=False)
    assert pipeline.damaged_outputs(p, run, split, "synthesis") == []
    after = _images(run, "disef")
    assert {k: v for k, v in after.items() if k[0] != 1} == {k: v for k, v in reference.items() if k[0] != 1}
    assert all(r["prompt"].endswith(" at dusk") for r in catalog.read_manifest(folder)
               if r["class_index"] == 1 and r["caption_shot"] == target["shot"])
