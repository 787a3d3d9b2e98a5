"""Reliability: one writer per run folder, nothing written outside runs_root, every damaged state
repaired or named, and a one-line message (exit status 2) wherever a traceback used to be."""

import io
import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch
import yaml

from datadream_lib import adaptation, catalog, classification, files, locks, methods, params, pipeline, runs, splits, stages
from datadream_lib.errors import DataDreamError
from tests.conftest import run_pipeline_cli, run_pipeline_in_process, slow_fixture

ROOT = runs.project_root()


def _main(capsys, *args):
    code = pipeline.main(list(args))
    return code, capsys.readouterr().err


def _common(tmp_path, toy_root):
    return ["--set", f"runs_root={tmp_path / 'runs'}", "--set", f"data_root={toy_root}"]


# --- one writer per run folder -------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from datadream_lib import locks
    locks.lock_run(Path(sys.argv[1]), sys.argv[2] or None)
    print("holding", flush=True)
    sys.stdin.read()  # hold until the test closes stdin
""")


def _hold(folder, part=""):
    """A separate process holding `folder` (a part of it, if given) until .stdin is closed."""
    env = {k: v for k, v in os.environ.items() if k != locks.ENV}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), part],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def _try_lock(folder, part=""):
    env = {k: v for k, v in os.environ.items() if k != locks.ENV}
    code = "import sys; from pathlib import Path; from datadream_lib import locks\n" \
           "try:\n    locks.lock_run(Path(sys.argv[1]), sys.argv[2] or None)\n" \
           "except Exception as exc:\n    print(exc); sys.exit(2)"
    return subprocess.run([sys.executable, "-c", code, str(folder), part],
                          capture_output=True, text=True, cwd=ROOT, env=env)


def test_a_second_process_is_refused_while_the_first_holds_the_run(tmp_path, toy_root):
    folder = tmp_path / "runs" / "demo"
    folder.mkdir(parents=True)
    holder = _hold(folder)
    try:
        result = run_pipeline_cli("params/demo.yaml", *_common(tmp_path, toy_root))
        assert result.returncode == 2, result.stderr
        message = result.stderr.strip()
        assert message.count("\n") == 0 and "Traceback" not in message
        assert f"process {holder.pid}" in message and "in use" in message and str(folder / ".lock") in message
        assert not (folder / "params.yaml").exists() and not (folder / "split.json").exists()  # nothing written
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _try_lock(folder).returncode == 0  # released when the holder ended: no stale lock


def test_two_copies_of_the_same_command_one_runs_the_other_is_refused(tmp_path, toy_root):
    """The same pipeline command twice, as two shells would start it: the second stops at once."""
    args = [sys.executable, "-m", "datadream_lib.pipeline", "params/demo.yaml", *_common(tmp_path, toy_root),
            "--set", "stages=[adaptation]"]
    env = {k: v for k, v in os.environ.items() if k != locks.ENV}
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "runs" / "demo" / ".lock"
    deadline = time.time() + 120
    while not (lock.exists() and str(first.pid) in lock.read_text()) and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 2 and f"process {first.pid}" in second.stderr


def test_a_notebook_holds_its_run_from_its_first_cell_to_its_last(demo_run):
    """In JupyterLab, notebook 01's kernel stays alive after its last cell: notebook 02 (another
    kernel) must then be able to open the run."""
    p, run, split = demo_run()  # what a notebook's first cell does (pipeline.setup)
    refused = _try_lock(run.dir)
    assert refused.returncode == 2 and f"process {os.getpid()}" in refused.stdout
    methods.prepare(p, run, split, progress=False)
    assert pipeline.finish(run, "adaptation")  # the last cell
    assert _try_lock(run.dir).returncode == 0


def test_parts_work_side_by_side_but_a_part_twice_or_a_whole_run_beside_them_is_refused(tmp_path, toy_root):
    def part(**selectors):
        return runs.part_of(params.from_dict({"base": "demo", "data_root": str(toy_root), **selectors}))

    assert part() is None and part(shard_index=0, num_shards=1) is None and part(clf_select=list(params.Params().clf_settings)) is None
    shard0, shard1 = part(shard_index=0, num_shards=2), part(shard_index=1, num_shards=2)
    setting = part(clf_select=["synthetic"])
    folder = tmp_path / "run"
    folder.mkdir()
    holder = _hold(folder, shard0)
    try:
        assert _try_lock(folder, shard1).returncode == 0  # another shard: fine
        assert _try_lock(folder, setting).returncode == 0  # a classifier setting: fine
        again = _try_lock(folder, shard0)
        assert again.returncode == 2 and f"process {holder.pid}" in again.stdout
        whole = _try_lock(folder)
        assert whole.returncode == 2 and "parts of this run" in whole.stdout
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_manifest_never_counts_an_image_twice(tmp_path):
    rows = [{"class_index": 0, "index": i, "path": f"c/{i}.png"} for i in (0, 1)]
    (tmp_path / "manifest-000-of-001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + rows))
    (tmp_path / "manifest-000-of-002.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert sorted((r["class_index"], r["index"]) for r in catalog.read_manifest(tmp_path)) == [(0, 0), (0, 1)]
    # listed twice with different sizes (regenerated under another shard layout): the row matching the file wins
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "0.png").write_bytes(b"x" * 7)
    (tmp_path / "manifest-000-of-001.jsonl").write_text(json.dumps({**rows[0], "bytes": 7}) + "\n")
    (tmp_path / "manifest-001-of-002.jsonl").write_text(json.dumps({**rows[0], "bytes": 9}) + "\n")
    (tmp_path / "manifest-000-of-002.jsonl").unlink()
    assert [r["bytes"] for r in catalog.read_manifest(tmp_path)] == [7]


# --- nothing outside runs_root -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["..", ".", "../../escaped", "<tmp_path>/absolute_run", "a/b", ".hidden",
                                  "{seed.__class__}", "x{seed!r}"])
def test_run_name_cannot_leave_runs_root(tmp_path, toy_root, capsys, name):
    # the absolute name points inside this test's own folder, so a leftover elsewhere cannot decide the test
    name = name.replace("<tmp_path>", str(tmp_path))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), "--set", f'run_name="{name}"')
    assert code == 2 and f"run_name {name!r}" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written anywhere
    assert not (ROOT / "params.yaml").exists() and (ROOT / "notebooks" / "01_adaptation.ipynb").exists()
    assert not (tmp_path / "absolute_run").exists()


def test_run_name_braces_take_plain_parameter_values():
    p = params.from_dict({"base": "demo", "run_name": "toy_{variant}_k{shots}_seed{seed:02d}"})
    assert p.run_name == "toy_dset_k4_seed00"


# --- damaged states: repaired by a rerun, or refused before any work ----------------------------

KILLER = textwrap.dedent("""
    # Test hook (sitecustomize): kill -9 this process right after a stage writes its outputs-complete
    # marker, once per stage named by a flag file in $DATADREAM_TEST_KILL_FLAGS.
    import os, signal
    from pathlib import Path
    from datadream_lib import runs

    _real = runs.Run.outputs_complete

    def _outputs_complete(self, stage, **info):
        _real(self, stage, **info)
        flag = Path(os.environ["DATADREAM_TEST_KILL_FLAGS"]) / stage
        if flag.exists() and self.dir.name == "demo":
            flag.unlink()
            os.kill(os.getpid(), signal.SIGKILL)

    runs.Run.outputs_complete = _outputs_complete
