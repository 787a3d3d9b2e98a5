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

import torch

from datadream_lib.methods.stable_diffusion import StableDiffusion, first_timestep, source_image

STRENGTH_BY_SHOTS = {16: 0.15, 8: 0.20, 4: 0.35, 2: 0.40, 1: 0.50}


def strength_for(shots: int) -> float:
    return STRENGTH_BY_SHOTS[max(k for k in STRENGTH_BY_SHOTS if k <= shots)]


class IsSynth(StableDiffusion):
    name = "issynth"
    columns = ("prompt", "source_shot", "source_image", "strength", "first_timestep")
    source_fit = "crop"  # the authors resize the shot, no bars (see stable_diffusion.source_image)

    @classmethod
    def defaults(cls, shots: int) -> dict:
        return {"scheduler": "pndm", "num_inference_steps": 50, "guidance_scale": 3.0, "strength": strength_for(shots)}

    @classmethod
    def label(cls, p) -> str:
        """"IsSynth", or with the strength where it is not the authors' value for the run's K (the
        strength sweep's runs then stand beside each other in Table 1)."""
        return "IsSynth" if p.strength == strength_for(p.shots) else f"IsSynth, strength {p.strength:g}"

    def shot(self, job) -> tuple[int, str]:
        """The source shot of an image: index mod K of its class's shots."""
        k = job.index % self.p.shots
        return k, self.split.shot_order[job.class_index][k]

    def plan(self, job) -> dict:
        k, path = self.shot(job)
        return {"prompt": self.split.prompts()[job.class_index], "source_shot": k, "source_image": path,
                "strength": self.p.strength}

    def load(self, images: int = 0, batch_size: int | None = None) -> None:
        self._load(images, img2img=True)
        self.start = first_timestep(self.pipe, self.p.num_inference_steps, self.p.strength)

    def describe(self, class_index: int) -> dict:
        return {**super().describe(class_index), "first_timestep": self.start}

    @torch.no_grad()
    def img2img(self, source_paths: list[str], prompts: list[str], seeds: list[int]):
        """One batch: each real shot (a path) noised and denoised with its prompt, from its seed."""
        p = self.p
        sources = [source_image(path, p.resolution, self.source_fit) for path in source_paths]
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]  # CPU: the same noise on any device
        return self.pipe(prompts, image=sources, strength=p.strength, num_inference_steps=p.num_inference_steps,
                         guidance_scale=p.guidance_scale, generator=generators, output_type="pil").images

    def generate(self, jobs: list) -> list[tuple]:
        images = self.img2img([job.plan["source_image"] for job in jobs], [job.plan["prompt"] for job in jobs],
                              [job.seed for job in jobs])
        return [(image, {}) for image in images]
