"""The shell blocks of README.md and docs/ work as printed.

Every ```bash block carries a marker on the line above it, which says how it is tested:

- `<!-- shell: run -->`: executed as it stands by bash, in a scratch copy of the project (the tiny
  models; `.venv` is this environment), blocks in document order;
- `<!-- shell: check (why) -->`: needs what this machine lacks (a GPU, a cluster, the network, or
  an hour): `bash -n` parses the block, then each command runs in its dry form: `make -n`, a
  pipeline's parameters resolved by `python -m datadream_lib.params` (the file and every `--set`),
  `launch slurm ... --dry-run`, `launch local` as `launch plan`, a script's `--help`, `hf download`'s
  options looked up in its help; any other command must exist.

A block without a marker fails: a new command in the docs is tested, or says why not.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from datadream_lib import runs

ROOT = runs.project_root()
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:[ \t]*<!-- shell: (?P<mode>run|check)(?: \((?P<why>[^)]*)\))? -->\n)?[ \t]*```bash\n(?P<body>.*?)```",
                   re.S)
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def blocks() -> list[tuple[str, str, str, str]]:
    """(where, mode, why, body) of every bash block, in document order."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in BLOCK.finditer(text):
            where = f"{doc.relative_to(ROOT)}:{text[:match.start()].count(chr(10)) + 1}"
            found.append((where, match["mode"], match["why"], match["body"]))
    return found


def commands(body: str, cwd: Path) -> list[list[str]]:
    """The block's commands as words: continuation lines joined, comments dropped; globs and braces
    expanded in `cwd` as bash expands them (for a line with nothing else for bash to run)."""
    found = []
    for line in body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words and re.search(r"[*{]", line) and not re.search(r"[;&|<>`$]", line):
            expanded = subprocess.run(["bash", "-c", f'set -- {line}\nprintf "%s\\0" "$@"'], cwd=cwd,
                                      capture_output=True, text=True)
            words = expanded.stdout.split("\0")[:-1]
        if words:
            found.append(words)
    return found


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, toy_root):
    """A copy of the project (what a fresh clone holds, less the library, which is installed from
    this checkout) whose `.venv` is this environment."""
    folder = tmp_path_factory.mktemp("docs_project")
    for name in ("notebooks", "params", "models", "benchmarks", "docs"):
        shutil.copytree(ROOT / name, folder / name)
    for name in ("pyproject.toml", "Makefile", "requirements.lock", "lock-constraints.txt", "environment.yml", "README.md"):
        shutil.copy(ROOT / name, folder)
    (folder / ".venv").symlink_to(BIN.parent)
    return folder


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def dry_form(words: list[str]) -> list[str] | None:
    """The command's dry form, or None for a command that is only looked up."""
    program, rest = words[0], words[1:]
    python = program in ("python", "python3") or program.endswith("/python")
    if program == "make":
        return ["make", "-n", *rest]
    if python and rest[:2] == ["-m", "datadream_lib.pipeline"]:
        return [sys.executable, "-m", "datadream_lib.params", *rest[2:]]
    if python and rest[:3] == ["-m", "datadream_lib.launch", "slurm"]:
        return [sys.executable, *rest, "--dry-run"]
    if python and rest[:3] == ["-m", "datadream_lib.launch", "local"]:
        args = rest[3:]
        if "--gpus" in args:
            del args[args.index("--gpus"):args.index("--gpus") + 2]
        return [sys.executable, "-m", "datadream_lib.launch", "plan", *args]
    if python and rest[:2] == ["-m", "datadream_lib.launch"]:
        return [sys.executable, *rest]
    if python and rest and (rest[0].endswith(".py") or rest[0] == "-m"):
        return [sys.executable, *rest[:2 if rest[0] == "-m" else 1], "--help"]
    if program.endswith("papermill"):  # `-f FILE -p NAME VALUE`: the parameters it would run with
        args, overrides, i = [], [], 2
        files = [rest[rest.index("-f") + 1]] if "-f" in rest else []
        while "-p" in rest[i:]:
            i = rest.index("-p", i)
            overrides += ["--set", f"{rest[i + 1]}={rest[i + 2]}"]
            i += 3
        return [sys.executable, "-m", "datadream_lib.params", *files, *overrides] if files else None
    if program == "bash" and rest:
        return ["bash", "-n", rest[-1]]
    return None


def test_every_shell_block_is_marked():
    unmarked = [where for where, mode, _, _ in blocks() if mode is None]
    assert not unmarked, f"shell blocks without a `<!-- shell: run -->` or `<!-- shell: check (why) -->` line: {unmarked}"
    assert all(why for _, mode, why, _ in blocks() if mode == "check"), "a `check` marker says why the block is not run"


def test_the_shell_blocks_of_the_docs_work(scratch):
    env = {**os.environ, "PATH": f"{scratch / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DATADREAM_PROGRESS_FILE", None)
    failures = []
    for where, mode, why, body in blocks():
        if mode == "run":
            result = _run(["bash", "-euo", "pipefail", "-c", body], scratch, env)
            if result.returncode != 0:
                failures.append(f"{where}: exit {result.returncode}: {(result.stderr or result.stdout)[-1500:]}")
            continue
        parsed = _run(["bash", "-n", "-c", body], scratch, env)
        if parsed.returncode != 0:
            failures.append(f"{where}: bash -n: {parsed.stderr}")
        block_env = dict(env)
        for words in commands(body, scratch):
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value command
                key, value = words.pop(0).split("=", 1)
                block_env[key] = value
            if words[:1] == ["export"]:
                continue
            if words[:2] == ["hf", "download"]:
                help_text = _run([str(BIN / "hf"), "download", "--help"], scratch, block_env).stdout
                unknown = [w for w in words if w.startswith("--") and w not in help_text]
                if unknown:
                    failures.append(f"{where}: hf download has no option {unknown}")
                continue
            dry = dry_form(words)
            if dry is None:
                program = words[0].replace(".venv/bin/", f"{scratch / '.venv' / 'bin'}/")
                if not shutil.which(program, path=block_env["PATH"]) and not (scratch / words[0]).exists():
                    failures.append(f"{where}: {words[0]}: no such command ({why})")
                continue
            result = _run(dry, scratch, block_env)
            if result.returncode != 0:
                failures.append(f"{where}: {shlex.join(words)}\n  as {shlex.join(dry)}: exit {result.returncode}: "
                                f"{(result.stderr or result.stdout)[-800:]}")
    assert not failures, "\n".join(failures)
