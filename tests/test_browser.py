"""The notebooks as a researcher meets them: JupyterLab in a real browser (Debian's Chromium, driven
by Playwright), on a scratch copy of the project.

1. Opening every notebook and waiting past JupyterLab's autosave leaves the files byte-identical
   (what keeps `git status` clean after exploring the checkout).
2. Notebook 01 run with Run All on the tiny demo shows its figures as images, with no traceback;
   a screenshot of it is written to build/browser/ (docs/images/jupyterlab_01_adaptation.png is
   such a screenshot, copied by hand).

Chromium cannot be downloaded by Playwright here: `apt-get install chromium` provides it, and
`.ci/run` installs it and sets DATADREAM_REQUIRE_BROWSER=1, so CI runs this test rather than skip.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from datadream_lib import runs

ROOT = runs.project_root()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "datadream-browser-test"
AUTOSAVE_S = 3  # JupyterLab's autosave interval in this test (its default is 120 s)

pytestmark = pytest.mark.slow

if not CHROMIUM:
    if os.environ.get("DATADREAM_REQUIRE_BROWSER"):
        raise RuntimeError("DATADREAM_REQUIRE_BROWSER is set but Chromium is missing: apt-get install chromium")
    pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, path: str):
    request = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a scratch copy of the project (notebooks, params, pyproject), as `make lab`
    serves the checkout, with its own Jupyter folders and a short autosave interval."""
    project = tmp_path_factory.mktemp("browser_project")
    for name in ("notebooks", "params"):
        shutil.copytree(ROOT / name, project / name)
    shutil.copy(ROOT / "pyproject.toml", project)
    jupyter = project.parent / f"{project.name}_jupyter"
    settings = jupyter / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": True, "autosaveInterval": AUTOSAVE_S}))
    news = jupyter / "settings" / "@jupyterlab" / "apputils-extension"  # no "get notified of Jupyter news?" toast
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(jupyter / "config"), "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(jupyter / "workspaces")}
    log = open(jupyter / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1", "--allow-root",
         f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={project}", "--LabApp.expose_app_in_browser=True",
         f"--LabApp.user_settings_dir={jupyter / 'settings'}", f"--LabApp.workspaces_dir={jupyter / 'workspaces'}"],
        cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            _api(base, "/api/status")
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError("JupyterLab did not start: " + (jupyter / "server.log").read_text()[-2000:])
            time.sleep(1)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield project, base, page
        finally:
            browser.close()
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()


def _open(page, base: str, notebook: str) -> None:
    """Opens the notebook as a click in the file browser does (JupyterLab's docmanager:open)."""
    if "/lab" not in page.url:
        page.goto(f"{base}/lab?token={TOKEN}")
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=120_000)
        page.evaluate("async () => { await window.jupyterapp.restored; }")  # every plugin, its commands included
    page.evaluate(f"async () => {{ await window.jupyterapp.commands.execute('docmanager:open',"
                  f" {{path: 'notebooks/{notebook}'}}); }}")
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget && window.jupyterapp.shell.currentWidget.context"
                           f" && window.jupyterapp.shell.currentWidget.context.path === 'notebooks/{notebook}'",
                           timeout=120_000)


def _close(page) -> None:
    """Closes the current notebook and shuts its kernel down (two cores: one kernel at a time)."""
    page.evaluate("async () => { const w = window.jupyterapp.shell.currentWidget;"
                  " await w.sessionContext.shutdown(); w.dispose(); }")


def _wait_idle(base: str, notebook: str, timeout: float = 600) -> None:
    """Until the notebook's kernel has started and is idle (JupyterLab's sessions API)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        sessions = [s for s in _api(base, "/api/sessions") if s["path"].endswith(notebook)]
        if sessions and sessions[0]["kernel"]["execution_state"] == "idle":
            return
        time.sleep(1)
    raise TimeoutError(f"the kernel of {notebook} did not become idle in {timeout} s")


def test_opening_every_notebook_leaves_it_unchanged(lab):
    project, base, page = lab
    notebooks = sorted((project / "notebooks").glob("*.ipynb"))
    before = {path.name: path.read_bytes() for path in notebooks}
    for path in notebooks:
        _open(page, base, path.name)
        _wait_idle(base, path.name)  # the kernel's language_info has arrived: JupyterLab would now mark it dirty
        page.wait_for_timeout(AUTOSAVE_S * 1000 + 2000)  # past an autosave
        dirty = page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty")
        assert not dirty, f"{path.name} opens with unsaved changes"
        _close(page)
    after = {path.name: path.read_bytes() for path in notebooks}
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"opening rewrote {changed}"


def test_run_all_in_jupyterlab_shows_the_figures(lab):
    project, base, page = lab
    notebook = "01_adaptation.ipynb"
    _open(page, base, notebook)
    _wait_idle(base, notebook)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    last = page.locator(".jp-Notebook .jp-CodeCell").last
    # the last cell's prompt shows a number once every cell above has run
    last.locator(".jp-InputPrompt").filter(has_text="[").wait_for(timeout=600_000)
    page.wait_for_function("() => [...document.querySelectorAll('.jp-InputPrompt')]"
                           ".every(p => !p.textContent.includes('*'))", timeout=600_000)
    page.wait_for_function("() => /\\[\\d+\\]/.test([...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                           ".pop().textContent)", timeout=600_000)
    outputs = page.locator(".jp-OutputArea-output")
    assert "Traceback" not in " ".join(outputs.all_inner_texts())
    images = page.locator(".jp-OutputArea-output img")
    assert images.count() >= 2  # the shots' grid and the adaptation loss curve
    assert all(image.evaluate("img => img.naturalWidth > 100 && img.naturalHeight > 100") for image in images.all())
    assert not page.get_by_text("<Figure size").count()
    images.last.scroll_into_view_if_needed()
    shots = ROOT / "build" / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "jupyterlab_01_adaptation.png"))
