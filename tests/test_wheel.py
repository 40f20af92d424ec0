"""videojax works from a wheel: built from this checkout, installed outside it, the
shipped demo cascade loads and samples in an unrelated working directory, with the
checkout out of reach (no configs/, no repository on sys.path)."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a red circle moving left on a black background"

# Runs in the wheel's install, from an empty directory: the default cascade is the
# packaged demo with its weights in the install; then the same cascade sampled with one
# step per stage (to keep it cheap), saved for the test to compare.
_SCRIPT = r"""
import importlib.util, json, os, sys
import numpy as np
site, repo, out = sys.argv[1:4]
import videojax
from videojax.runtime import enable_compilation_cache
from videojax.cascade import demo
from videojax.cascade.chain import Cascade
enable_compilation_cache()
cascade = Cascade.load()
config = demo.get_config()
for name in config.order:
  config.stages[name].sample.num_steps = 1
video = Cascade.load(config).sample([%r], seed=0)
np.save(out, video)
print(json.dumps(dict(
    videojax=videojax.__file__,
    configs_importable=importlib.util.find_spec("configs") is not None,
    repo_on_path=any(os.path.abspath(p or ".") == repo for p in sys.path),
    checkpoints=[s.checkpoint for s in cascade.stages],
    stages=[(s.name, s.kind, s.output) for s in cascade.stages])))
""" % PROMPT


def _build_wheel(tmp) -> str:
  """Builds the wheel from a copy of the package sources (a build in place would leave
  build/ and *.egg-info in the checkout); returns its path."""
  src = tmp / "src"
  shutil.copytree(os.path.join(ROOT, "videojax"), src / "videojax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("setup.cfg", "pyproject.toml", "README.md"):
    shutil.copy(os.path.join(ROOT, name), src / name)
  run = subprocess.run(
      # Build isolation: pip brings the build backend pyproject.toml asks for (a fresh
      # venv's own setuptools may be too old to build wheels).
      [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q",
       "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  (wheel,) = os.listdir(tmp / "dist")
  return str(tmp / "dist" / wheel)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  return _build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_the_demo_cascade(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
  assert "videojax/cascade/demo.py" in names and "videojax/cascade/chain.py" in names
  for stage in ("base", "tsr", "ssr"):
    for f in ("params.msgpack", "config.json"):
      assert f"videojax/assets/demo/{stage}/{f}" in names
  # Experiment configs, entry points and tests stay in the checkout.
  assert not any(n.startswith(("configs/", "experiments/", "tests/")) for n in names)


def test_demo_cascade_samples_from_a_wheel_install(wheel, tmp_path):
  site, work = tmp_path / "site", tmp_path / "cwd"
  work.mkdir()
  run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                        "--target", str(site), wheel], capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(PYTHONPATH=str(site),
             VIDEOJAX_JAX_CACHE=jax.config.jax_compilation_cache_dir or "")
  out = tmp_path / "video.npy"
  run = subprocess.run([sys.executable, "-c", _SCRIPT, str(site), ROOT, str(out)],
                       cwd=work, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  got = json.loads(run.stdout.strip().splitlines()[-1])
  # The wheel's package, with the checkout out of reach.
  assert got["videojax"].startswith(str(site) + os.sep), got["videojax"]
  assert not got["configs_importable"] and not got["repo_on_path"]
  # Cascade.load() is the shipped demo, its weights read from the install.
  assert [s[0] for s in got["stages"]] == ["base", "tsr", "ssr"]
  assert got["stages"][-1][2] == [16, 64, 64, 8.0]
  for name, path in zip(["base", "tsr", "ssr"], got["checkpoints"]):
    assert path == os.path.join(str(site), "videojax", "assets", "demo", name)
  video = np.load(out)
  assert video.shape == (1, 16, 64, 64, 3) and video.dtype == np.uint8
  assert video.std() > 0  # a picture, not a blank frame