""")

FIGURES = ("adaptation_loss.png", "fig3_real_vs_synthetic.png", "table1.md", "fig4_fid_histogram.png", "fig5_ablations.png")


@slow_fixture(scope="module")
def killed_run(tmp_path_factory, toy_root):
    """A demo run killed (SIGKILL) right after each stage's marker, rerun after every kill until done."""
    tmp = tmp_path_factory.mktemp("killed")
    hook, flags = tmp / "hook", tmp / "flags"
    hook.mkdir()
    flags.mkdir()
    (hook / "sitecustomize.py").write_text(KILLER)
    for stage in stages.NAMES:
        (flags / stage).touch()
    env = {**{k: v for k, v in os.environ.items() if k != locks.ENV}, "DATADREAM_TEST_KILL_FLAGS": str(flags),
           "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "datadream_lib.pipeline", "params/demo.yaml", "--set", f"runs_root={tmp / 'runs'}",
            "--set", f"data_root={toy_root}", "--set", "images_per_class=4", "--set", "ablation_images_per_class=[2, 4]",
            "--set", "ablation_shots=[4]", "--set", "clf_settings=[real_finetune, synthetic_real]"]
    attempts = []
    for _ in range(len(stages.NAMES) + 1):
        attempts.append(subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900))
        if attempts[-1].returncode == 0:
            break
    return tmp / "runs" / "demo", args, env, attempts, flags


