"""The miniature results (issue 18): the toy world's demo over several seeds, each method a run of
params/toyworld.yaml, and the comparisons of `effects.COMPARISONS` per seed with their mean, spread
and minimum. The tests' margins (tests/test_toyworld.py) are set from what this measured.

    python benchmarks/toyworld_effects.py --seeds 0 1 2 --out benchmarks/results/toyworld_effects.json

About 2 minutes per seed and method on 2 CPU cores. Runs go under --runs-root (resumed if there).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datadream_lib import environment, models  # noqa: E402
from datadream_lib.toyworld import effects  # noqa: E402


def run_grid(seeds, runs_root: Path, extra: list[str]) -> dict[int, list[Path]]:
    folders = {}
    for seed in seeds:
        folders[seed] = []
        for method, settings in effects.EFFECT_RUNS.items():
            name = effects.effect_run_name(method, seed)
            started = time.time()
            command = [sys.executable, "-m", "datadream_lib.pipeline", *effects.effect_run_args(method, seed, runs_root, settings), *extra]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            print(f"{name}: {time.time() - started:.0f} s", flush=True)
            folders[seed].append(runs_root / name)
    return folders


def summarise(folders: dict[int, list[Path]]) -> dict:
    per_seed = {}
    for seed, runs in folders.items():
        per_seed[seed] = effects.seed_figures(runs)
    comparisons = {}
    for name, larger, smaller in effects.COMPARISONS:
        margins = [per_seed[s][larger] - per_seed[s][smaller] for s in per_seed]
        comparisons[name] = {"larger": larger, "smaller": smaller, "per_seed": [round(e, 4) for e in margins],
                             "mean": round(statistics.mean(margins), 4),
                             "std": round(statistics.stdev(margins), 4) if len(margins) > 1 else None,
                             "min": round(min(margins), 4), "holds_every_seed": all(e > 0 for e in margins)}
    return {"per_seed": {str(s): {k: round(v, 4) for k, v in f.items()} for s, f in per_seed.items()},
            "comparisons": comparisons}


def runs_written_at(runs_root: Path) -> list[str]:
    """The commits of every process that wrote to the runs (a resumed run adds the resuming one's)."""
    return sorted({json.loads(f.read_text()).get("git_commit") or "unknown" for f in runs_root.glob("*/environments/*.json")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-root", default=str(ROOT / "build" / "toyworld_effects"))
    parser.add_argument("--out", help="write the JSON here")
    parser.add_argument("--set", action="append", default=[], help="a further parameter for every run (NAME=VALUE)")
    args = parser.parse_args()
    started = time.time()
    env = environment.describe(ROOT)  # the tree the runs start from (edits made while they run do not count)
    extra = [a for s in args.set for a in ("--set", s)]
    summary = summarise(run_grid(args.seeds, Path(args.runs_root), extra))
    report = {"what": "toy world demo (params/toyworld.yaml) per seed and method; effects = larger - smaller",
              "date": time.strftime("%Y-%m-%d"), "commit": env["git_commit"], "git_dirty": env["git_dirty"],
              "machine": f"{platform.machine()}, {env['cpu_count']} CPUs, torch threads {env['torch_threads']}, no GPU",
              "toy_weights_manifest_sha256": models.toy_manifest_digest(),
              "runs_written_at": runs_written_at(Path(args.runs_root)),
              "seeds": args.seeds, "extra": args.set, "minutes": round((time.time() - started) / 60, 1), **summary}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
