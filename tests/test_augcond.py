"""Augmentation-conditioned unCLIP: each conditioning variant's arithmetic, the choices drawn from the
image's seed and only from the run's K shots, the authors' bugs fixed (and reproduced by their
switches), and the classifier options of DA-Fusion and unCLIP (off by default, changing training on)."""

import numpy as np
import pytest
import torch

from datadream_lib import classification, methods, models, params, splits, synthesis
from datadream_lib.methods import augcond


def _method(make_params, **overrides):
    name = "_".join(f"{k}-{v}" for k, v in sorted(overrides.items())) or "default"  # a run folder per setting
    p = make_params(synth_method="augcond", run_name=name, **overrides)
    run, split = splits.start_run(p)
    return methods.get(p, run, split), split


def _jobs(p, split, class_index=0, n=40):
    """The first n jobs of a class, as the engine makes them."""
    dirs = split.class_dirs()
    return [synthesis.ImageJob(class_index, dirs[class_index], split.classnames[class_index], i,
                               synthesis.image_seed(p.seed, class_index, i)) for i in range(n)]


def test_the_ten_variants_and_their_names():
    assert len(augcond.VARIANTS) == 10
    assert augcond.parts("image") == (None, None, False) and augcond.parts("dropout") == (None, None, True)
    assert augcond.parts("embed_cutmix_dropout") == ("cutmix", "embedding", True)
    assert augcond.parts("mixup") == ("mixup", "pixel", False)
    assert augcond.label_of("embed_cutmix_dropout") == "Embed-CutMix-Dropout"  # as the paper's tables name them
    assert augcond.label_of("mixup_dropout") == "Mixup-Dropout" and augcond.label_of("dropout") == "Dropout"
    p = params.from_dict({"base": "paper", "synth_method": "augcond"})
    assert (p.method.num_inference_steps, p.method.guidance_scale, p.method.resolution, p.method.noise_level) == (20, 10.0, 768, 0)
    assert p.method.augcond_variant == "embed_cutmix_dropout" and p.method.scheduler == "pndm"


@pytest.mark.parametrize("shots", [1, 4])
def test_every_choice_comes_from_the_seed_and_only_from_the_runs_k_shots(make_params, shots):
    for variant in ("cutmix_dropout", "embed_mixup", "image"):
        method, split = _method(make_params, shots=shots, augcond_variant=variant)
        allowed = split.shot_order[0][:shots]
        for job in _jobs(method.p, split):
            plan = method.plan(job)
            assert plan == method.plan(job)  # the seed alone decides
            assert set(plan["source_images"]) <= set(allowed) and all(0 <= k < shots for k in plan["shots"])
            pair = augcond.parts(variant)[0] is not None
            assert len(plan["shots"]) == (2 if pair else 1)
            if pair:  # two distinct shots, or at K = 1 the one shot twice, said in the row
                assert plan["same_shot"] == (shots == 1) and (plan["shots"][0] == plan["shots"][1]) == (shots == 1)
        if variant != "image" or shots > 1:  # (one shot, no mix: nothing is random)
            other = [method.plan(job) for job in _jobs(method.p.replace(seed=1), split)]
            assert other != [method.plan(job) for job in _jobs(method.p, split)]


def test_crop_and_cutmix_boxes_follow_torchvisions_rules():
    rng = np.random.default_rng(0)
    for _ in range(500):
        top, left, h, w = augcond.crop_box(rng, 120, 80)
        assert 0 <= top and top + h <= 80 and 0 <= left and left + w <= 120
        assert 0.08 * 9600 * 0.9 <= h * w <= 9600 and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1 or (h, w) == (80, 80)
        lam = float(rng.beta(1, 1))
        x1, y1, x2, y2 = augcond.cutmix_box(rng, 224, lam)
        assert 0 <= x1 <= x2 <= 224 and 0 <= y1 <= y2 <= 224
        half = int(0.5 * np.sqrt(1 - lam) * 224)
        assert x2 - x1 <= 2 * half and y2 - y1 <= 2 * half
    first, second = torch.zeros(3, 8, 8), torch.ones(3, 8, 8)
    cut = augcond.pixel_cutmix(first, second, [2, 1, 5, 4])
    assert cut[:, 1:4, 2:5].eq(1).all() and cut.sum() == 3 * 9  # the box of the second, the rest the first
    assert torch.allclose(augcond.mixup(first, second, 0.3), torch.full((3, 8, 8), 0.7))


@pytest.fixture
def loaded(make_params):
    """A loaded tiny augcond method of variant embed_cutmix_dropout (4 shots), class 0 begun."""
    def make(**overrides):
        method, split = _method(make_params, **overrides)
        method.load()
        method.begin_class(0)
        return method, split
    return make


