"""One node, N GPUs: the units as processes, one per GPU, each as soon as what it waits for is done."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Optional

from datadream_lib import locks, runs
from datadream_lib.errors import DataDreamError
from datadream_lib.launch.records import last_line, unit_done, write_record
from datadream_lib.launch.unit import STAGE_ORDER, Unit


def visible_gpus(spec: str) -> list[str]:
    """`all` (every GPU torch sees, or CUDA_VISIBLE_DEVICES's) or a list such as `0,1,3`."""
    if spec != "all":
        return [g.strip() for g in spec.split(",") if g.strip()]
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g]
    import torch

    count = torch.cuda.device_count()
    if not count:
        raise DataDreamError("--gpus all: no CUDA GPU is visible; name them (--gpus 0,1), or run on a GPU node.")
    return [str(i) for i in range(count)]


def run_local(units: list[Unit], gpus: list[str], poll: float = 0.5, env: Optional[dict] = None) -> int:
    """Run the units, one process per GPU (`CUDA_VISIBLE_DEVICES`), each as soon as what it waits for
    is done, longest first. A unit already done is skipped; a failed one stops its dependents (the
    others go on). Ctrl-C stops the running units (they resume when started again). Returns the
    number of units that failed or could not run."""
    done = {u.id for u in units if unit_done(u)}
    failed: set[str] = set()
    waiting = sorted((u for u in units if u.id not in done), key=lambda u: (-u.weight, STAGE_ORDER.index(u.stage)))
    free, running = list(gpus), {}
    try:
        while waiting or running:
            for unit in [u for u in waiting if set(u.after) & failed]:
                waiting.remove(unit)
                failed.add(unit.id)
                print(f"[launch] {unit.id}: not started, it waits for a unit that failed", flush=True)
            for unit in [u for u in waiting if set(u.after) <= done]:
                if not free:
                    break
                gpu = free.pop(0)
                waiting.remove(unit)
                unit.log.parent.mkdir(parents=True, exist_ok=True)
                handle = open(unit.log, "a")
                handle.write(f"\n[launch] {time.strftime('%Y-%m-%d %H:%M:%S')} {unit.shell()} (GPU {gpu})\n")
                handle.flush()
                child_env = {**(env or os.environ), "CUDA_VISIBLE_DEVICES": gpu}
                for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the node's cores shared out, unless set
                    child_env.setdefault(name, str(max(1, (os.cpu_count() or 1) // len(gpus))))
                child_env.pop(locks.ENV, None)
                proc = subprocess.Popen(unit.command(), stdout=handle, stderr=subprocess.STDOUT, env=child_env,
                                        cwd=runs.project_root())  # in the launcher's process group: Ctrl-C stops it too
                write_record(unit, state="running", host=os.uname().nodename, pid=proc.pid, gpu=gpu,
                             started=time.strftime("%Y-%m-%d %H:%M:%S"))
                running[proc] = (unit, gpu, handle)
                print(f"[launch] {unit.id}: started on GPU {gpu} (pid {proc.pid})", flush=True)
            if not running:
                if waiting:  # nothing can start: what they wait for is not in this plan and not done
                    for unit in waiting:
                        failed.add(unit.id)
                        print(f"[launch] {unit.id}: cannot start, it waits for {sorted(set(unit.after) - done)}")
                    waiting = []
                break
            time.sleep(poll)
            for proc in [proc for proc in running if proc.poll() is not None]:
                unit, gpu, handle = running.pop(proc)
                handle.close()
                free.append(gpu)
                write_record(unit, state="done" if proc.returncode == 0 else "failed", returncode=proc.returncode,
                             finished=time.strftime("%Y-%m-%d %H:%M:%S"), last_line=last_line(unit.log))
                (done if proc.returncode == 0 else failed).add(unit.id)
                print(f"[launch] {unit.id}: " + ("done" if proc.returncode == 0 else
                                                  f"failed (exit {proc.returncode}; {unit.log})"), flush=True)
    except KeyboardInterrupt:
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc, (unit, _, handle) in running.items():
            proc.wait()
            handle.close()
            write_record(unit, state="stopped", returncode=None, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        print("[launch] stopped; the same command goes on from the units' outputs", flush=True)
        raise
    return len(failed)
