"""The toy world: a generated "internet" of captioned images, tiny Stable Diffusion and CLIP models
pretrained on it on a CPU, and a few-shot target whose look that world lacks, so that DataDream's
effect can be measured without a GPU (docs/toyworld.md).

    world      draws the world's images and captions, and the target's images
    pretrain   trains the world's models: `python -m datadream_lib.toyworld.pretrain`
    effects    the runs the miniature results are made of, their figures and comparisons
"""