def test_the_shots_are_encoded_once_per_class_as_the_pipeline_encodes_them(loaded):
    method, split = loaded(augcond_variant="image")
    pipe = method.pipe
    from datadream_lib.splits import load_rgb

    for k, path in enumerate(split.shot_order[0][:method.p.shots]):
        pixels = pipe.feature_extractor(images=[load_rgb(path)], return_tensors="pt").pixel_values
        assert torch.allclose(method._embeds[0][k], pipe.image_encoder(pixels).image_embeds[0], atol=1e-5)
    job = _jobs(method.p, split)[0]
    plan = method.plan(job)
    embed, mask = method.conditioning(plan, 0)
    assert torch.equal(embed, method._embeds[0][plan["shots"][0]]) and mask.eq(1).all()


def test_embedding_cutmix_cuts_a_block_of_feature_dimensions(loaded):
    method, split = loaded(augcond_variant="embed_cutmix")
    d = method._geometry[0]
    shots = method._embeds[0]
    widths = set()
    for job in _jobs(method.p, split):
        plan = method.plan(job)
        start, stop = plan["feature_block"]
        assert stop - start == round((1 - plan["lam"]) * d)
        embed, _ = method.conditioning(plan, 0)
        a, b = (shots[k] for k in plan["shots"])
        inside = torch.zeros(d, dtype=torch.bool)
        inside[start:stop] = True
        assert torch.equal(embed[inside], b[inside]) and torch.equal(embed[~inside], a[~inside])
        widths.add(stop - start)
    assert len(widths) > 5  # lambda varies with the seed

    authors, _ = loaded(augcond_variant="embed_cutmix", augcond_authors_embed_cutmix=True)
    for job in _jobs(authors.p, split)[:10]:  # their bug: always the first image
        plan = authors.plan(job)
        assert plan["feature_block"] is None
        assert torch.equal(authors.conditioning(plan, 0)[0], authors._embeds[0][plan["shots"][0]])


def test_embedding_mixup_blends_the_two_shots(loaded):
    method, split = loaded(augcond_variant="embed_mixup")
    for job in _jobs(method.p, split)[:10]:
        plan = method.plan(job)
        a, b = (method._embeds[0][k] for k in plan["shots"])
        assert torch.allclose(method.conditioning(plan, 0)[0], plan["lam"] * a + (1 - plan["lam"]) * b)


def _unet_conditioning(method, jobs):
    """The class-embedding input the UNet receives (the conditional rows, after the CFG doubling)."""
    seen = []
    handle = method.pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["class_labels"].detach().clone()), with_kwargs=True)
    try:
        method.generate(jobs)
    finally:
        handle.remove()
    return seen[0][len(jobs):]  # negative (all-zero) rows first


@pytest.mark.parametrize("authors", [False, True])
def test_dropout_zeroes_the_image_embedding_and_leaves_the_noise_level_half_alone(loaded, authors):
    from types import SimpleNamespace

    method, split = loaded(augcond_variant="dropout", augcond_authors_dropout=authors)
    d = method._geometry[0]
    jobs = [SimpleNamespace(class_index=0, seed=job.seed, plan=method.plan(job)) for job in _jobs(method.p, split, n=3)]
    seen = _unet_conditioning(method, jobs)
    undropped = [SimpleNamespace(class_index=0, seed=j.seed, plan={**j.plan, "dropout_mask": None,
                                                                    "noise_dropout_mask": None}) for j in jobs]
    full = _unet_conditioning(method, undropped)
    for row, plain, job in zip(seen, full, jobs):
        keep = torch.from_numpy(augcond.mask_of(job.plan["dropout_mask"], d))
        assert 0 < (~keep).sum() < d and job.plan["dropped"] >= int((~keep).sum())
        assert torch.equal(row[:d][~keep], torch.zeros(int((~keep).sum())))  # dropped dims: zero
        assert torch.equal(row[:d][keep], plain[:d][keep])  # survivors keep their value (not rescaled)
        if authors:  # their bug: the noise-level half is dropped too
            keep_noise = torch.from_numpy(augcond.mask_of(job.plan["noise_dropout_mask"], d))
            assert torch.equal(row[d:], plain[d:] * keep_noise) and not torch.equal(row[d:], plain[d:])
        else:
            assert job.plan["noise_dropout_mask"] is None and torch.equal(row[d:], plain[d:])


def test_pixel_mixes_are_encoded_from_the_recorded_crops(loaded):
    method, split = loaded(augcond_variant="cutmix")
    job = _jobs(method.p, split)[0]
    plan = method.plan(job)
    first, second = (method._crop(path, box) for path, box in zip(plan["source_images"], plan["crops"]))
    expected = method._encode(method._normalise(augcond.pixel_cutmix(first, second, plan["cutmix_box"]))[None])[0]
    assert torch.equal(method.conditioning(plan, 0)[0], expected)
    moved = {**plan, "cutmix_box": [0, 0, 0, 0]}  # no box: the first crop alone
    assert not torch.equal(method.conditioning(moved, 0)[0], expected)


