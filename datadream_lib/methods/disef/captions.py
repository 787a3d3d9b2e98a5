"""DISEF's preparation: a caption of every shot by LLaVA-1.5 (see the package's docstring), cached
in the run's `adaptation/captions.jsonl`, one row per shot, so an interrupted captioning resumes."""

from __future__ import annotations

from pathlib import Path

import torch

from datadream_lib import models, runtime, weights
from datadream_lib.catalog import JsonlWriter, read_jsonl
from datadream_lib.methods.base import seed_of
from datadream_lib.progress import bar as progress_bar

QUERY = "Provide a detailed caption for the image focusing on the object, knowing it's a {}."
# The `llava_v1` conversation of the original LLaVA repository, which the authors caption with.
SYSTEM_PROMPT = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                 "helpful, detailed, and polite answers to the human's questions.")
CAPTIONS_FILE = "captions.jsonl"
LLAVA_PARAMS = 7.06e9  # LLaVA-1.5-7B, for the cost estimate
LLAVA_PROMPT_TOKENS = 576 + 40  # the image's patch tokens and the query

# The tiny captioner: LLaVA's classes with a 2-layer Llama and a tiny CLIP vision tower.
TINY_LLAVA_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         image_size=32, patch_size=8)
TINY_LLAVA_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, max_position_embeddings=512)


def llava_prompt(classname: str) -> str:
    """The authors' query in LLaVA-1.5's `llava_v1` conversation, system prompt first."""
    return f"{SYSTEM_PROMPT} USER: <image>\n{QUERY.format(classname)} ASSISTANT:"


def load_captioner(p, dtype=torch.float32):
    """(model, processor) of LLaVA in eval mode on the CPU, its weights loaded in `dtype` (bf16 on a
    GPU: 7B parameters in fp32 would peak near 28 GB): the hub id or folder `caption_model`, or the
    tiny / full-size-vision random preset."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    if p.models != "pretrained":
        tokenizer = models.clip_tokenizer()  # the real CLIP BPE vocabulary, plus LLaVA's image token
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
        text = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, **TINY_LLAVA_TEXT)
        config = LlavaConfig(vision_config=CLIPVisionConfig(**TINY_LLAVA_VISION), text_config=text,
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2)
        size = TINY_LLAVA_VISION["image_size"]
        processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": size},
                                                                      crop_size={"height": size, "width": size}),
                                   tokenizer=tokenizer, patch_size=TINY_LLAVA_VISION["patch_size"],
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
        with models.seeded(models.TINY_SEED):
            model = LlavaForConditionalGeneration(config)
        weights.note(weights.preset("caption_model", p.models, models.TINY_SEED))
        return model.eval(), processor
    from transformers import AutoProcessor

    folder = caption_folder(p)
    hub = {} if Path(p.method.caption_model).expanduser().is_dir() else {"revision": folder.name}  # the commit resolved
    try:
        processor = AutoProcessor.from_pretrained(p.method.caption_model, **hub, local_files_only=p.local_files_only)
        model = LlavaForConditionalGeneration.from_pretrained(p.method.caption_model, **hub, use_safetensors=True,
                                                              local_files_only=p.local_files_only, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise models.model_unreachable("LLaVA", p.method.caption_model, exc, _LLAVA_HINT.format(p.method.caption_model)) from None
    weights.note(models.describe_folder("caption_model", p.method.caption_model, folder))
    return model.eval(), processor


def caption_folder(p) -> Path:
    """The captioner's folder: `caption_model` itself, or its hub cache snapshot at `caption_model_revision`."""
    return models.check_hub_folder("LLaVA", p.method.caption_model, "caption_model", "config.json", p.local_files_only,
                                   _LLAVA_HINT.format(p.method.caption_model), p.method.caption_model_revision)


_LLAVA_HINT = "`hf download {} --local-dir /models/llava-1.5-7b`, then caption_model: /models/llava-1.5-7b"


def cut_to_text_encoder(caption: str, tokenizer) -> tuple[str, bool]:
    """The caption as Stable Diffusion reads it (77 tokens with start and end), and whether it was cut."""
    ids = tokenizer(caption, truncation=False, verbose=False).input_ids
    limit = tokenizer.model_max_length
    if len(ids) <= limit:
        return caption, False
    return tokenizer.decode(ids[1:limit - 1], skip_special_tokens=True), True




def read_captions(path: Path, keys: list[tuple[int, int]]) -> dict[tuple[int, int], dict]:
    """(class, shot) -> its caption row, for `keys`. A line that is not a whole caption row (torn,
    garbage, keys missing) counts as no caption: the adaptation stage makes it again."""
    rows = {(r["class_index"], r["shot"]): r for r in read_jsonl(path)
            if isinstance(r, dict) and isinstance(r.get("class_index"), int) and isinstance(r.get("shot"), int)
            and isinstance(r.get("prompt"), str)}
    return {key: rows[key] for key in keys if key in rows}


@torch.no_grad()
def write_captions(p, split, todo: list[tuple[int, int]], path: Path, progress: bool) -> None:
    """Caption the shots `todo` ((class, shot) pairs), appending a row each to `path`."""
    from datadream_lib.splits import load_rgb

    device = runtime.resolve_device(p)
    dtype = runtime.autocast_dtype(p, device) or torch.float32
    model, processor = load_captioner(p, dtype)
    runtime.place(model, device, dtype)
    sd_tokenizer = models.clip_tokenizer()  # Stable Diffusion 2.1's text encoder reads CLIP BPE tokens
    writer = JsonlWriter(path)
    try:
        for c, k in progress_bar(todo, desc="captions", unit="shot", disable=not progress):
            image = split.shot_order[c][k]
            inputs = processor(images=[load_rgb(image)], text=[llava_prompt(split.classnames[c])],
                               return_tensors="pt").to(device)
            seed = seed_of(p.seed, c, k, 0xCA9)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                out = model.generate(**inputs, do_sample=True, temperature=0.2, max_new_tokens=p.method.caption_max_tokens)
            caption = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0].strip()
            prompt, cut = cut_to_text_encoder(caption, sd_tokenizer)
            writer.append({"class_index": c, "class_name": split.classnames[c], "shot": k, "image": image,
                           "caption": caption, "prompt": prompt, "cut_to_77_tokens": cut, "seed": seed,
                           "model": p.method.caption_model if p.models == "pretrained" else f"{p.models} LLaVA (random weights)"})
    finally:
        writer.close()
