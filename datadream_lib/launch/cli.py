"""The command line: `python -m datadream_lib.launch plan|local|slurm|status` (the package's docstring)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from datadream_lib import params, runs
from datadream_lib.errors import DataDreamError
from datadream_lib.launch.local import run_local, visible_gpus
from datadream_lib.launch.plan import units_of
from datadream_lib.launch.records import save_plan
from datadream_lib.launch.slurm import RESOURCES, submit_slurm
from datadream_lib.launch.status import print_status


def main(argv=None) -> int:

    parser = argparse.ArgumentParser(prog="python -m datadream_lib.launch", description=sys.modules["datadream_lib.launch"].__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("plan", "local", "slurm", "status"):
        command = sub.add_parser(name)
        command.add_argument("params", nargs="+", help="parameter files (a grid), or for status a runs_root")
        command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        command.add_argument("--shards", type=int, default=1, help="synthesis shards (and class shards of a per-class preparation) per run")
        if name == "local":
            command.add_argument("--gpus", default="all", help="all, or a list such as 0,1,3")
        if name == "slurm":
            command.add_argument("--dry-run", action="store_true", help="write the sbatch scripts, submit nothing")
            command.add_argument("--profile", type=Path, help="a YAML file of the resources below (a cluster profile)")
            command.add_argument("--partition")
            command.add_argument("--time", help="per task, e.g. 1-00:00:00 (a task requeues itself before it)")
            command.add_argument("--gpus", type=int, default=None, help="GPUs per task (default 1)")
            command.add_argument("--cpus-per-task", dest="cpus_per_task", type=int)
            command.add_argument("--mem")
            command.add_argument("--account")
            command.add_argument("--sbatch", action="append", help="an extra #SBATCH line, e.g. --sbatch=--qos=high")
    args = parser.parse_args(argv)
    try:
        if args.shards < 1:
            raise DataDreamError(f"--shards {args.shards} must be at least 1.")
        units = units_of(args.params, params.parse_overrides(args.overrides), args.shards)
        if not units:  # folders with nothing launched and no run folder in them
            if args.command == "status":
                print(f"[launch] no runs under {', '.join(args.params)} yet: nothing launched there, no run folder "
                      f"(a run folder holds {runs.PARAMS_FILE}).")
                return 0
            raise DataDreamError(f"no parameter files, run folders or launches in {args.params}.")
        if args.command == "plan":
            for unit in units:
                print(f"{unit.id}  (after {len(unit.after)})\n    {unit.shell()}")
            return 0
        if args.command == "status":
            print_status(units)
            return 0
        if args.command == "local":
            gpus = visible_gpus(args.gpus)
            save_plan(units)
            return 1 if run_local(units, gpus) else 0
        resources = yaml.safe_load(args.profile.read_text()) if args.profile else {}
        if not isinstance(resources, dict) or set(resources) - set(RESOURCES):
            raise DataDreamError(f"--profile {args.profile}: a mapping of {list(RESOURCES)}.")
        resources = {"gpus": 1, **resources, **{k: getattr(args, k) for k in RESOURCES if getattr(args, k, None)}}
        if not args.dry_run:  # a dry run plans nothing that `status` should show
            save_plan(units)
        ids = submit_slurm(units, resources, args.dry_run)
        print(json.dumps(ids))
        return 0
    except DataDreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
