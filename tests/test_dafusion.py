"""DA-Fusion: textual inversion trains only the new token, its file is diffusers' own format, and the
strength of each image follows its seed."""

import numpy as np
import pytest
import torch

from datadream_lib import inversion, methods, models, params, synthesis
from datadream_lib.errors import DataDreamError
from datadream_lib.methods import dafusion


@pytest.fixture(scope="module")
def dafusion_run(tmp_path_factory, toy_root):
    p = params.from_dict({"base": "demo", "runs_root": str(tmp_path_factory.mktemp("dafusion") / "runs"),
                          "data_root": str(toy_root), "synth_method": "dafusion", "inversion_steps": 3,
                          "images_per_class": 6, "ablation_images_per_class": [6]})
    from datadream_lib import splits

    run, split = splits.start_run(p)
    table = methods.prepare(p, run, split, progress=False)
    return p, run, split, table


def test_inversion_trains_only_the_new_tokens_vectors(dafusion_run):
    p, run, split, _ = dafusion_run
    pipe = models.load_sd_pipeline(p)
    before = {name: t.detach().clone() for name, t in pipe.text_encoder.state_dict().items()}
    unet_before = {name: t.detach().clone() for name, t in pipe.unet.state_dict().items()}
    trainer = inversion.InversionTrainer(pipe, p, torch.device("cpu"))
    token = inversion.token_of(split.class_dirs()[0])
    start = trainer.initial_vectors(split.classnames[0], 4)
    vectors, losses = trainer.train(token, split.classnames[0], [path for path, c in split.shots(p.shots) if c == 0], seed=5,
                                    progress=False)
    assert vectors.shape == (4, pipe.text_encoder.config.hidden_size) and len(losses) == 3
    assert not torch.equal(vectors, start)  # the token's vectors moved from the class name's mean
    after = pipe.text_encoder.state_dict()
    for name, tensor in before.items():
        if name.endswith("token_embedding.weight"):  # the table grew by the 4 new rows; the old ones are as they were
            assert torch.equal(after[name][: tensor.shape[0]], tensor)
        else:
            assert torch.equal(after[name], tensor), name
    assert all(torch.equal(pipe.unet.state_dict()[k], v) for k, v in unet_before.items())
    again, _ = inversion.InversionTrainer(models.load_sd_pipeline(p), p, torch.device("cpu")).train(
        token, split.classnames[0], [path for path, c in split.shots(p.shots) if c == 0], seed=5, progress=False)
    assert torch.equal(again, vectors)  # seeded


def test_a_saved_token_loads_into_a_plain_diffusers_pipeline_with_the_same_encoding(dafusion_run):
    p, run, split, table = dafusion_run
    assert list(table["class_index"]) == list(range(4)) and set(table["vectors"]) == {4}
    where = inversion.folder(run, split.class_dirs()[1])
    token = inversion.token_of(split.class_dirs()[1])
    from safetensors.torch import load_file

    learned = load_file(str(where / inversion.TOKEN_FILE))[token]
    trainer = inversion.InversionTrainer(models.load_sd_pipeline(p), p, torch.device("cpu"))
    trainer.pipe.tokenizer.add_tokens([token] + [f"{token}_{i}" for i in range(1, 4)])
    trainer.pipe.text_encoder.resize_token_embeddings(len(trainer.pipe.tokenizer), mean_resizing=False)
    trainer.embeddings = trainer.pipe.text_encoder.get_input_embeddings()
    trainer._hooked = (trainer.embeddings, trainer.embeddings.register_forward_hook(trainer._inject))
    trainer._vectors = (trainer.pipe.tokenizer.convert_tokens_to_ids([token] + [f"{token}_{i}" for i in range(1, 4)]), learned)
    words = dafusion.PROMPT.format(inversion.token_words(token, 4))
    ids = trainer.pipe.tokenizer([words], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        as_trained = trainer.pipe.text_encoder(ids)[0]

    plain = models.load_sd_pipeline(p)  # a user's pipeline: diffusers' loader, the prompt as generation writes it
    plain.load_textual_inversion(str(where / inversion.TOKEN_FILE))
    prompt = plain.maybe_convert_prompt(dafusion.PROMPT.format(token), plain.tokenizer)
    assert prompt == words
    ids = plain.tokenizer([prompt], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        loaded = plain.text_encoder(ids)[0]
    assert torch.equal(loaded, as_trained)


def test_a_damaged_token_stops_synthesis_and_is_trained_again(dafusion_run):
    p, run, split, _ = dafusion_run
    path = inversion.folder(run, split.class_dirs()[2]) / inversion.TOKEN_FILE
    good = path.read_bytes()
    path.write_bytes(good[:-4] + b"\0\0\0\0")  # same size, other bytes
    method = methods.get(p, run, split)
    with pytest.raises(DataDreamError, match="01_adaptation"):
        method.check_prepared()
    methods.prepare(p, run, split, progress=False)
    assert path.read_bytes() == good  # trained again from its seed, bit for bit


def test_strengths_follow_the_image_seed(dafusion_run):
    p, run, split, _ = dafusion_run
    method = methods.get(p.replace(images_per_class=40, ablation_images_per_class=[40]), run, split)
    jobs = synthesis.all_jobs(p.replace(images_per_class=40, ablation_images_per_class=[40]), split)
    plans = [method.plan(job) for job in jobs]
    assert {plan["strength"] for plan in plans} == {0.25, 0.5, 0.75, 1.0}
    assert [plan["strength"] for plan in plans] == [
        p.method.dafusion_strengths[int(np.random.default_rng(job.seed).integers(4))] for job in jobs]
    assert [plan["source_shot"] for plan in plans[:8]] == [i % p.shots for i in range(8)]
    assert all(plan["prompt"] == f"a photo of a {plan['token']}" for plan in plans)
    fixed = methods.get(p.replace(dafusion_strengths=[0.5]), run, split)
    assert {fixed.plan(job)["strength"] for job in jobs[:10]} == {0.5}  # the paper's fixed-strength ablation


def test_recipes_and_their_overrides():
    p = params.from_dict({"base": "paper", "synth_method": "dafusion"})
    assert inversion.recipe(p) == {"vectors": 4, "init": "class name", "steps": 2000, "batch_size": 8, "lr": 4e-3}
    scripts = p.replace(inversion_recipe="scripts", inversion_steps=10)
    assert inversion.recipe(scripts) == {"vectors": 1, "init": "the", "steps": 10, "batch_size": 4, "lr": 2e-3}
    assert (p.method.guidance_scale, p.method.scheduler, p.method.num_inference_steps) == (7.5, "pndm", 50)