def test_a_kill_right_after_each_stage_marker_still_ends_with_every_figure(killed_run):
    folder, _, _, attempts, flags = killed_run
    assert [a.returncode for a in attempts[:-1]] == [1] * len(stages.NAMES)  # killed once in each stage
    assert attempts[-1].returncode == 0, attempts[-1].stderr[-2000:]
    assert not list(flags.iterdir())
    for stage in stages.NAMES:
        assert (folder / "stages" / f"{stage}.json").exists()
        assert not (folder / "stages" / f"{stage}.pending.json").exists()
    for figure in FIGURES:
        assert (folder / "figures" / figure).stat().st_size > 0, figure


def test_a_deleted_or_truncated_image_and_a_zero_byte_adapter_are_repaired_bit_for_bit(killed_run):
    folder, args, env, _, _ = killed_run
    images = folder / "synthetic" / "datadream"
    rows = sorted(catalog.read_manifest(images), key=lambda r: (r["class_index"], r["index"]))
    reference = {r["path"]: (images / r["path"]).read_bytes() for r in rows}
    weights = folder / "adaptation" / "dset" / adaptation.LORA_FILE
    reference_adapter = weights.read_bytes()
    (images / rows[0]["path"]).unlink()
    damaged = images / rows[5]["path"]
    damaged.write_bytes(damaged.read_bytes()[:100])
    weights.write_bytes(b"")
    with pytest.raises(DataDreamError, match="missing or damaged"):  # a reader names the problem and the fix
        catalog.synthetic_items(runs.Run(folder), "datadream")
    rerun = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "adaptation: 1 output(s) missing or damaged" in rerun.stdout
    assert "synthesis: 2 output(s) missing or damaged" in rerun.stdout
    # the adapter is trained again in another process: the same bytes (seeded, canonical header)
    assert weights.read_bytes() == reference_adapter
    assert {r["path"]: (images / r["path"]).read_bytes() for r in catalog.read_manifest(images)} == reference
    assert len(catalog.read_manifest(images)) == len(rows)


def test_non_finite_parameters_are_refused_before_anything_is_written(tmp_path, toy_root, capsys):
    for override in ("adapt_lr=.inf", "guidance_scale=.nan", "clf_lr=-.inf"):
        code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), "--set", override)
        assert code == 2 and "finite" in err
    assert not (tmp_path / "runs").exists()


def test_training_stops_on_a_non_finite_loss_and_writes_nothing(demo_run):
    p, run, split = demo_run(adapt_lr=1e30, adapt_epochs=3, adapt_warmup_steps=0)
    with pytest.raises(DataDreamError, match="loss became"):
        adaptation.train_adapters(p, run, split, progress=False)
    assert not run.path("adaptation", "dset").exists()
    p, run, split = demo_run(run_name="classifier", clf_lr=1e30, clf_warmup_epochs=0)
    with pytest.raises(DataDreamError, match="loss became"):
        classification.classify(p, run, split, progress=False, settings=["real_finetune"])
    assert not run.path("classification", "real_finetune", "metrics.json").exists()


