"""`compile: true` against eager, on the tiny models (a CPU is enough; a few minutes of compiling).

    python benchmarks/compile_check.py [--out compile_check.json]

adaptation  the per-step losses of a compiled dset run against an eager one (same seed)
synthesis   a DataDream-cls run generated compiled against eager: the largest pixel difference,
            and how many graphs torch.compile built over all classes (the UNet and the VAE decoder:
            2 when changing the class's adapter never recompiles)

Too slow for the test suite; run it after touching the trainer, the fast path or the adapters'
fusing. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datadream_lib import adaptation, catalog, datasets, files, params, runs, splits, synthesis


def _start(root: Path, name: str, **values):
    p = params.from_dict({"base": "demo", "runs_root": str(root / "runs"), "data_root": str(root / "data"),
                          "run_name": name, **values})
    run, split = splits.start_run(p)
    return p, run, split


def adaptation_check(root: Path) -> dict:
    losses, seconds = {}, {}
    for compiled in (False, True):
        p, run, split = _start(root, f"adapt_{compiled}", adapt_epochs=2, shots=4, compile=compiled)
        started = time.time()
        losses[compiled] = adaptation.train_adapters(p, run, split, progress=False)["dset"]["losses"]
        seconds[compiled] = round(time.time() - started, 1)
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses[True], losses[False], strict=True))
    return {"steps": len(losses[True]), "max_relative_loss_difference": worst, "seconds": {"eager": seconds[False],
                                                                                          "compiled": seconds[True]}}


def synthesis_check(root: Path) -> dict:
    import torch._dynamo.utils

    common = {"variant": "cls", "adapt_epochs": 2, "adapt_lr": 5e-2, "images_per_class": 2, "num_inference_steps": 3,
              "synth_batch_size": 2, "ablation_images_per_class": [2]}
    p, eager, split = _start(root, "synth_eager", **common)
    adaptation.train_adapters(p, eager, split, progress=False)
    synthesis.generate(p, eager, split, progress=False)
    q = p.replace(compile=True)
    compiled = runs.open_run(q, eager.dir.parent / "synth_compiled")
    compiled.path("adaptation").symlink_to(eager.path("adaptation"), target_is_directory=True)
    torch._dynamo.utils.counters.clear()
    started = time.time()
    synthesis.generate(q, compiled, split, progress=False)
    seconds = round(time.time() - started, 1)
    rows = catalog.read_manifest(catalog.folder(compiled, "datadream"))
    worst = 0
    for row in rows:
        a, b = (np.asarray(Image.open(catalog.folder(r, "datadream") / row["path"]), dtype=int) for r in (eager, compiled))
        worst = max(worst, int(np.abs(a - b).max()))
    return {"classes": len(split.classnames), "images": len(rows), "compiled_rows": all(r["compiled"] for r in rows),
            "max_pixel_difference": worst, "graphs_compiled": int(torch._dynamo.utils.counters["stats"]["unique_graphs"]),
            "seconds_compiled": seconds}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        datasets.make_toy_dataset(root / "data")
        report = {"device": "cpu", "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                  "adaptation": adaptation_check(root), "synthesis": synthesis_check(root)}
    return files.report_json(report, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
