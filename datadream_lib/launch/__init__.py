"""Scale-out: a grid of runs as units of one-GPU work, on a SLURM cluster or on the GPUs of one node.

    python -m datadream_lib.launch plan   PARAMS... [--shards N] [--set KEY=VALUE ...]
    python -m datadream_lib.launch local  PARAMS... --gpus all|0,1,3 [--shards N]
    python -m datadream_lib.launch slurm  PARAMS... [--dry-run] [--partition P] [--time 1-00:00:00] ...
    python -m datadream_lib.launch status PARAMS...|RUNS_ROOT

PARAMS are parameter files, each one run, one per seed (`seeds`), or a grid of them
(`params/paper/table1.yaml`: datasets x methods x seeds; a unit names its cell, `--set dataset=eurosat
--set method=dset --set seed=0`). Each run is cut into units, the parts of its stages as the stage
table (`stages.py`) declares them, each the pipeline command with a selector, which can be copied
and run by hand:

    adaptation      one unit; a per-class preparation (cls adapters, DA-Fusion's tokens, DISEF's
                    captions) `--shards` units of classes (`shard_index` / `num_shards`)
    synthesis       `--shards` units (`shard_index` / `num_shards`)
    classification  one unit per setting (`clf_select`)
    fid             one unit
    ablations       one unit per cell of Fig. 5's grids (`ablation_select`: n<images>, k<shots>; a
                    shots cell is a sub-run: preparation, synthesis, classifiers), then one that
                    gathers the table
    collect         notebook 06 over the runs' roots (Table 1 and the figures), after every run

A unit waits for the units of its run whose outputs it reads (the stage table's `reads`: what the
pipeline also requires of a plan), and for those it cannot run beside, because one of the two holds
the whole run folder (`stages.waits_for`): a synthesis shard waits for the adaptation, a
`real_finetune` classifier for nothing it does not share a lock with, FID for every earlier unit.

Selectors never change a run's identity; every unit writes its own executed notebook
(`notebooks/02_synthesis.shard-001-of-004.ipynb`) and takes its own lock, so the units of one stage
run side by side. A unit resumes from its outputs, so one stopped by Ctrl-C, kill -9, a time limit or
a preemption goes on when started again. Units record their exit status and log under
`<runs_root>/.launch/` (never a run folder's name: those cannot be hidden), which `status` reads.

No DDP: every unit fits one GPU (LoRA at batch 8, CLIP at 64); the grid's width comes from runs,
shards and settings, not from splitting one model over GPUs.
"""

# The package's interface; its modules, layered: unit (what a unit is) <- records (what units did,
# what was launched) <- plan (files to units) <- local, slurm, status (run or show them) <- cli.
from datadream_lib.launch.unit import LAUNCH_DIR, STAGE_ORDER, Unit  # noqa: F401
from datadream_lib.launch.records import PLAN_FILE, read_plan_file, read_record, save_plan, unit_done, write_record  # noqa: F401
from datadream_lib.launch.plan import plan_units, units_of  # noqa: F401
from datadream_lib.launch.local import run_local, visible_gpus  # noqa: F401
from datadream_lib.launch.slurm import REQUEUE_SIGNAL_SECONDS, RESOURCES, sbatch_script, submit_slurm  # noqa: F401
from datadream_lib.launch.status import print_status, status_rows  # noqa: F401
from datadream_lib.launch.cli import main  # noqa: F401

__all__ = ["LAUNCH_DIR", "PLAN_FILE", "REQUEUE_SIGNAL_SECONDS", "RESOURCES", "STAGE_ORDER", "Unit", "main", "plan_units",
           "print_status", "read_plan_file", "read_record", "run_local", "save_plan", "sbatch_script", "status_rows",
           "submit_slurm", "unit_done", "units_of", "visible_gpus", "write_record"]
