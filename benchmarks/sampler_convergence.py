r"""Observed convergence order of each sampler against the exact probability-flow ODE.

Data N(0.3, 0.5^2) (1-D, 256 noise draws), its exact denoiser, the cosine schedule
clipped to log-SNR [-6, 20], log-SNR-uniform steps; error = RMS distance between the
sampler's output and the closed-form ODE solution from the same noise. The order is
the slope of log error against log steps (local slopes and a fit over 32-128 steps).

  python benchmarks/sampler_convergence.py [--out benchmarks/results/sampler_convergence.md]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from videojax.diffusion import reference, samplers, schedules

STEPS = (8, 16, 32, 64, 128, 256)
MU, STD = 0.3, 0.5


def errors(sampler: str) -> list[float]:
  sched = schedules.get_schedule("cosine", logsnr_min=-6.0, logsnr_max=20.0)
  noise = jax.random.normal(jax.random.PRNGKey(0), (256, 1))
  exact = reference.gaussian_ode_solution(noise, schedules.step_grid(sched, 1, "logsnr")[0],
                                          MU, STD)
  out = []
  for n in STEPS:
    x = samplers.sample(reference.gaussian_denoiser(MU, STD), noise, schedule=sched,
                        sampler=sampler, num_steps=n, spacing="logsnr", parameterization="x0")
    out.append(float(jnp.sqrt(jnp.mean((x - exact)**2))))
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default=None, help="also write the markdown table here")
  args = parser.parse_args()
  lines = ["| sampler | " + " | ".join(f"N={n}" for n in STEPS) + " | order (fit 32-128) |",
           "|---" * (len(STEPS) + 2) + "|"]
  for name in ("ddim", "dpm_solver_pp", "heun"):
    e = errors(name)
    fit = -np.polyfit(np.log(STEPS[2:5]), np.log(e[2:5]), 1)[0]
    lines.append(f"| {name} | " + " | ".join(f"{v:.2e}" for v in e) + f" | {fit:.2f} |")
  table = "\n".join(lines)
  print(table)
  if args.out:
    with open(args.out, "w") as f:
      f.write("# Sampler convergence (RMS error vs exact ODE solution)\n\n"
              f"jax {jax.__version__}, {jax.devices()[0].platform}\n\n{table}\n")


if __name__ == "__main__":
  main()
