"""DISEF's filter: CLIP zero-shot over the classes with the authors' template of the dataset (see the
package's docstring); a candidate passes when its most probable class is its own."""

from __future__ import annotations

import numpy as np
import torch

from datadream_lib import models, weights

# The filter's zero-shot template per dataset (the authors' `get_prompt`), not the classifier's prompt.
# (With the dataset names their README passes, only dtd and eurosat reach their own template; we give
# each dataset the template written for it.)
FILTER_TEMPLATES = {
    "dtd": "a photo of a {} texture.",
    "eurosat": "a centered satellite photo of a {}.",
    "stanford_cars": "a photo of a {}, a type of car.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "flowers102": "a photo of a {} flower.",
    "oxford_pets": "a photo of a {}, a type of pet.",
}
FILTER_TEMPLATE = "a photo of a {}."  # every other dataset


def filter_prompts(dataset: str, classnames: list[str]) -> list[str]:
    return [FILTER_TEMPLATES.get(dataset, FILTER_TEMPLATE).format(name) for name in classnames]


def load_filter(p):
    """(clip, tokenizer, image size): the filter's open_clip model in fp32 on the CPU; the tiny
    preset uses the tiny CLIP of the classifier."""
    import open_clip

    if p.models in ("tiny", "toy"):  # the classifier's CLIP (random, or the toy world's)
        return models.load_clip(p)
    tokenizer = open_clip.get_tokenizer(p.method.filter_model)
    if p.models == "full_random":
        with models.seeded(models.TINY_SEED):
            model = open_clip.create_model(p.method.filter_model, pretrained=None)
        weights.note(weights.preset("filter_pretrained", p.models, models.TINY_SEED))
    else:
        try:
            model = open_clip.create_model(p.method.filter_model, pretrained=p.method.filter_pretrained, require_pretrained=True,
                                           weights_only=True)
        except Exception as exc:  # open_clip raises RuntimeError / OSError / HF errors when offline
            raise models.model_unreachable("CLIP filter", f"{p.method.filter_model} / {p.method.filter_pretrained}", exc,
                                           "open_clip's hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K file "
                                           "open_clip_model.safetensors, then filter_pretrained: its path") from None
        weights.note(models.open_clip_weights(p.method.filter_model, p.method.filter_pretrained, "filter_pretrained"))
    size = model.visual.image_size
    return model.eval(), tokenizer, int(size[0] if isinstance(size, (tuple, list)) else size)


class ZeroShotFilter:
    """The filter, loaded on the run's device, with the text features of the dataset's classes."""

    def __init__(self, p, classnames: list[str], device):
        clip, tokenizer, self.image_size = load_filter(p)
        self.model = clip.to(device)
        with torch.no_grad():
            text = self.model.encode_text(tokenizer(filter_prompts(p.dataset, classnames)).to(device))
        self.text = torch.nn.functional.normalize(text.float(), dim=-1)

    @torch.no_grad()
    def probabilities(self, images) -> np.ndarray:
        """The zero-shot probabilities over the classes, one row per image."""
        from datadream_lib.augmentation import test_transform

        transform = test_transform(self.image_size)
        batch = torch.stack([transform(image) for image in images]).to(self.text.device)
        features = torch.nn.functional.normalize(self.model.encode_image(batch).float(), dim=-1)
        logits = self.model.logit_scale.float().exp() * features @ self.text.t()
        return logits.softmax(-1).cpu().numpy()
