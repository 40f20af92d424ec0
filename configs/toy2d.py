"""Toy 2-D diffusion: the end-to-end demo of the diffusion core.

Variants (`--config configs/toy2d.py:<variant>`):
  default  a few thousand steps, about a minute on 2 CPU cores.
  tiny     seconds; used by the tests.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "default"
  if variant not in ("default", "tiny"):
    raise ValueError(f"Unknown toy2d variant {variant!r}; expected 'default' or 'tiny'.")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.seed = 0  # all randomness derives from (seed, step)
  c.dataset = "moons"  # 'moons', 'gaussians8' or 'spiral' (videojax/data/toy2d.py)

  c.model = ml_collections.ConfigDict()
  c.model.width = 64 if tiny else 256  # hidden width of the residual MLP
  c.model.depth = 2 if tiny else 3  # residual blocks
  c.model.emb_dim = 32 if tiny else 64  # noise-level / label embedding width

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "cosine"  # 'cosine', 'shifted_cosine' or 'linear'
  c.diffusion.logsnr_min = -15.0  # clipped log-SNR range of the schedule
  c.diffusion.logsnr_max = 15.0  # (upper end)
  c.diffusion.parameterization = "v"  # what the network predicts: 'eps', 'x0' or 'v'
  c.diffusion.weighting = "uniform"  # loss weighting (videojax/diffusion/losses.py)

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 300 if tiny else 4000  # optimizer steps
  c.train.log_every = 50 if tiny else 200  # steps per jitted scan chunk (and log line)
  c.train.batch_size = 256 if tiny else 512  # points per step
  c.train.dataset_size = 20_000  # points drawn once, then sampled with replacement
  c.train.learning_rate = 2e-3  # AdamW peak, after linear warmup, cosine decay
  c.train.warmup_steps = 50 if tiny else 200  # linear warmup steps
  c.train.weight_decay = 0.0  # AdamW decoupled weight decay
  c.train.ema_decay = 0.99 if tiny else 0.998  # EMA of the parameters used to sample
  c.train.cond_dropout = 0.1  # probability of the null label (classifier-free guidance)

  c.sample = ml_collections.ConfigDict()
  c.sample.samplers = ("ddpm", "ddim", "dpm_solver_pp", "heun")  # each gets a panel
  c.sample.num_steps = 32  # steps per sampler (Heun makes 2N - 1 network calls)
  c.sample.spacing = "logsnr"  # step grid: 'uniform', 'logsnr' or 'karras'
  c.sample.guidance_scale = 1.5  # classifier-free guidance; 1 = plain conditional
  c.sample.threshold = "static"  # x0 thresholding: 'none', 'static' or 'dynamic'
  c.sample.num_samples = 500 if tiny else 3000  # samples per sampler
  return c