def test_a_damaged_adapter_is_retrained_on_resume(demo_run):
    p, run, split = demo_run(adapt_epochs=1)
    adaptation.train_adapters(p, run, split, progress=False)
    weights = run.path("adaptation", "dset", adaptation.LORA_FILE)
    good = weights.read_bytes()
    weights.write_bytes(good[:-10])
    assert adaptation.damaged_adapters(p, run, split)
    adaptation.train_adapters(p, run, split, progress=False)
    assert weights.read_bytes() == good and not adaptation.damaged_adapters(p, run, split)


@pytest.mark.parametrize("stages, missing", [("[classification, adaptation]", "synthesis"), ("[synthesis]", "adaptation"),
                                             ("[fid]", "synthesis")])
def test_the_stage_plan_is_checked_before_any_work(tmp_path, toy_root, capsys, stages, missing):
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), "--set", f"stages={stages}")
    assert code == 2 and f"{missing}, which is neither in the plan nor done" in err
    assert not (tmp_path / "runs").exists()


def test_files_written_atomically_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
            os.umask(mask)
            files.atomic_write_text(tmp_path / f"f{mask}", "x")
            assert stat.S_IMODE((tmp_path / f"f{mask}").stat().st_mode) == mode
    finally:
        os.umask(old)


def test_class_folders_colliding_after_cleaning_are_refused_and_hidden_ones_are_logged(tmp_path, toy_root, capsys):
    from PIL import Image

    root = tmp_path / "folder"
    for name in ("a_b", "a b", "...", "..x"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8)).save(root / name / f"{i}.png")
    p = params.from_dict({"base": "demo", "dataset": "imagefolder", "data_root": str(root), "shots": 1,
                          "ablation_shots": [1], "runs_root": str(tmp_path / "runs")})
    with pytest.raises(DataDreamError, match="'a b' and 'a_b' both become 'a b'"):
        splits.build_split(p)
    out = capsys.readouterr().out
    assert "skipping hidden folder" in out and f"{root / '...'}" in out and f"{root / '..x'}" in out


# --- one line where a traceback was -------------------------------------------------------------

def _one_line(code, err):
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_bad_device_params_file_and_override_are_one_line(tmp_path, toy_root, capsys):
    _one_line(*_main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), "--set", "device=tpu"))
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    _one_line(*_main(capsys, str(binary)))
    _one_line(*_main(capsys, str(tmp_path)))  # a folder
    _one_line(*_main(capsys, "params/demo.yaml", "--set", "shots=[4"))
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_runs_root_is_one_line(tmp_path, toy_root, capsys):
    a_file = tmp_path / "runs_file"
    a_file.write_text("not a folder")
    code, err = _main(capsys, "params/demo.yaml", "--set", f"runs_root={a_file}", "--set", f"data_root={toy_root}")
    _one_line(code, err)
    assert "is a file" in err
    if os.geteuid() != 0:  # root writes through permissions
        locked = tmp_path / "read_only"
        locked.mkdir(mode=0o500)
        code, err = _main(capsys, "params/demo.yaml", "--set", f"runs_root={locked}", "--set", f"data_root={toy_root}")
        _one_line(code, err)
        assert "not writable" in err


def test_an_os_error_while_writing_a_run_is_one_line(tmp_path, toy_root, capsys, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "runs" / "demo" / "params.yaml"))

    monkeypatch.setattr(runs, "atomic_write_text", full_disk)
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root))
    _one_line(code, err)
    assert "No space left on device" in err and "params.yaml" in err


