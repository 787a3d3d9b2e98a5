"""The launcher: a grid cut into units of one-GPU work, run on two fake GPUs of this machine and on a
real one-node SLURM (Debian's slurm-wlm, started by .ci/run), killed and preempted midway, and ending
with every image, adapter and metric equal to one uninterrupted process."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import slow_fixture, small_values

from datadream_lib import catalog, launch, params, runs

ROOT = runs.project_root()
def _overrides(root, toy_root):
    """A small grid (the 'smoke' size): DataDream-cls (class shards of its adapters), one classifier
    setting; 6 images per class at the demo's 20 steps, so that a kill lands midway through synthesis."""
    return small_values("datadream", variant="cls", images_per_class=6, ablation_images_per_class=[6], num_inference_steps=20,
                        clf_settings=["synthetic_real"], stages=["adaptation", "synthesis", "classification"],
                        clf_epochs=1, clf_warmup_epochs=0, runs_root=str(root), data_root=str(toy_root))


def _env():
    """The units' environment: one torch thread each (two processes on two cores; images are equal
    across processes at a fixed thread count, so the reference is made with one too)."""
    from datadream_lib import locks

    return {**{k: v for k, v in os.environ.items() if k != locks.ENV}, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@slow_fixture(scope="module")
def reference(tmp_path_factory, toy_root):
    """The same run made by one uninterrupted process."""
    root = tmp_path_factory.mktemp("reference")
    args = [sys.executable, "-m", "datadream_lib.pipeline", "params/demo.yaml"]
    for key, value in _overrides(root, toy_root).items():
        args += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, env=_env())
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "demo"


def _outputs(folder: Path) -> dict:
    """What must be equal: every image's bytes, every manifest row's plan, every adapter's weights,
    every metric (timings aside)."""
    out = {}
    images = folder / "synthetic" / "datadream"
    for row in catalog.read_manifest(images):
        out[f"image {row['path']}"] = (images / row["path"]).read_bytes()
        out[f"row {row['path']}"] = {k: v for k, v in row.items()
                                     if k not in ("environment", "batch_size", "compiled", "torch_threads")}
    for weights in sorted((folder / "adaptation").rglob("*.safetensors")):
        out[f"adapter {weights.relative_to(folder)}"] = weights.read_bytes()
    for metrics in sorted((folder / "classification").glob("*/metrics.json")):
        m = json.loads(metrics.read_text())
        out[f"metrics {metrics.parent.name}"] = {k: m[k] for k in ("top1", "per_class", "val_top1", "best_epoch")} | {
            "losses": [h["losses"] for h in m["history"]]}
    return out


