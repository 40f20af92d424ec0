"""The commands in README.md and docs/ are valid: every `python -m experiments.X ...` line
parses against that program's flags (config files load and every `--config.x=y`
override names a real field with a value of its type), without running it; the two
cheap README examples (a tiny training run, a sample with overrides) run in full.

Each command is parsed in its own process (absl flags are global). The rest run
elsewhere: the two set-up commands in CI (`.ci/run` and a fresh clone), the trainer,
exporter, sampler, planner and evaluation code in tests/train, tests/cascade and
tests/eval at tiny sizes.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
_ASSIGN = re.compile(r'^([A-Z_]+)="([^"]*)"$')


def documented_commands() -> list[tuple[str, list[str]]]:
  """(page, argv after `python -m`) of every `python -m experiments.X` line of a bash
  block, with the block's VAR="..." assignments substituted and continuations joined."""
  out = []
  for page in PAGES:
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
      variables = {}
      for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if m := _ASSIGN.match(line):
          variables[m.group(1)] = m.group(2)
          continue
        if not line.startswith(("python -m experiments.", "python3 -m experiments.")):
          continue  # set-up lines, shell loops, remote launchers
        line = line.split("#", 1)[0]
        for name, value in variables.items():
          line = line.replace(f"${name}", value)
        out.append((page.name, shlex.split(line)[2:]))
  return out


COMMANDS = documented_commands()

_PARSE = """
import sys
from absl import flags
import importlib
importlib.import_module(sys.argv[1])
argv = [sys.argv[1]] + sys.argv[2:]
flags.FLAGS(argv)
for name in ("config", "cascade"):  # config files load (and apply overrides) when read
  if name in flags.FLAGS and flags.FLAGS[name].present:
    getattr(flags.FLAGS, name)
print("parsed")
"""


def test_the_pages_document_commands():
  programs = {argv[0] for _, argv in COMMANDS}
  assert {"experiments.train", "experiments.sample", "experiments.export",
          "experiments.plan", "experiments.build_dataset"} <= programs, programs


@pytest.mark.slow
@pytest.mark.parametrize("page, argv", COMMANDS, ids=[" ".join(a)[:80] for _, a in COMMANDS])
def test_documented_command_parses(page, argv):
  r = subprocess.run([sys.executable, "-c", _PARSE, *argv], cwd=ROOT, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0 and "parsed" in r.stdout, (page, argv, r.stderr[-2000:])


@pytest.mark.slow
def test_readme_examples_run(tmp_path):
  """The README's tiny training run and its sample with overrides, as written, in a
  scratch directory that sees the repository's configs."""
  (tmp_path / "configs").symlink_to(ROOT / "configs")
  env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(tmp_path))  # datasets go under HOME
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user has (not the tests' fake eight)
  readme = [argv for page, argv in COMMANDS if page == "README.md"]
  train = next(a for a in readme if a[0] == "experiments.train" and "configs/base.py:tiny" in a)
  sample = next(a for a in readme if a[0] == "experiments.sample")
  for argv in (train, sample):
    r = subprocess.run([sys.executable, "-m", *argv], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (argv, r.stderr[-3000:])
  assert (tmp_path / "runs" / "tiny" / "checkpoints" / "200").is_dir()
  assert (tmp_path / "video.mp4").is_file()  # the sample command's default --out