def test_a_file_base_resolves_however_the_preset_is_passed(monkeypatch, tmp_path):
    """papermill -f FILE -p seed 0 injects a file's values, whose base names a file relative to it
    (`base: ../datasets/eurosat.yaml`, as under params/); the notebook still finds it, from any folder."""
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "eurosat.yaml").write_bytes((ROOT / "params" / "datasets" / "eurosat.yaml").read_bytes())
    (tmp_path / "paper").mkdir()
    preset = tmp_path / "paper" / "eurosat_run.yaml"
    preset.write_text("base: ../datasets/eurosat.yaml\nrun_name: eurosat_seed{seed}\nseeds: [0, 1]\n")
    injected = {**yaml.safe_load(preset.read_text()), "seed": 0}
    injected.pop("seeds")
    monkeypatch.chdir(ROOT / "notebooks")
    from_notebook = params.from_namespace(injected)
    assert from_notebook == params.load_runs(preset)[0] and from_notebook.dataset == "eurosat"


def test_a_grid_file_given_to_papermill_is_refused_naming_how_to_pick_one_run(monkeypatch):
    table1 = ROOT / "params" / "paper" / "table1.yaml"
    injected = {**yaml.safe_load(table1.read_text()), "seed": 0}
    with pytest.raises(DataDreamError, match="a grid of runs .*datadream_lib.params FILE --set dataset="):
        params.from_namespace(injected)


def test_duplicate_keys_are_refused(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("base: demo\nshots: 4\nseed: 1\nshots: 8\n")
    with pytest.raises(DataDreamError, match="'shots' is set twice"):
        params.load_runs(twice)


def test_a_refused_shard_leaves_nothing_behind(tmp_path, toy_root, capsys):
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), "--set", "num_shards=2")
    assert code == 2 and "Make every part of adaptation first" in err
    assert not (tmp_path / "runs").exists()


# --- Reliability II (issue 20): what the resume check used to miss, and bounds refused up front --------

@pytest.mark.parametrize("method, override", [("issynth", "strength=0"), ("disef", "strength=0.0"),
                                              ("issynth", "strength=1.5"), ("dafusion", "dafusion_strengths=[0.5, 0.0]")])
def test_an_img2img_strength_outside_0_1_is_refused_before_anything_is_written(tmp_path, toy_root, capsys, method, override):
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), "--set", f"synth_method={method}",
                      "--set", override)
    _one_line(code, err)
    assert "must lie in (0, 1]" in err and not (tmp_path / "runs").exists()


def test_an_adapter_corrupted_at_the_same_size_is_trained_again_by_the_resume_check(make_params):
    p = make_params(adapt_epochs=1, images_per_class=2, ablation_images_per_class=[2])
    run, split = splits.start_run(p)
    methods.prepare(p, run, split, progress=False)
    weights = run.path("adaptation", "dset", "pytorch_lora_weights.safetensors")
    good = weights.read_bytes()
    weights.write_bytes(good[:-16] + bytes(16))  # same size, other bytes: only the checksum sees it
    damaged = pipeline.damaged_outputs(p, run, split, "adaptation")
    assert len(damaged) == 1 and "checksum" in damaged[0]  # the rerun redoes the stage instead of skipping it
    methods.prepare(p, run, split, progress=False)
    assert weights.read_bytes() == good and pipeline.damaged_outputs(p, run, split, "adaptation") == []


def test_a_lost_or_torn_manifest_row_is_missing_work_and_is_made_again_identically(make_params):
    p = make_params(synth_method="stable_diffusion", images_per_class=3, ablation_images_per_class=[3],
                    num_inference_steps=3, synth_batch_size=3)
    run, split = splits.start_run(p)
    from datadream_lib import synthesis

    synthesis.generate(p, run, split, progress=False)
    folder = catalog.folder(run, "stable_diffusion")
    reference = {r["path"]: (folder / r["path"]).read_bytes() for r in catalog.read_manifest(folder)}
    manifest = folder / catalog.manifest_name(0, 1)
    lines = manifest.read_text().splitlines()
    lost = json.loads(lines[4])["path"]
    lines[4] = "not json at all"  # a row replaced by garbage
    lines[7] = lines[7][:20]  # a torn row in the middle
    manifest.write_text("\n".join(lines) + "\n")
    assert pipeline.damaged_outputs(p, run, split, "synthesis") != []
    assert any(lost in line and "not listed" in line for line in pipeline.damaged_outputs(p, run, split, "synthesis"))
    synthesis.generate(p, run, split, progress=False)
    assert pipeline.damaged_outputs(p, run, split, "synthesis") == []
    assert {r["path"]: (folder / r["path"]).read_bytes() for r in catalog.read_manifest(folder)} == reference


