r"""Trains the demo cascade's three stages side by side on one accelerator, for a wall time.

  benchmarks/gpu/train_demo.sh --minutes 6 --out OUT   # on the GPU machine
  python -m benchmarks.gpu.train_demo --dry_run --workdir /tmp/demo_dry --out /tmp/demo_out

Each stage (base, TSR, SSR) trains in its own `experiments.train` process with the
demo configs widened (`STAGES`: what a GPU affords and the CPU could not), sharing
the device (each takes a fixed share of its memory). The stages are independent (each
trains on ground-truth inputs), so they can train at the same time. At the wall time
each process gets SIGTERM, saves its step and stops (the trainer's preemption path);
a later run with the same WORKDIR resumes from those checkpoints. Then every stage's
EMA weights are exported (float16, as the shipped ones) and packed into OUT as
`demo_weights.tar.part-*` (pieces of 15 MB), with the training logs.

Data: moving_shapes 'base' and 'hires' under DATA_DIR, built there from their seed if
missing (in parallel processes; the caption embeddings cache must be there already:
the GPU machine has no MiniLM weights). With `--dry_run`, the tiny variants of each
stage config on the 'tiny' dataset, a few steps each, on CPU.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

# stage -> (config, command-line overrides). Wider than the CPU-trained demo (base 32 ->
# 64 channels, TSR 32 -> 48, SSR 16 -> 32), larger batches, long cosine horizons (the
# wall time, not num_steps, ends a run; the EMA averages over the last ~1000 steps).
# Each stage makes its batches in 4 worker processes: one process makes about 2,000
# examples a second, fewer than a GPU steps through.
COMMON = ["--config.train.preview_every=0", "--config.train.checkpoint_every=1000",
          "--config.train.log_every=200", "--config.train.eval_every=2000",
          "--config.data.workers=4"]
STAGES = {
    "base": ("configs/base.py:demo", [
        "--config.model.base_channels=64", "--config.data.batch_size=64",
        "--config.train.num_steps=30000", "--config.optim.learning_rate=4e-4",
        "--config.optim.warmup_steps=500"]),
    "tsr": ("configs/tsr.py:demo", [
        "--config.model.base_channels=48", "--config.data.batch_size=32",
        "--config.train.num_steps=30000", "--config.optim.learning_rate=4e-4",
        "--config.optim.warmup_steps=500"]),
    "ssr": ("configs/ssr.py:demo", [
        "--config.model.base_channels=32", "--config.data.batch_size=32",
        "--config.train.num_steps=30000", "--config.optim.learning_rate=4e-4",
        "--config.optim.warmup_steps=500"]),
}
DRY_STAGES = {name: (f"configs/{name}.py:tiny", ["--config.train.num_steps=3",
                                                  "--config.optim.warmup_steps=1",
                                                  "--config.data.batch_size=2",
                                                  "--config.data.workers=1"])
              for name in ("base", "tsr", "ssr")}
DATASETS = {"base": "base", "tsr": "base", "ssr": "hires"}  # stage -> moving_shapes config
PART_BYTES = 15 * 2**20  # pieces small enough for size-limited file transfers


def build_dataset(config: str, data_dir: str) -> subprocess.Popen | None:
  """Starts building moving_shapes/<config> unless it is there (None if it is)."""
  if os.path.isdir(os.path.join(data_dir, "moving_shapes", config, "1.0.0")):
    return None  # tfds moves a build there only once it is complete
  return subprocess.Popen([sys.executable, "-m", "experiments.build_dataset",
                           "--dataset=moving_shapes", f"--config={config}",
                           f"--data_dir={data_dir}"])


def launch(name: str, stages: dict, workdir: str, data_dir: str, mem_fraction: float,
           log_dir: str) -> subprocess.Popen:
  config, overrides = stages[name]
  env = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION=f"{mem_fraction:.2f}")
  log = open(os.path.join(log_dir, f"train_{name}.log"), "w")
  cmd = [sys.executable, "-m", "experiments.train", f"--config={config}",
         f"--workdir={os.path.join(workdir, name)}", f"--config.data.data_dir={data_dir}",
         *COMMON, *overrides]
  log.write(" ".join(cmd) + "\n")
  log.flush()
  return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def pack(export_dir: str, out: str) -> list[str]:
  """export_dir as a tar cut into PART_BYTES pieces in `out`; returns their paths.
  Join them with `cat demo_weights.tar.part-* | tar x`."""
  tar_path = os.path.join(out, "demo_weights.tar")
  with tarfile.open(tar_path, "w") as tar:
    tar.add(export_dir, arcname="demo_weights")
  paths = []
  with open(tar_path, "rb") as f:
    while chunk := f.read(PART_BYTES):
      paths.append(f"{tar_path}.part-{len(paths):02d}")
      with open(paths[-1], "wb") as part:
        part.write(chunk)
  os.remove(tar_path)
  return paths


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/gpu_demo")
  parser.add_argument("--data_dir", default=".gpu_data")
  parser.add_argument("--out", default=os.environ.get("OUT", "outputs/gpu_demo"))
  parser.add_argument("--minutes", type=float, default=6.0,
                      help="wall time from the start of this script to SIGTERM")
  parser.add_argument("--stages", default="base,tsr,ssr")
  parser.add_argument("--dry_run", action="store_true")
  args = parser.parse_args()
  start = time.time()
  deadline = start + 60 * args.minutes
  stages = DRY_STAGES if args.dry_run else STAGES
  names = args.stages.split(",")
  unknown = set(names) - set(stages)
  if unknown:
    parser.error(f"unknown stages {sorted(unknown)}; expected some of {sorted(stages)}")
  if glob.glob(os.path.join(args.out, "demo_weights.tar*")):
    parser.error(f"{args.out} already holds demo_weights.tar pieces; give another --out "
                 "(nothing is overwritten)")
  os.makedirs(args.out, exist_ok=True)
  datasets = {"tiny"} if args.dry_run else {DATASETS[n] for n in names}
  builds = {c: build_dataset(c, args.data_dir) for c in sorted(datasets)}
  procs, waiting = {}, list(names)
  while waiting or any(p.poll() is None for p in procs.values()):
    for name in list(waiting):
      config = "tiny" if args.dry_run else DATASETS[name]
      build = builds[config]
      if build is None or build.poll() is not None:
        if build is not None and build.returncode:
          raise RuntimeError(f"Building moving_shapes/{config} failed ({build.returncode}).")
        procs[name] = launch(name, stages, args.workdir, args.data_dir,
                             0.9 / len(names), args.out)
        print(f"{time.time() - start:6.0f} s: started {name}", flush=True)
        waiting.remove(name)
    if time.time() > deadline:
      for name, p in procs.items():
        if p.poll() is None:
          p.send_signal(signal.SIGTERM)  # the trainer saves this step and returns
      print(f"{time.time() - start:6.0f} s: SIGTERM sent", flush=True)
      break
    time.sleep(2)
  codes = {name: p.wait(timeout=300) for name, p in procs.items()}
  print(f"{time.time() - start:6.0f} s: stopped: {codes}", flush=True)
  export_dir = os.path.join(args.out, "export")
  for name in procs:
    if codes[name] != 0:
      print(f"{name} failed ({codes[name]}): see {args.out}/train_{name}.log", flush=True)
      continue
    subprocess.run([sys.executable, "-m", "experiments.export",
                    f"--workdir={os.path.join(args.workdir, name)}",
                    f"--out={os.path.join(export_dir, name)}"], check=True)
  parts = []
  if os.path.isdir(export_dir):  # none when every stage failed
    parts = pack(export_dir, args.out)
    shutil.rmtree(export_dir)
  print(f"{time.time() - start:6.0f} s: exported {sorted(procs)} into {parts}", flush=True)
  return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
