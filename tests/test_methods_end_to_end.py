"""Every generation method through the whole pipeline (the 'smoke' base: the demo, smaller), the
command a user runs with `--set synth_method=...` with its stages called in this process (the
notebooks are tested once, in test_pipeline), and Table 1 / Fig. 3 / Fig. 4 rebuilt with their rows.
The methods are the registry's; the default one (DataDream) runs in conftest's `tiny_runs`."""

import json

import pandas as pd
import pytest
import yaml

from datadream_lib import catalog, files, methods, naming, params, results, runs, stages
from tests.conftest import run_pipeline_in_process, slow_fixture, small_values

DEFAULT = params.FIELDS["synth_method"].default
# every other registered method, with the name its tables and figures give it
OTHER_METHODS = {name: method.label(params.from_dict(small_values(name)))
                 for name, method in methods.METHODS.items() if name != DEFAULT}


@slow_fixture(scope="module")
def method_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("method_runs")
    outputs = {}
    for method in OTHER_METHODS:
        result = run_pipeline_in_process("params/demo.yaml", "--set", "base=smoke", "--set", f"runs_root={root}",
                                         "--set", f"data_root={root / 'data'}", "--set", f"run_name=demo_{method}",
                                         "--set", f"synth_method={method}")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        outputs[method] = result.stdout
    return root


@pytest.mark.parametrize("method", OTHER_METHODS)
def test_every_method_runs_every_stage(method_runs, method):
    run = runs.Run(method_runs / f"demo_{method}")
    assert all(run.stage_done(stage) for stage in stages.NAMES)
    rows = catalog.read_manifest(catalog.folder(run, method))
    identity = methods.identity(yaml.safe_load(run.path("params.yaml").read_text()))  # stored: identity, never a label
    assert len(rows) == 4 * 4 and {(r["method"], r["variant"]) for r in rows} == {identity}
    metrics = json.loads(run.path("classification", "synthetic_real", "metrics.json").read_text())
    assert (metrics["synth_method"], metrics["variant"]) == identity and "source" not in metrics
    fid = pd.read_csv(run.path("fid", "per_class.csv"))
    assert set(naming.named(fid)["method"]) == {OTHER_METHODS[method], naming.REFERENCE_LABEL}
    if "filter_pass_rate" in fid:  # DISEF's own per-class figures, beside its FID, as its manifest gives them
        ours = fid[fid["images"] == "synthetic"].set_index("class_index")
        reported = methods.class_summary(catalog.folder(run, method)).set_index("class_index")
        assert ours["unfiltered_share"].to_dict() == reported["unfiltered_share"].to_dict()
        assert fid[fid["images"] == naming.REFERENCE]["filter_pass_rate"].isna().all()
    assert ("filter_pass_rate" in fid) == (method == "disef")
    shots = pd.read_csv(run.path("ablations", "results.csv"))
    assert f"{OTHER_METHODS[method]}, synthetic + real" in set(naming.named(shots)["method"])
    recorded = files.read_json(run.path("stages", "adaptation.json"))
    assert recorded["method"] == method


def test_the_shots_ablation_redoes_the_methods_own_preparation_and_strength(method_runs):
    sub = runs.Run(method_runs / "demo_issynth" / "ablations" / "shots" / "k1")
    rows = catalog.read_manifest(catalog.folder(sub, "issynth"))
    assert {r["strength"] for r in rows} == {0.5} and {r["source_shot"] for r in rows} == {0}  # K = 1
    captions = catalog.read_jsonl(method_runs / "demo_disef" / "ablations" / "shots" / "k1" / "adaptation" / "captions.jsonl")
    assert sorted(r["shot"] for r in captions) == [0] * 4


def test_table1_and_figures_carry_every_methods_rows(method_runs, tmp_path):
    written = results.rebuild([method_runs], tmp_path)
    table = pd.read_csv(tmp_path / "table1.csv")
    shown = results.table1_display(results.table1(results.collect(results.find_runs([method_runs]))["metrics"]))
    in_paper = {name for name in OTHER_METHODS if methods.METHODS[name].paper_table1}
    assert in_paper and in_paper != set(OTHER_METHODS)  # both kinds of rows are checked
    for name, label in OTHER_METHODS.items():
        for setting in ("synthetic only", "synthetic + real"):
            row = table[(table["method"] == f"{label}, {setting}") & (table["dataset"] == "toy")]
            assert len(row) == 1 and pd.isna(row["paper"]).all()  # the toy dataset has no paper number
        if name in in_paper:
            assert f"{label}, synthetic + real" in results.PAPER_TABLE1
        else:
            assert f"{label}, synthetic + real" not in results.PAPER_TABLE1
            after = list(shown["method"]).index(f"{label}, synthetic + real") + 1
            assert shown["method"][after] == "  not in the paper"
            assert (shown.iloc[after].drop("method") == "").all()  # blank cells, not "nan", in table1.md
    tokens = list((method_runs / "demo_dafusion" / "adaptation" / "tokens").glob("*/learned_embeds.safetensors"))
    assert len(tokens) == 4  # a token per class, diffusers' textual-inversion files
    assert "IsSynth, synthetic only" in results.PAPER_TABLE1 and results.PAPER_TABLE1["DISEF, synthetic + real"]["Avg"] == 85.4
    assert written["fig3_toy"].stat().st_size > 0 and written["fig4_toy"].stat().st_size > 0
    split_file, sources = results.fig3_sources(results.find_runs([method_runs]))["toy"]
    assert set(sources) == set(OTHER_METHODS.values())
