"""IsSynth "Real Guidance" (He et al., ICLR 2023), as DataDream's Table 1 re-runs it on SD 2.1.

Each image starts from a real shot: the shot `index mod K` of its class, noised to the strength
of the run's K and denoised with the DataDream prompt (img2img), PNDM 50 steps, guidance 3.0. The
authors' strength by K (their `refer_img_iters` of GLIDE's 100 steps) is kept:

    K         16    8     4     2     1
    strength  0.15  0.20  0.35  0.40  0.50

so Fig. 5's shots ablation uses each K's own; another K takes the value of the largest K of the
table not above it (K 32 -> 0.15, K 3 -> 0.40). No preparation and no new weights. The authors'
classifier-side soft cross-entropy with a zero-shot teacher is the classifier option
`clf_teacher_weight` (off by default: Table 1 trained every method with the shared classifier).
"""

from __future__ import annotations

import dataclasses

from datadream_lib.methods.base import ClassifierOptions, Cost, Method
from datadream_lib.methods.stable_diffusion import Generator, Sampling, check_strength, check_weights
from datadream_lib.schema import field

STRENGTH_BY_SHOTS = {16: 0.15, 8: 0.20, 4: 0.35, 2: 0.40, 1: 0.50}


def strength_for(shots: int) -> float:
    return STRENGTH_BY_SHOTS[max(k for k in STRENGTH_BY_SHOTS if k <= shots)]


@dataclasses.dataclass(frozen=True)
class IsSynthParameters(Sampling):
    """IsSynth's group: PNDM 50, guidance 3.0, the strength by K, and its classifier option."""
    guidance_scale: float = field(3.0, "classifier-free guidance scale", min=0.0)
    strength: float = field(None, "how far the real shot is noised before denoising, in (0, 1] (default: by K, the IsSynth authors' table STRENGTH_BY_SHOTS)", by_shots=strength_for, check=check_strength)
    clf_teacher_weight: float = field(0.0, "IsSynth's classifier option: weight of a soft cross-entropy on the synthetic samples towards the frozen zero-shot CLIP (0 = off, as in Table 1; the authors: 0.5)", min=0.0)
    clf_teacher_temperature: float = field(2.0, "temperature of that soft cross-entropy (the authors: 2)", min=0.01)


def source_shot(job, shots: int) -> int:
    """The source shot of image `index`: index mod K of its class's shots."""
    return job.index % shots


class IsSynth(Method):
    name = "issynth"
    parameters = IsSynthParameters
    columns = ("prompt", "source_shot", "source_image", "strength", "first_timestep")
    source_fit = "crop"  # the authors resize the shot, no bars (see stable_diffusion.source_image)

    paper_table1 = {  # the paper's re-run on SD 2.1 (docs/methods.md, docs/hyperparameters.md §6)
        (None, "synthetic"): (7, (70.0, 95.7, 67.6, 71.3, 34.5, 92.1, 65.9, 72.2, 85.4, 90.0, 74.5)),
        (None, "synthetic_real"): (9, (73.9, 97.4, 81.6, 93.9, 64.8, 92.1, 88.5, 77.7, 86.0, 99.0, 85.5)),
    }

    @classmethod
    def variant(cls, p):
        """None, or the strength where it is not the authors' value for the run's K (the strength
        sweep's runs then stand beside each other in Table 1)."""
        return None if p.method.strength == strength_for(p.shots) else f"strength {p.method.strength:g}"

    @classmethod
    def display(cls, variant) -> str:
        return "IsSynth" if variant is None else f"IsSynth, {variant}"

    @classmethod
    def weights(cls, p):
        return [lambda: check_weights(p)]

    @classmethod
    def classifier_options(cls, p) -> ClassifierOptions:
        return ClassifierOptions(teacher_weight=p.method.clf_teacher_weight, teacher_temperature=p.method.clf_teacher_temperature)

    @classmethod
    def cost(cls, p, n_classes: int, images: int, **assumptions) -> Cost:
        return Generator(p, img2img=True).cost(n_classes, images)

    def plan(self, job) -> dict:
        k = source_shot(job, self.p.shots)
        return {"prompt": self.split.prompts()[job.class_index], "source_shot": k,
                "source_image": self.split.shot_order[job.class_index][k], "strength": self.p.method.strength}

    def load(self, images: int = 0, batch_size: int | None = None) -> None:
        self.sd = Generator(self.p, img2img=True, fuse_qkv=self.p.method.synth_fuse_qkv, source_fit=self.source_fit)
        self.sd.load(images)

    def describe(self, class_index: int) -> dict:
        return self.sd.describe()

    def generate(self, jobs: list) -> list[tuple]:
        strengths = [job.plan["strength"] for job in jobs]
        images = self.sd.img2img([job.plan["source_image"] for job in jobs], [job.plan["prompt"] for job in jobs],
                                 [job.seed for job in jobs], strengths)
        return [(image, {"first_timestep": self.sd.first_timestep(s)}) for image, s in zip(images, strengths)]
