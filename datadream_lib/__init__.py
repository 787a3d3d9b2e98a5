"""DataDream, reproducible: few-shot guided dataset generation (Kim et al., ECCV 2024).

One module per concept of the paper:

    params          every setting, typed and validated, with the paper defaults
    datasets        the ten benchmarks and any image folder: files, splits, class names, prompt prefixes
    splits          prompts, class folders, the nested few-shot split of a run (split.json)
    models          Stable Diffusion 2.1 and CLIP ViT-B/16: pretrained, tiny, or full-size random
    weights         which pretrained weights: withdrawn hub ids and their mirrors, the record of what a run loaded
    methods/        the generation methods, one module each behind one interface (each names itself in
                    tables, and owns its parameters, presets and rows of the paper's Table 1)
    adaptation      DataDream's LoRA on SD's text encoder and UNet attention (dset / cls)
    diffusion       the latent-diffusion training step (DataDream's LoRA, DA-Fusion's textual inversion)
    synthesis       the engine: N images per class, one seeded generator per image, resumable
    catalog         the generated images as the manifests list them (read by everything downstream)
    classification  CLIP + LoRA on real, synthetic, or both (lambda-weighted), selected on val
    augmentation    the classifier's training augmentation (the authors' list), run on the device
    fid             per-class FID / KID between synthetic and real images
    ablations       Fig. 5: images per class and real shots
    figures         Fig. 3, Fig. 4, Fig. 5 and a Table-1-style table, from result files only
    results         Table 1 and the figures rebuilt from many runs, beside the paper's numbers
    stages          the stage graph: what each stage reads, its parts, outputs, damage checks, notebook, function
    runs, locks     the run folder: recorded parameters, stage markers, one writer
    files           files written whole or not at all (temporary file + rename)
    environment     the software and machine each process of a run ran in; resumes under others refused
    pipeline        `python -m datadream_lib.pipeline PARAMS.yaml`: the notebooks, in order (in_process: the
                    stages' functions, for the library's tests)
"""

from datadream_lib.errors import DataDreamError

PROJECT = "datadream"  # the project's name: its package, W&B project, MLflow experiment, cache folder

__all__ = ["DataDreamError", "PROJECT"]
__version__ = "0.1.0"
