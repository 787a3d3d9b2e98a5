"""DataDream (the paper): text-to-image from the class prompt with the run's LoRA adapter.

Preparation: the adapters (`adaptation.py`: one for the dataset, `dset`, or one per class, `cls`).
Generation: PNDM, 50 steps, guidance 2.0 (hyperparameters.md section 2); the dset adapter is
loaded once, a cls run loads each class's own before its images.
"""

from __future__ import annotations

import pandas as pd

from datadream_lib import adaptation
from datadream_lib.errors import DataDreamError
from datadream_lib.methods.stable_diffusion import StableDiffusion


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
        return {**super().describe(class_index), "adapter": str(self._folder(class_index).relative_to(self.run.dir))}

    def load(self) -> None:
        super().load()
        self._loaded = None

    def begin_class(self, class_index: int) -> None:
        folder = self._folder(class_index)
        if self._loaded == folder:
            return
        damage = adaptation.adapter_damage(folder)  # the full checksum, once per adapter loaded
        if damage:
            raise DataDreamError(f"adapter {folder} is damaged ({damage}); run the adaptation stage again: it retrains it.")
        if self._loaded is not None:
            self.pipe.unload_lora_weights()
        self.pipe.load_lora_weights(str(folder))
        self._loaded = folder
