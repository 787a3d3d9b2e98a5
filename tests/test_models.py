"""Model presets: the tiny preset is the same classes, seeded; the tokenizer is CLIP's real BPE."""

import open_clip
import pytest
import torch

from datadream_lib import models, params, runtime
from datadream_lib.errors import DataDreamError


def test_hf_tokenizer_matches_open_clip_on_the_shipped_vocabulary():
    hf = models.clip_tokenizer(pad_token="<|endoftext|>")
    reference = open_clip.get_tokenizer("ViT-B-16")
    for text in ["a photo of a red circle", "a satellite photo of a Annual Crop Land", "Boeing 747-400, F/A-18 (Hornet)"]:
        ours = hf(text).input_ids
        theirs = [int(t) for t in reference([text])[0] if t != 0]
        assert ours == theirs
    assert len(hf) == 49408


def test_tiny_preset_is_the_real_classes_and_rebuilds_identically():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    p = params.from_dict({"base": "demo"})
    a, b = models.load_sd_pipeline(p), models.load_sd_pipeline(p)
    assert isinstance(a.unet, UNet2DConditionModel) and isinstance(a.vae, AutoencoderKL)
    assert isinstance(a.text_encoder, CLIPTextModel)
    for x, y in zip(a.unet.state_dict().values(), b.unet.state_dict().values()):
        assert torch.equal(x, y)
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    models.load_clip(p)
    assert torch.equal(state, torch.random.get_rng_state())  # building never disturbs the caller's RNG


def test_full_random_preset_has_the_sd21_base_shapes():
    # configs only: building the full-size UNet is left to GPU checks
    assert models.SD21_BASE_UNET["cross_attention_dim"] == models.SD21_TEXT_ENCODER["hidden_size"] == 1024
    assert models.SD21_BASE_UNET["block_out_channels"] == (320, 640, 1280, 1280)
    assert models.SD_SCHEDULER["prediction_type"] == "epsilon"


def test_unreachable_weights_say_which_model_and_how_to_point_at_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = params.from_dict({"sd_model": "nobody/not-a-model", "local_files_only": True})
    with pytest.raises(DataDreamError, match="Stable Diffusion weights 'nobody/not-a-model' are not reachable.*local"):
        models.check_sd_reachable(p)
    with pytest.raises(DataDreamError, match="not reachable"):
        models.load_sd_pipeline(p)
    with pytest.raises(DataDreamError, match="no model_index.json"):
        models.check_sd_reachable(params.from_dict({"sd_model": str(tmp_path)}))
    with pytest.raises(DataDreamError, match="CLIP weights .* not reachable"):
        models.load_clip(params.from_dict({"clip_pretrained": str(tmp_path / "missing.safetensors")}))
    with pytest.raises(DataDreamError, match="is not a file"):
        models.check_clip_reachable(params.from_dict({"clip_pretrained": str(tmp_path / "missing.safetensors")}))
    with pytest.raises(DataDreamError, match="not a pretrained tag of 'ViT-B-16'.*'openai'"):
        models.check_clip_reachable(params.from_dict({"clip_pretrained": "opneai"}))


def test_clip_uses_quick_gelu_as_the_openai_weights_need():
    from open_clip.transformer import QuickGELU

    for preset in ("tiny", "full_random"):
        model, _, _ = models.load_clip(params.from_dict({"base": "demo", "models": preset}))
        assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU), preset
        assert isinstance(model.transformer.resblocks[0].mlp.gelu, QuickGELU), preset
    model, _, _ = models.load_clip(params.from_dict({"base": "demo", "clip_quick_gelu": False}))
    assert not isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_batch_size_and_compile_follow_the_machine_unless_set(monkeypatch):
    import torch

    from datadream_lib import params

    p = params.from_dict({"base": "demo", "synth_batch_size": None, "resolution": 512})
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert runtime.synth_batch_size(p, cpu) == runtime.SYNTH_BATCH_CPU
    for free_gib, batch in [(79, 64), (39, 24), (20, 8), (11, 3), (7, 1)]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, f=free_gib: (f * 2**30, 80 * 2**30))
        assert runtime.synth_batch_size(p, gpu) == batch, free_gib
    assert runtime.synth_batch_size(p.replace(synth_batch_size=5), gpu) == 5
    assert not runtime.use_compile(p, cpu, 10**6, 2000)
    assert not runtime.use_compile(p, gpu, 1999, 2000) and runtime.use_compile(p, gpu, 2000, 2000)
    assert runtime.use_compile(p.replace(compile=True), cpu, 1, 2000)
    assert not runtime.use_compile(p.replace(compile=False), gpu, 10**6, 2000)


def test_a_model_family_brings_its_presets_and_weights_parameter(make_params, tmp_path):
    """SD 2.1 is one family among others: a second one adds its presets without touching SD's."""
    assert set(models.SD21.presets) == {"tiny", "full_random"} and models.FAMILIES["sd21"] is models.SD21
    built = []
    other = models.Family("Other", "StableDiffusionPipeline", "sd_model", {"tiny": lambda: built.append(1) or "pipe"},
                          "get {weights}")
    assert other.load(make_params()) == "pipe" and built == [1]
    p = make_params(models="pretrained", sd_model=str(tmp_path), local_files_only=True, fid_features="inception")
    with pytest.raises(DataDreamError, match="sd_model folder .* has no model_index.json.*get "):
        other.check(p)
