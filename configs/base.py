"""Base stage (text -> low-resolution, low-frame-rate video).

  python -m experiments.train --config configs/base.py:tiny --workdir /tmp/base_tiny

Variants:
  tiny          CPU tests: moving_shapes 'tiny' (8 frames 16x16), a 0.3M U-Net.
  demo          the shipped demo cascade's base: 8 frames 16x16 of moving_shapes 'base'.
  imagen_video  Imagen Video's base architecture (16 x 24 x 40, T5-XXL text).
"""

import ml_collections

from configs import unet3d


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "tiny"
  if variant not in ("tiny", "demo", "imagen_video"):
    raise ValueError(f"Unknown base variant {variant!r}; expected tiny, demo or imagen_video.")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.seed = 0  # all randomness derives from (seed, step)
  arch = {"tiny": "tiny", "demo": "demo_base", "imagen_video": "iv_base"}[variant]
  c.model = unet3d.get_config(arch).model  # UNet3D fields (configs/unet3d.py)
  c.model.text_dim = 384 if variant != "imagen_video" else 4096  # width of the text encoder

  c.data = ml_collections.ConfigDict()
  c.data.dataset = "moving_shapes"  # a builder name (videojax/data/builders.py)
  c.data.config = "tiny" if tiny else "base"  # its builder config
  c.data.data_dir = ""  # '' = ~/tensorflow_datasets; built on first use if missing
  c.data.kind = "base"  # stage view: 'base', 'tsr' or 'ssr' (videojax/data/pipeline.py)
  c.data.frames = 8 if variant != "imagen_video" else 16  # output frames of the stage
  c.data.height = 8 if tiny else 16  # output height
  c.data.width = 8 if tiny else 16  # output width
  c.data.frame_stride = 1 if tiny else 2  # source frames per output frame
  c.data.temporal_factor = 1  # tsr: output frames per given frame
  c.data.spatial_factor = 1  # ssr: output size / conditioning size
  c.data.crop = 0  # ssr: random crop size (0: whole frame)
  c.data.image_fraction = 0.0  # share of is_image examples (joint image-video training)
  c.data.batch_size = 4 if tiny else 16  # global batch size

  c.text = ml_collections.ConfigDict()
  c.text.encoder = "minilm" if variant != "imagen_video" else "t5"  # frozen encoder kind
  c.text.path = ""  # weights directory for t5 / bert ('' for minilm)
  c.text.max_len = 16 if variant != "imagen_video" else 128  # tokens per caption

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "cosine"  # log-SNR schedule
  c.diffusion.logsnr_min = -20.0  # its clipped range
  c.diffusion.logsnr_max = 20.0  # (upper end)
  c.diffusion.parameterization = "v"  # network output: 'eps', 'x0' or 'v'
  c.diffusion.weighting = "uniform"  # loss weighting
  c.diffusion.min_snr_gamma = 5.0  # for 'min_snr'

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 200 if tiny else 20_000  # optimizer steps
  c.train.ema_decay = 0.99 if tiny else 0.9999  # EMA of the parameters
  c.train.cond_dropout = 0.1  # classifier-free guidance: probability of the null text
  c.train.aug_max_level = 0.0  # conditioning augmentation (tsr / ssr stages)
  c.train.log_every = 20 if tiny else 100  # steps between scalar logs
  c.train.checkpoint_every = 50 if tiny else 1000  # steps between checkpoints
  c.train.keep_checkpoints = 3  # checkpoints kept
  c.train.eval_every = 100 if tiny else 2000  # steps between held-out losses
  c.train.eval_batches = 2  # validation batches per evaluation
  c.train.eval_logsnrs = (-5.0, 0.0, 5.0)  # fixed noise levels of the held-out loss

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-3 if tiny else 2e-4  # AdamW peak learning rate
  c.optim.warmup_steps = 10 if tiny else 1000  # linear warmup
  c.optim.total_steps = c.train.num_steps  # cosine decay horizon
  c.optim.end_lr_fraction = 0.1  # final learning rate / peak
  c.optim.weight_decay = 0.0  # decoupled weight decay
  c.optim.b1 = 0.9  # Adam beta1
  c.optim.b2 = 0.99  # Adam beta2
  c.optim.grad_clip = 1.0  # global-norm clipping
  c.optim.grad_accum_steps = 1  # micro-batches per update
  c.optim.trainable = ""  # regex of trainable parameter paths ('' = all)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # data-parallel axis (-1: the remaining devices)
  c.mesh.fsdp = 1  # parameter-sharding axis
  c.mesh.tensor = 1  # tensor-parallel axis
  c.mesh.num_devices = 0  # devices to use (0: all of them)
  return c