def test_an_absurd_images_per_class_is_refused_in_one_line_before_work(tmp_path, toy_root, capsys):
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), "--set", "images_per_class=10000000")
    _one_line(code, err)
    assert "images_per_class" in err and "100000" in err and not (tmp_path / "runs").exists()


def test_an_image_corrupted_at_the_same_size_is_seen_by_its_checksum_and_made_again_identically(make_params):
    p = make_params(synth_method="stable_diffusion", images_per_class=3, ablation_images_per_class=[3],
                    num_inference_steps=3, synth_batch_size=3)
    run, split = splits.start_run(p)
    from datadream_lib import synthesis

    synthesis.generate(p, run, split, progress=False)
    folder = catalog.folder(run, "stable_diffusion")
    rows = catalog.read_manifest(folder)
    assert all(r["sha256"] == catalog.file_sha256(folder / r["path"]) for r in rows)  # each row carries its checksum
    reference = {r["path"]: (folder / r["path"]).read_bytes() for r in rows}
    victim = folder / rows[2]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # same size, other bytes: a size check passes it
    victim.write_bytes(bytes(data))
    assert catalog.image_damage(folder, rows[2]) is None  # (the cheap size check alone would not see it)
    damaged = pipeline.damaged_outputs(p, run, split, "synthesis")
    assert len(damaged) == 1 and rows[2]["path"] in damaged[0] and "checksum" in damaged[0]
    synthesis.generate(p, run, split, progress=False)  # the rerun regenerates exactly that image
    assert pipeline.damaged_outputs(p, run, split, "synthesis") == []
    assert {r["path"]: (folder / r["path"]).read_bytes() for r in catalog.read_manifest(folder)} == reference


# --- damaged weights files: one line at preflight, exit status 2, nothing run or written ---------

class _Payload:
    """A pickle that would run code when loaded without weights_only."""

    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def _damaged(path, damage, tmp_path):
    import pickle

    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    else:  # a code-carrying pickle
        path.write_bytes(pickle.dumps({"state_dict": _Payload(tmp_path / "PWNED")}))
    return path


def _weights(path):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(path))
    return path


def _sd_folder(tmp_path):
    sd = tmp_path / "sd"
    (sd / "unet").mkdir(parents=True)
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                     "unet": ["diffusers", "UNet2DConditionModel"]}))
    (sd / "unet" / "config.json").write_text("{}")
    _weights(sd / "unet" / "diffusion_pytorch_model.safetensors")
    return sd


@pytest.mark.parametrize("damage", ["empty", "garbage", "pickle"])
@pytest.mark.parametrize("parameter", ["inception_weights", "clip_pretrained", "filter_pretrained"])
def test_a_damaged_weights_file_is_one_line_at_preflight(tmp_path, toy_root, capsys, parameter, damage):
    bad = _damaged(tmp_path / f"{parameter}.pt", damage, tmp_path)
    if parameter == "inception_weights":  # the tiny models, the real FID features
        extra = ["--set", "fid_features=inception", "--set", f"inception_weights={bad}"]
    else:
        llava = tmp_path / "llava"
        llava.mkdir()
        (llava / "config.json").write_text("{}")
        _weights(llava / "model.safetensors")
        extra = ["--set", "models=pretrained", "--set", "device=cpu", "--set", "local_files_only=true",
                 "--set", "fid_features=inception", "--set", "stages=[adaptation, synthesis, classification]",
                 "--set", f"sd_model={_sd_folder(tmp_path)}",
                 "--set", f"clip_pretrained={bad if parameter == 'clip_pretrained' else _weights(tmp_path / 'clip.safetensors')}"]
        if parameter == "filter_pretrained":
            extra += ["--set", "synth_method=disef", "--set", f"caption_model={llava}", "--set", f"filter_pretrained={bad}"]
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), *extra)
    _one_line(code, err)
    assert f"{parameter} '{bad}'" in err and ("empty" in err or "not a readable weights file" in err)
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "runs").exists()


