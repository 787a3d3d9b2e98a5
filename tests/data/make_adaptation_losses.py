"""Writes adaptation_losses.json: the per-step losses of the tiny demo adapters (dset, and cls for
every class), as the implementation of the commit named in the file computed them. The test
`test_adaptation_losses_match_the_recorded_implementation` compares today's training loop with it.
Run from the repository root: python tests/data/make_adaptation_losses.py"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datadream_lib import adaptation, datasets, params, splits  # noqa: E402

SETTINGS = {"dset": {"variant": "dset", "adapt_epochs": 2, "shots": 4},
            "cls": {"variant": "cls", "adapt_epochs": 3, "shots": 4}}


def losses(root: Path, settings: dict) -> dict:
    p = params.from_dict({"base": "demo", "runs_root": str(root / "runs"), "data_root": str(root / "data"),
                          "run_name": settings["variant"], **settings})
    run, split = splits.start_run(p)
    return {name: info["losses"] for name, info in adaptation.train_adapters(p, run, split, progress=False).items()}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        datasets.make_toy_dataset(Path(tmp) / "data")
        record = {"commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
                  "settings": SETTINGS, "losses": {k: losses(Path(tmp), s) for k, s in SETTINGS.items()}}
    out = Path(__file__).with_name("adaptation_losses.json")
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(out, json.dumps(record)[:400])
