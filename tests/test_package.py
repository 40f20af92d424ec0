"""Package-level properties: cheap import, version, configs, CI runs the README command."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_is_cheap_and_has_a_version():
  code = ("import sys, videojax; print(videojax.__version__); "
          "print(sorted(m for m in ('jax', 'flax', 'tensorflow_datasets', 'optax') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=ROOT).stdout.split("\n")
  assert re.fullmatch(r"\d+\.\d+\.\d+", out[0])
  assert out[1] == "[]", f"`import videojax` imported heavy modules: {out[1]}"


def _readme_commands():
  text = open(os.path.join(ROOT, "README.md")).read()
  block = re.search(r"```(?:bash|sh)\n(.*?)```", text, re.S)
  assert block, "README must open with a bash code block"
  return [l for l in block.group(1).strip().splitlines() if l and not l.startswith("#")]


def test_readme_opens_with_two_commands_and_ci_runs_the_second():
  cmds = _readme_commands()
  assert len(cmds) == 2, cmds
  ci = open(os.path.join(ROOT, ".ci", "run")).read()
  # .ci/run reads the test command out of the README rather than keeping a copy.
  assert "README.md" in ci
  assert "pytest" in cmds[1] and "experiments." in cmds[0]


CONFIGS = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                 if f.endswith(".py") and not f.startswith("_"))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_field_has_a_comment(name):
  # DESIGN: "a comment on every field". Each `c.<...> = ...` line carries a comment,
  # except section headers (ConfigDict()).
  src = open(os.path.join(ROOT, "configs", f"{name}.py")).read()
  bare = [l.strip() for l in src.splitlines()
          if re.match(r"\s*c\.[\w.]+\s*=", l) and "#" not in l and "ConfigDict()" not in l]
  assert not bare, f"configs/{name}.py fields without a comment: {bare}"


# Declared for a reason other than an import of ours (setup.cfg says which).
_INDIRECT = {"importlib-resources", "flatbuffers"}


def _imported_modules(*dirs):
  """Top-level modules imported anywhere (module level or inside functions) in `dirs`."""
  import ast

  names = set()
  for d in dirs:
    for folder, _, files in os.walk(os.path.join(ROOT, d)):
      for f in files:
        if f.endswith(".py"):
          tree = ast.parse(open(os.path.join(folder, f)).read())
          for node in ast.walk(tree):
            if isinstance(node, ast.Import):
              names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
              names.add(node.module.split(".")[0])
  return names


def test_every_declared_dependency_is_imported():
  """install_requires lists only what videojax/ or experiments/ import (DESIGN: never an
  unused package); each name maps to its modules through the installed distributions."""
  import configparser
  import importlib.metadata

  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, "setup.cfg"))
  declared = {re.split(r"[<>=\[; ]", line.strip())[0].lower()
              for line in cfg["options"]["install_requires"].splitlines()
              if line.strip() and not line.strip().startswith("#")}
  provides = {}  # distribution -> its top-level modules
  for module, dists in importlib.metadata.packages_distributions().items():
    for dist in dists:
      provides.setdefault(dist.lower().replace("_", "-"), set()).add(module)
  imported = _imported_modules("videojax", "experiments")
  unused = sorted(d for d in declared - _INDIRECT
                  if not provides.get(d.replace("_", "-"), set()) & imported)
  assert not unused, f"setup.cfg declares packages nothing imports: {unused}"