def test_a_model_folder_with_only_its_config_is_one_line_at_preflight(tmp_path, toy_root, capsys):
    llava = tmp_path / "llava"
    llava.mkdir()
    (llava / "config.json").write_text("{}")
    pretrained = ["--set", "models=pretrained", "--set", "device=cpu", "--set", "local_files_only=true",
                  "--set", "fid_features=inception", "--set", "stages=[adaptation, synthesis, classification]"]
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), *pretrained,
                      "--set", f"sd_model={_sd_folder(tmp_path)}", "--set", "synth_method=disef",
                      "--set", f"caption_model={llava}")
    _one_line(code, err)
    assert "caption_model folder" in err and "no .safetensors weights" in err and not (tmp_path / "runs").exists()
    (tmp_path / "sd" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10" + bytes(7) + b"{}")
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), *pretrained,
                      "--set", f"sd_model={tmp_path / 'sd'}")
    _one_line(code, err)  # a torn safetensors file in a diffusers folder
    assert "sd_model" in err and "diffusion_pytorch_model.safetensors" in err


# --- names with braces or shell syntax, odd run folders, one class --------------------------------

def test_braces_in_run_name_or_runs_root_are_plain_characters(tmp_path, toy_root, capsys):
    root = tmp_path / "r{x}"
    code, err = _main(capsys, "params/demo.yaml", "--set", f"runs_root={root}", "--set", f"data_root={toy_root}",
                      "--set", "run_name=x{{seed}}", "--set", "stages=[adaptation]", "--set", "adapt_epochs=1")
    assert code == 0, err
    assert (root / "x{seed}" / "stages" / "adaptation.json").exists()
    assert (root / "x{seed}" / "notebooks" / "01_adaptation.ipynb").exists()


def test_a_run_name_with_shell_syntax_is_only_a_folder_name(tmp_path, toy_root, capsys):
    name = "x;$(touch P)`touch Q`&|<>*"
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root), "--set", f"run_name={name}",
                      "--set", "stages=[adaptation]", "--set", "adapt_epochs=1")
    assert code == 0, err
    assert (tmp_path / "runs" / name / "stages" / "adaptation.json").exists()
    for place in (tmp_path, ROOT, tmp_path / "runs"):
        assert not (place / "P").exists() and not (place / "Q").exists()  # nothing in the name ran


def test_a_file_in_place_of_a_run_subfolder_stops_at_preflight(tmp_path, toy_root, capsys):
    folder = tmp_path / "runs" / "demo"
    folder.mkdir(parents=True)
    (folder / "stages").write_text("not a folder")
    code, err = _main(capsys, "params/demo.yaml", *_common(tmp_path, toy_root))
    _one_line(code, err)
    assert "stages" in err and "is a file" in err and sorted(os.listdir(folder)) == ["stages"]


