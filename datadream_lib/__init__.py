"""DataDream, reproducible: few-shot guided dataset generation (Kim et al., ECCV 2024).

One module per concept of the paper:

    params          every setting, typed and validated, with the paper defaults
    data            datasets, class names, prompts, nested few-shot splits
    models          Stable Diffusion 2.1 and CLIP ViT-B/16: pretrained, tiny, or full-size random
    adaptation      DataDream LoRA on SD's text encoder and UNet attention (dset / cls)
    synthesis       N images per class, one seeded generator per image, resumable manifest
    classification  CLIP + LoRA on real, synthetic, or both (lambda-weighted), selected on val
    fid             per-class FID / KID between synthetic and real images
    figures         Fig. 3, Fig. 4, Fig. 5 and a Table-1-style table, from result files only
    runs            the run folder: recorded parameters, stage markers, atomic writes
    pipeline        `python -m datadream_lib.pipeline PARAMS.yaml`: the notebooks, in order
"""

from datadream_lib.errors import DataDreamError

__all__ = ["DataDreamError"]
__version__ = "0.1.0"
