"""DataDream (the paper): text-to-image from the class prompt with the run's LoRA adapter.

Preparation: the adapters (`adaptation.py`: one for the dataset, `dset`, or one per class, `cls`).
Generation: PNDM, 50 steps, guidance 2.0 (hyperparameters.md section 2); the dset adapter is
loaded once, a cls run loads each class's own before its images. With `synth_fuse_lora` (the
default) the adapter is fused into the attention weights (no LoRA branch left to run); the next
class's adapter starts from an exact copy of the base weights, so fusing never makes an image
depend on the classes generated before it. Fused and unfused images differ by floating-point
roundoff only; each manifest row says which (`fused`).
"""

from __future__ import annotations

import pandas as pd
import torch

from datadream_lib import adaptation
from datadream_lib.errors import DataDreamError
from datadream_lib.methods.stable_diffusion import StableDiffusion, refresh_fused_qkv


class DataDream(StableDiffusion):
    name = "datadream"
    prepares = True
    columns = ("prompt", "adapter")

    @classmethod
    def label(cls, p) -> str:
        return f"DataDream-{p.variant}"

    def prepare(self, progress: bool = True) -> pd.DataFrame:
        summary = adaptation.train_adapters(self.p, self.run, self.split, progress)
        return pd.DataFrame(summary).T.drop(columns="losses")

    def preparation_damage(self) -> list[str]:
        return adaptation.damaged_adapters(self.p, self.run, self.split)

    def _folder(self, class_index: int):
        return adaptation.adapter_folder(self.p, self.run, class_index, self.split)

    def describe(self, class_index: int) -> dict:
        return {**super().describe(class_index), "adapter": str(self._folder(class_index).relative_to(self.run.dir)),
                "fused": self.p.synth_fuse_lora}

    def fuses_qkv(self) -> bool:
        return self.p.synth_fuse_qkv and self.p.synth_fuse_lora  # an unfused LoRA runs on q, k, v apart

    def load(self, images: int = 0, batch_size: int | None = None) -> None:
        super().load(images if self.p.synth_fuse_lora else 0)  # unfused, each class's LoRA layers would recompile
        self._loaded = None
        self._base = {}  # the attention weights an adapter is fused into, as the model has them

    def _targets(self):
        """(module, parameter name, parameter) of every weight and bias the adapters touch."""
        for module, targets in ((self.pipe.unet, adaptation.UNET_TARGETS), (self.pipe.text_encoder, adaptation.TEXT_TARGETS)):
            for name, param in module.named_parameters():
                if any(f".{target}." in f".{name}" for target in targets):
                    yield module, name, param

    def begin_class(self, class_index: int) -> None:
        folder = self._folder(class_index)
        if self._loaded == folder:
            return
        damage = adaptation.adapter_damage(folder)  # the full checksum, once per adapter loaded
        if damage:
            raise DataDreamError(f"adapter {folder} is damaged ({damage}); run the adaptation stage again: it retrains it.")
        fuse = self.p.synth_fuse_lora
        if self._loaded is not None and not fuse:
            self.pipe.unload_lora_weights()
        if fuse:
            with torch.no_grad():
                if self._base:  # the previous class's delta is in the weights: put the base back, bit for bit
                    for module, name, param in self._targets():
                        param.copy_(self._base[(id(module), name)])
                else:
                    self._base = {(id(module), name): param.detach().clone() for module, name, param in self._targets()}
        self.pipe.load_lora_weights(str(folder))
        if fuse:
            self.pipe.fuse_lora()
            self.pipe.unload_lora_weights()  # the LoRA layers go, the fused delta stays: the modules are the base ones
            refresh_fused_qkv(self.pipe.unet)
        self._loaded = folder