def test_the_preview_shows_every_variant_and_reproduces_the_authors_embed_cutmix(loaded):
    method, _ = loaded()
    preview = method.preview(0)
    assert list(preview) == [augcond.label_of(v) for v in augcond.VARIANTS]
    pixels = {label: np.asarray(image) for label, image in preview.items()}
    assert len({a.tobytes() for a in pixels.values()}) == 10  # one seed, ten conditionings, ten images
    authors, _ = loaded(augcond_authors_embed_cutmix=True)
    theirs = {label: np.asarray(image) for label, image in authors.preview(0).items()}
    assert np.array_equal(theirs["Embed-CutMix"], theirs["Image"])  # their "Embed-CutMix" is "random image"
    assert np.array_equal(theirs["Embed-CutMix-Dropout"], theirs["Dropout"])


# --- the classifier options of DA-Fusion and unCLIP ----------------------------------------------

def test_the_replacement_draws_a_substitute_with_its_probability(demo_run):
    p, run, split = demo_run(shots=2)
    real = split.shots(2)
    synth = [(f"synth/{c}/{k}/{i}.png", c) for c, k in ((0, 0), (0, 1), (1, 0), (1, 1)) for i in range(3)]
    shots = [k for c, k in ((0, 0), (0, 1), (1, 0), (1, 1)) for _ in range(3)]
    by_shot = classification.substitutes_for(real, synth, shots, "shot")
    by_class = classification.substitutes_for(real, synth, shots, "class")
    assert by_shot[1] == [f"synth/0/1/{i}.png" for i in range(3)] and len(by_class[1]) == 6
    pool = classification.TrainingPool(real, [], repeat=200, substitutes=by_shot, replace=0.5, seed=3)
    import datadream_lib.augmentation as augmentation

    read = []
    original = augmentation.read_image
    augmentation.read_image = lambda path: read.append(path) or torch.zeros(3, 1, 1, dtype=torch.uint8)
    try:
        flags = [pool[i][2] for i in range(len(pool))]
        again = [pool[i][2] for i in range(len(pool))]
        pool.epoch = 1
        next_epoch = [pool[i][2] for i in range(len(pool))]
    finally:
        augmentation.read_image = original
    assert flags == again and flags != next_epoch  # the draw is (seed, epoch, sample): any worker, any order
    eligible = [bool(by_shot[pool.items[i][2]]) for i in range(len(pool))]  # classes 2, 3 have no synthetic image
    assert all(flags[i] for i in range(len(pool)) if not eligible[i])  # nothing to stand in: the real sample
    assert 0.45 < 1 - np.mean([f for f, e in zip(flags, eligible) if e]) < 0.55
    for i, path in enumerate(read[:len(pool)]):
        shot = pool.items[i][2]
        assert path == real[shot][0] or path in by_shot[shot]  # a real sample, or one of its own shot's images


@pytest.mark.parametrize("method", ["dafusion", "augcond"])
def test_the_classifier_options_are_off_by_default_and_change_training_when_on(demo_run, method):
    p, run, split = demo_run(synth_method=method, clf_epochs=1, clf_warmup_epochs=0, images_per_class=8, shots=4)
    options = methods.METHODS[method].classifier_options(p)
    assert options.replace_real == 0.0 and options == methods.METHODS[method].classifier_options(
        params.from_dict({"base": "paper", "synth_method": method}))
    synth = split.train[:4 * 8]  # stand-in images (made from shot index mod K, as DA-Fusion's rows say)
    shots = [i % 4 for i in range(len(synth))]
    off = classification.train_and_evaluate(p, "synthetic_real", split, synth, False, options, shots)
    on_p = p.replace(clf_replace_real=0.5)
    on = classification.train_and_evaluate(on_p, "synthetic_real", split, synth, False,
                                           methods.METHODS[method].classifier_options(on_p), shots)
    assert off["replace_real"] == 0.0 and on["replace_real"] == 0.5
    assert on["replace_from"] == {"dafusion": "shot", "augcond": "class"}[method]
    assert on["history"][0]["losses"] != off["history"][0]["losses"]
    again = classification.train_and_evaluate(p, "synthetic_real", split, synth, False, options, shots)
    assert again["history"][0]["losses"] == off["history"][0]["losses"]  # off is the shared classifier, seeded


def test_unclip_weights_are_preflighted_in_one_line(tmp_path):
    from datadream_lib import pipeline
    from datadream_lib.errors import DataDreamError

    folder = tmp_path / "unclip"
    folder.mkdir()
    p = params.from_dict({"base": "paper", "synth_method": "augcond", "models": "pretrained", "device": "cpu",
                          "unclip_model": str(folder), "runs_root": str(tmp_path / "runs"), "stages": ["synthesis"],
                          "local_files_only": True})
    with pytest.raises(DataDreamError, match="unclip_model folder .* has no model_index.json"):
        pipeline.preflight(p)
    assert not (tmp_path / "runs").exists()
    assert models.FAMILIES["unclip"].pipeline == "StableUnCLIPImg2ImgPipeline"
