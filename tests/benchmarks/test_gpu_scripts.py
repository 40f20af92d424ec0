"""The GPU scripts' dry runs: every part of benchmarks/gpu runs on CPU at tiny sizes, so
the scripts cannot rot while no GPU is at hand (they need the `bench` extra)."""

from __future__ import annotations

import glob
import io
import os
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = ["a red circle moving left on a black background",
           "a blue square moving up on a white background"]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHON=sys.executable)
  env.pop("XLA_FLAGS", None)  # one CPU device, as on a user's machine (not the tests' eight)
  return subprocess.run([os.path.join(ROOT, "benchmarks", "gpu", script), *args], env=env,
                        capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_bench_dry_run_measures_every_part(tmp_path):
  from videojax.nn import text as T

  cache = str(tmp_path / "captions.npz")  # what the GPU machine reads instead of MiniLM
  T.EmbeddingCache.build(T.build_text_encoder("minilm", max_len=16), PROMPTS, cache)
  out = tmp_path / "report.md"
  r = _run("bench.sh", "--dry_run", "--out", str(out), "--text_cache", cache)
  assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
  text = out.read_text()
  for heading in ("## Environment", "## Attention kernels", "## A tiny stage trains",
                  "## Training step against PyTorch", "## The demo cascade's sampling time"):
    assert heading in text, heading
  assert text.count("| pass |") == 5  # four attention layers and a whole U-Net
  assert "Failed or not run: none." in text


@pytest.mark.slow
def test_train_demo_dry_run_exports_every_stage_and_keeps_earlier_output(tmp_path):
  from videojax.cascade import weights

  out, runs, data = (str(tmp_path / d) for d in ("out", "runs", "data"))
  r = _run("train_demo.sh", "--dry_run", "--workdir", runs, "--out", out, "--data_dir", data)
  logs = "".join(open(p).read()[-2000:] for p in glob.glob(os.path.join(out, "train_*.log")))
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + logs
  parts = sorted(glob.glob(os.path.join(out, "demo_weights.tar.part-*")))
  assert parts and all(os.path.getsize(p) <= 15 * 2**20 for p in parts)
  with tarfile.open(fileobj=io.BytesIO(b"".join(open(p, "rb").read() for p in parts))) as tar:
    tar.extractall(tmp_path / "x", filter="data")
  for stage in ("base", "tsr", "ssr"):
    params, config = weights.load(str(tmp_path / "x" / "demo_weights" / stage))
    assert config.data.kind == stage and params
    assert os.path.exists(os.path.join(out, f"train_{stage}.log"))
  before = {p: open(p, "rb").read() for p in parts}
  again = _run("train_demo.sh", "--dry_run", "--workdir", runs, "--out", out, "--data_dir", data)
  assert again.returncode == 2 and "nothing is overwritten" in again.stderr
  assert {p: open(p, "rb").read() for p in parts} == before