def test_a_grid_is_cut_into_units_that_are_pipeline_commands_with_selectors(tmp_path, toy_root):
    grid = {**_overrides(tmp_path / "runs", toy_root), "clf_settings": ["real_finetune", "synthetic_real"],
            "stages": ["adaptation", "synthesis", "classification", "fid"]}
    units = launch.plan_units(["params/demo.yaml"], grid, shards=2)
    kinds = [(u.stage, u.part) for u in units]
    assert kinds == [("adaptation", "shard-000-of-002"), ("adaptation", "shard-001-of-002"),
                     ("synthesis", "shard-000-of-002"), ("synthesis", "shard-001-of-002"),
                     ("classification", "real_finetune"), ("classification", "synthetic_real"), ("fid", ""), ("collect", "")]
    assert units[0].args[1] == "params/demo.yaml"
    by_id = {u.id: u for u in units}
    assert set(by_id["demo/synthesis/shard-001-of-002"].after) == {"demo/adaptation/shard-000-of-002", "demo/adaptation/shard-001-of-002"}
    assert by_id["demo/classification/real_finetune"].after == ()  # no images read, and all four share the run
    assert set(by_id["demo/classification/synthetic_real"].after) == {u.id for u in units if u.stage == "synthesis"}

    whole = params.load_file("params/demo.yaml", grid)
    for unit in units[:-1]:  # each is the pipeline command; its selectors never change the run's identity
        module, file, *words = shlex.split(unit.shell())[2:]
        assert module == "datadream_lib.pipeline" and words[::2] == ["--set"] * (len(words) // 2)
        p = params.load_file(file, params.parse_overrides(words[1::2]))
        assert p.identity() == whole.identity() and p.stages == [unit.stage]
    dset = launch.plan_units(["params/demo.yaml"], {**grid, "variant": "dset"}, shards=2)
    assert [u.part for u in dset if u.stage == "adaptation"] == [""]  # one adapter for the set: one unit
    fig5 = launch.plan_units(["params/demo.yaml"], {**grid, "stages": ["adaptation", "synthesis", "classification", "ablations"],
                                                    "ablation_images_per_class": [3, 6], "ablation_shots": [1, 4]})
    cells = [u for u in fig5 if u.stage == "ablations"]
    assert [u.part for u in cells] == ["n3", "k1", ""]  # a unit per cell of its own, then the table of them all
    assert {cells[0].id, cells[1].id} <= set(cells[-1].after) and "ablation_select=[\"k1\"]" in cells[1].shell()


def _unit_params(unit):
    module, file, *words = shlex.split(unit.shell())[2:]
    return params.load_file(file, params.parse_overrides(words[1::2]))


@pytest.mark.parametrize("shards", [1, 2])
def test_the_launcher_waits_for_what_the_pipeline_says_a_stage_reads(tmp_path, toy_root, shards):
    """One graph: for every method, every unit waits for all units of each stage the pipeline says it
    reads (`pipeline.reads`, what a plan must hold), and a unit that holds its whole run waits for
    every earlier unit of it (they cannot run side by side)."""
    from datadream_lib import methods, pipeline

    for method in methods.METHODS:
        grid = {"runs_root": str(tmp_path / "runs"), "data_root": str(toy_root), "synth_method": method, "run_name": method,
                "clf_settings": ["real_finetune", "synthetic"], "ablation_settings": ["synthetic"],
                "ablation_images_per_class": [3, 6], "ablation_shots": [1, 4],
                "stages": ["adaptation", "synthesis", "classification", "fid", "ablations"]}
        units = [u for u in launch.plan_units(["params/demo.yaml"], grid, shards=shards) if u.stage != "collect"]
        for index, unit in enumerate(units):
            p = _unit_params(unit)
            for need in pipeline.reads(p, unit.stage):
                needed = {u.id for u in units if u.stage == need}
                assert needed and needed <= set(unit.after), (method, unit.id, need, unit.after)
            if unit.part == "":  # the whole stage: the run folder exclusively
                assert set(unit.after) == {u.id for u in units[:index]}, (method, unit.id)
            assert set(unit.after) <= {u.id for u in units[:index]}  # only ever on an earlier unit


def test_a_grid_whose_runs_would_share_a_folder_is_refused_before_anything(tmp_path, toy_root, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: demo\nrun_name: same\nseeds: [0, 1]\n")
    other = tmp_path / "other.yaml"
    other.write_text("base: demo\nrun_name: same\nseed: 5\n")
    (tmp_path / "one.yaml").write_text("base: demo\nrun_name: same\nseed: 0\n")
    code = launch.main(["slurm", str(tmp_path / "one.yaml"), str(other), "--dry-run", "--set", f"runs_root={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and "would share the run folder" in err and "(seed)" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()
    assert launch.main(["plan", str(grid)]) == 2 and "same for every seed" in capsys.readouterr().err


def test_sbatch_scripts_are_readable_arrays_with_requeue_and_quoted_commands(tmp_path, toy_root):
    name = "x;$(touch P)`touch Q`"
    units = launch.plan_units(["params/demo.yaml"], {**_overrides(tmp_path / "runs", toy_root), "run_name": name}, shards=2)
    ids = launch.submit_slurm(units, {"gpus": 1, "partition": "low", "time": "02:00:00", "sbatch": ["--qos=normal"]},
                              dry_run=True)
    assert list(ids) == ["adaptation", "synthesis", "classification", "collect"]
    scripts = sorted((tmp_path / "runs" / ".launch" / "slurm").glob("*/*.sbatch"))
    synthesis = next(s for s in scripts if s.name == "synthesis.sbatch").read_text()
    for line in ("#SBATCH --array=0-1", "#SBATCH --requeue", "#SBATCH --open-mode=append", "#SBATCH --gres=gpu:1",
                 "#SBATCH --partition=low", "#SBATCH --time=02:00:00", "#SBATCH --qos=normal",
                 "#SBATCH --dependency=afterok:<adaptation job id>", "#SBATCH --kill-on-invalid-dep=yes",
                 f"#SBATCH --signal=B:USR1@{launch.REQUEUE_SIGNAL_SECONDS}", 'scontrol requeue "$job"'):
        assert line in synthesis, line
    # the run name reaches the script only quoted: bash reads the array back as the exact commands
    listed = subprocess.run(["bash", "-c", synthesis.split("cd ")[0] + 'printf "%s\\n" "${UNITS[@]}"'],
                            capture_output=True, text=True, cwd=tmp_path)
    assert listed.stdout.splitlines() == [u.shell(sys.executable) for u in units if u.stage == "synthesis"]
    assert not (tmp_path / "P").exists() and not (tmp_path / "Q").exists()


def test_local_backend_on_two_fake_gpus_survives_a_kill_and_equals_one_process(tmp_path, toy_root, reference):
    root = tmp_path / "runs"
    args = [sys.executable, "-m", "datadream_lib.launch", "local", "params/demo.yaml", "--gpus", "0,1", "--shards", "2"]
    for key, value in {**_overrides(root, toy_root), "stages": ["adaptation", "synthesis"]}.items():  # (SLURM: all)
        args += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    mark = f"DATADREAM_TEST_MARK={tmp_path}"  # every process the launch starts inherits it, notebook kernels too
    first = subprocess.Popen(args, cwd=ROOT, env={**_env(), "DATADREAM_TEST_MARK": str(tmp_path)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    manifests = root / "demo" / "synthetic" / "datadream"
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None:  # kill -9 the whole launch midway through synthesis
        if sum(len(catalog.read_jsonl(m)) for m in manifests.glob("manifest-*.jsonl")) >= 3:
            break
        time.sleep(0.2)
    for pid in [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]:  # kill -9 all of it, as a node
        try:                                                                      # failure would (kernels run in
            if mark.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):  # sessions of their own)
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    first.wait()
    assert not (root / "demo" / "stages" / "synthesis.json").exists()
    again = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "collect: started" in again.stdout
    notebooks = sorted(p.name for p in (root / "demo" / "notebooks").glob("*.ipynb"))
    assert {"02_synthesis.shard-000-of-002.ipynb", "02_synthesis.shard-001-of-002.ipynb",
            "01_adaptation.shard-000-of-002.ipynb", "01_adaptation.shard-001-of-002.ipynb"} <= set(notebooks)
    ours, theirs = _outputs(root / "demo"), _outputs(reference)
    assert ours == {k: v for k, v in theirs.items() if not k.startswith("metrics")}  # images, rows, adapters
    records = [json.loads(p.read_text()) for p in (root / ".launch" / "units").glob("*.json")]
    assert {r["gpu"] for r in records if "gpu" in r} == {"0", "1"}  # one process per GPU
    out = subprocess.run([sys.executable, "-m", "datadream_lib.launch", "status", str(root)], cwd=ROOT, capture_output=True,
                         text=True, env=_env())
    assert out.returncode == 0 and "synthesis" in out.stdout and "done" in out.stdout
    assert "images: 24 of 24" in out.stdout and "gpu_hours" in out.stdout


def _slurm_ready() -> str:
    if not shutil.which("sbatch") or not os.environ.get("SLURM_CONF"):
        return "no SLURM here (CI starts one: source .ci/slurm.sh start)"
    probe = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return "" if probe.returncode == 0 and "idle" in probe.stdout else f"SLURM is not idle: {probe.stdout} {probe.stderr}"


@pytest.fixture
def slurm():
    reason = _slurm_ready()
    if reason:
        if os.environ.get("DATADREAM_REQUIRE_SLURM"):
            pytest.fail(f"CI must run the SLURM tests: {reason}")
        pytest.skip(reason)
    yield
    subprocess.run(["scancel", "--user", os.environ.get("USER", "root")], capture_output=True)


def _squeue() -> list[tuple[str, str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %P %T"], capture_output=True, text=True).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


def test_slurm_runs_the_grid_and_a_preempted_synthesis_is_requeued_and_ends_identical(tmp_path, toy_root, reference, slurm,
                                                                                     monkeypatch):
    for name, value in _env().items():  # what sbatch passes on to the tasks
        monkeypatch.setenv(name, value)
    root = tmp_path / "runs"
    overrides = _overrides(root, toy_root)
    units = launch.plan_units(["params/demo.yaml"], overrides, shards=2)
    ids = launch.submit_slurm(units, {"gpus": 1, "partition": "low"})
    assert set(ids) == {"adaptation", "synthesis", "classification", "collect"}
    synthesis = [u for u in units if u.stage == "synthesis"]
    deadline, preempted = time.time() + 600, False
    while time.time() < deadline:
        running = [u for u in synthesis if launch.read_record(u).get("state") == "running"]
        made = sum(len(catalog.read_jsonl(m)) for m in (root / "demo" / "synthetic" / "datadream").glob("manifest-*.jsonl"))
        if running and made >= 2 and not preempted:  # a higher partition takes both GPUs: the shards are requeued
            subprocess.run(["sbatch", "--partition=high", "--gres=gpu:2", "--job-name=preemptor", "--output=/dev/null",
                            "--wrap", "sleep 3"], check=True, capture_output=True)
            preempted = True
        if preempted:  # requeued jobs wait 120 s by default: start them now
            for job, _, state in _squeue():
                if state == "PENDING" and job.startswith(ids["synthesis"]):
                    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)
        if all(launch.unit_done(u) for u in units):
            break
        if not _squeue() and time.time() > deadline - 590:  # nothing left in the queue, yet not done: failed
            break
        time.sleep(1)
    logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in (root / ".launch" / "logs").glob("*.log"))
    logs += Path(os.environ["SLURM_CONF"]).with_name("log").joinpath("slurmctld.log").read_text()[-3000:]
    assert all(launch.unit_done(u) for u in units), logs
    assert preempted
    requeued = [line for line in logs.splitlines() if "task" in line and "synthesis" in line]
    assert len(requeued) > 2, logs  # a synthesis task started more than once: it was requeued
    assert _outputs(root / "demo") == _outputs(reference)
    assert (root / "figures" / "table1.md").exists()


def test_files_that_name_one_run_with_the_same_parameters_are_planned_once_with_their_stages_together():
    """README's `launch slurm params/paper/table1.yaml params/paper/fig5.yaml`: FGVC Aircraft's Table 1
    runs and Fig. 5's share their run folders on purpose; they are one run per seed, with Fig. 5's
    ablations added."""
    files = ["params/paper/table1.yaml", "params/paper/fig5.yaml"]
    units = launch.plan_units(files, {"dataset": "fgvc_aircraft", "method": "dset"})
    runs_planned = sorted({u.run for u in units if u.run})
    assert runs_planned == [f"fgvc_aircraft_dset_16shot_seed{s}" for s in (0, 1, 2)]
    ids = [u.id for u in units]
    assert len(ids) == len(set(ids))  # every unit once
    seed0 = [u for u in units if u.run == runs_planned[0]]
    assert [u.stage for u in seed0].count("adaptation") == 1 and any(u.stage == "ablations" for u in seed0)
    assert all("--set dataset=fgvc_aircraft" in u.shell("python") and "--set method=dset" in u.shell("python")
               for u in seed0)  # a unit names its cell of the grid
    assert launch.plan_units(files[::-1], {"dataset": "fgvc_aircraft", "method": "dset"}) == units  # whatever the order
    every = {u.run for u in launch.plan_units(files) if u.run}
    assert len(every) == 10 * 6 * 3  # ten datasets, six methods, three seeds; Fig. 5's runs among them


def test_status_says_planned_and_includes_runs_made_without_the_launcher(tmp_path, toy_root, capsys):
    """A dry run records nothing; a launched plan shows as "planned" until it starts; a run made with
    the pipeline alone shows beside it; the last line adds up GPU-hours."""
    from datadream_lib import splits

    root = tmp_path / "runs"
    common = ["--set", f"runs_root={root}", "--set", f"data_root={toy_root}"]
    assert launch.main(["slurm", "params/demo.yaml", *common, "--set", "run_name=grid", "--dry-run"]) == 0
    assert not (root / launch.LAUNCH_DIR / launch.PLAN_FILE).exists()  # nothing for status to show as work to do
    launch.save_plan(launch.plan_units(["params/demo.yaml"], params.parse_overrides(common[1::2] + ["run_name=grid"])))
    splits.start_run(params.from_dict({"base": "demo", "runs_root": str(root), "data_root": str(toy_root),
                                       "run_name": "by_hand"}))  # a run folder the launcher never saw
    capsys.readouterr()
    assert launch.main(["status", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    grid = [line for line in lines if line.startswith("grid ")]
    assert grid and all(" planned (0 of " in line for line in grid), lines
    assert any(line.startswith("by_hand ") and "gpu_hours: 0.0" in line for line in lines), lines
    assert "waiting" not in "\n".join(lines)
    assert lines[-1].startswith("2 run(s); GPU-hours so far: 0.000")