def test_a_dataset_of_one_class_is_refused_before_work(tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "one"
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        (data / split / "cat").mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(data / split / "cat" / f"{i}.png")
    code, err = _main(capsys, "params/demo.yaml", "--set", f"runs_root={tmp_path / 'runs'}", "--set", "dataset=imagefolder",
                      "--set", f"data_root={data}")
    _one_line(code, err)
    assert "one class ('cat')" in err and "at least two classes" in err and not (tmp_path / "runs").exists()


# --- the run's own records ------------------------------------------------------------------------

@slow_fixture(scope="module")
def finished_run(tmp_path_factory, toy_root):
    """A whole small demo run (every stage, called in this process), made once; tests copy it before
    damaging it."""
    tmp = tmp_path_factory.mktemp("records")
    args = ["params/demo.yaml", "--set", "base=smoke", "--set", f"runs_root={tmp / 'runs'}",
            "--set", f"data_root={toy_root}", "--set", "ablation_images_per_class=[4]", "--set", "ablation_shots=[4]",
            "--set", "clf_settings=[real_finetune, synthetic_real]", "--set", "clf_epochs=1", "--set", "clf_warmup_epochs=0"]
    result = run_pipeline_in_process(*args)  # the stages' functions: these tests read their outputs, not notebooks
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp / "runs" / "demo", args


def _copy_run(finished_run, tmp_path):
    import shutil

    folder, args = finished_run
    copy = tmp_path / "runs" / "demo"
    shutil.copytree(folder, copy)
    for lock in copy.rglob("*.lock"):
        lock.unlink()
    args = [a.replace(str(folder.parent), str(tmp_path / "runs")) for a in args]
    return copy, args


def test_a_run_without_params_yaml_is_still_recognised_by_its_stage_markers(finished_run, tmp_path, capsys):
    folder, args = _copy_run(finished_run, tmp_path)
    (folder / "params.yaml").unlink()
    before = {p: p.read_bytes() for p in folder.rglob("*.json")}
    code, err = _main(capsys, *args, "--set", "seed=1")
    _one_line(code, err)
    assert "seed: 0 -> 1" in err and "stages/" in err and not (folder / "params.yaml").exists()
    assert {p: p.read_bytes() for p in folder.rglob("*.json")} == before  # nothing relabelled
    (folder / "params.yaml").write_text("seed: [unclosed\n  :")  # not YAML: treated as lost, written again
    code = pipeline.main(args)
    assert code == 0 and yaml.safe_load((folder / "params.yaml").read_text())["seed"] == 0


def test_a_lost_or_damaged_split_is_drawn_again_and_checked_against_the_stages(finished_run, tmp_path, capsys):
    folder, args = _copy_run(finished_run, tmp_path)
    split = (folder / "split.json").read_bytes()
    (folder / "split.json").write_text("{torn")
    assert pipeline.main(args) == 0
    assert (folder / "split.json").read_bytes() == split  # drawn again: the same split, which the markers vouch for
    marker = folder / "stages" / "fid.json"
    record = json.loads(marker.read_text())
    marker.write_text(json.dumps({**record, "split": "0" * 64}))  # as if the outputs were made with other shots
    (folder / "split.json").unlink()
    code, err = _main(capsys, *args)
    _one_line(code, err)
    assert "another split" in err and "fid.json" in err and not (folder / "split.json").exists()


@pytest.mark.parametrize("record, stage, damage", [
    ("classification/synthetic_real/metrics.json", "classification", "deleted"),
    ("classification/synthetic_real/metrics.json", "classification", "garbage"),
    ("fid/per_class.csv", "fid", "deleted"), ("ablations/results.csv", "ablations", "garbage")])
def test_a_lost_or_damaged_result_file_reopens_its_stage(finished_run, tmp_path, capsys, record, stage, damage):
    from datadream_lib import results

    folder, args = _copy_run(finished_run, tmp_path)
    path = folder / record
    good = path.read_text()
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"\x00\xff{ not a table" if path.suffix == ".csv" else b"{ not json")
    if stage == "classification":  # notebook 06 says which result it skipped, and why
        table = results.collect([folder])
        assert len(table["skipped"]) == 1 and record in table["skipped"]["file"][0]
        assert "synthetic_real" not in set(table["metrics"]["setting"])
    assert pipeline.main(args, in_process=True) == 0
    locks.release_all()
    assert f"[pipeline] {stage}: 1 output(s) missing or damaged" in capsys.readouterr().out
    if path.suffix == ".csv":
        assert pd.read_csv(path).shape == pd.read_csv(io.StringIO(good)).shape
    else:
        assert json.loads(path.read_text())["top1"] == json.loads(good)["top1"]  # seeded: trained again, the same
    assert results.collect([folder])["skipped"].empty
