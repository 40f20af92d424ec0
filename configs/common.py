"""The sections every stage config shares; each stage file fills in its own parts.

A stage config has the sections
  model      the denoiser: `name` (videojax/nn/denoisers.py) and its fields
             (configs/unet3d.py), plus `dtype` ('float32' / 'bfloat16').
  autoencoder  the latent space the stage diffuses in (videojax/nn/autoencoders.py);
             name '' for pixels.
  data       the dataset and the stage's view of it (videojax/data/pipeline.StageView).
  text       the frozen text encoder whose caption embeddings are cached.
  diffusion  schedule and objective.
  train      loop: steps, EMA, guidance dropout, conditioning augmentation, logging.
  optim      AdamW, schedule, clipping, accumulation, freezing.
  mesh       device mesh (data x fsdp x tensor) and its logical-axis rules.
  sample     how the stage samples (previews in training, the cascade at inference).
"""

import ml_collections

from configs import unet3d
from videojax.parallel import sharding

VARIANTS = ("tiny", "demo", "imagen_video")


def check_variant(stage: str, arg: str | None, extra: tuple[str, ...] = ()) -> str:
  variant = arg or "tiny"
  if variant not in VARIANTS + extra:
    raise ValueError(f"Unknown {stage} variant {variant!r}; expected one of "
                     f"{VARIANTS + extra}.")
  return variant


def stage_config(variant: str, *, arch: str, data: dict) -> ml_collections.ConfigDict:
  """A stage config of `variant` with the U-Net `arch` and the data-view fields `data`."""
  tiny, demo = variant == "tiny", variant == "demo"
  paper = variant.startswith("imagen_video")
  c = ml_collections.ConfigDict()
  c.seed = 0  # all randomness derives from (seed, step)
  arch_config = unet3d.get_config(arch)
  c.model = arch_config.model  # the denoiser's name and fields (configs/unet3d.py)
  c.model.text_dim = unet3d.T5_XXL_DIM if paper else 384  # width of the text embeddings
  c.model.dtype = "float32"  # compute dtype: 'float32' or 'bfloat16'
  c.model.remat = "none"  # rematerialisation: 'none', 'full' or 'save_dots'
  c.model.attention_impl = ml_collections.config_dict.placeholder(str)  # None, 'xla', 'cudnn'

  c.autoencoder = ml_collections.ConfigDict()
  c.autoencoder.name = ""  # '' (pixels) or an autoencoder of nn/autoencoders.py, + its fields

  frames, height, width, _ = arch_config.input
  c.data = ml_collections.ConfigDict()
  c.data.dataset = "video_folder" if paper else "moving_shapes"  # builder name (data/builders.py)
  c.data.config = "" if paper else "base"  # its builder config ('' = the default)
  c.data.folder = ""  # video_folder only: the folder of video files (and captions.jsonl)
  c.data.data_dir = ""  # '' = ~/tensorflow_datasets; built on first use if missing
  c.data.kind = "base"  # the stage kind, what it conditions on: 'base', 'tsr' or 'ssr'
  c.data.frames = frames  # output frames of the stage
  c.data.height = height  # output height
  c.data.width = width  # output width
  c.data.fps = 8.0  # output frame rate (the cascade checks fps from stage to stage)
  c.data.frame_stride = 1  # source frames per output frame
  c.data.temporal_factor = 1  # tsr: output frames per given frame
  c.data.spatial_factor = 1  # ssr: output size / conditioning size
  c.data.crop = 0  # ssr: random square crop of the target (0: whole frame)
  c.data.image_fraction = 0.0  # share of is_image examples (joint image-video training)
  c.data.batch_size = 4 if tiny else 16  # global batch size
  c.data.workers = 0  # processes making batches ahead of the loop (0: in the loop's process)
  c.data.update(data)

  c.text = ml_collections.ConfigDict()
  c.text.encoder = "t5" if paper else "minilm"  # frozen encoder kind (nn/text.py)
  c.text.path = ""  # weights directory for t5 / bert ('' for minilm)
  c.text.max_len = 128 if paper else 16  # tokens per caption

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.formulation = "vp"  # 'vp' (eps / x0 / v diffusion) or 'flow' (flow matching)
  c.diffusion.schedule = "cosine"  # vp: log-SNR schedule (also noises conditioning videos)
  c.diffusion.logsnr_min = -20.0  # its clipped range
  c.diffusion.logsnr_max = 20.0  # (upper end)
  c.diffusion.parameterization = "v"  # network output: 'eps', 'x0' or 'v'
  c.diffusion.weighting = "uniform"  # loss weighting
  c.diffusion.min_snr_gamma = 5.0  # for 'min_snr'
  c.diffusion.train_logsnr_shift = 0.0  # training only: log-SNR shift of the noise levels
  c.diffusion.residual = False  # sr stages: diffuse video - (bicubic / frame-blended) input
  c.diffusion.time_distribution = "logit_normal"  # flow: training times ('uniform' too)
  c.diffusion.time_mean = 0.0  # flow: the logit-normal's mean
  c.diffusion.time_std = 1.0  # flow: the logit-normal's std
  c.diffusion.time_shift = 1.0  # flow: times shifted to the noisy end (> 1), training and
  # sampling (diffusion.flow.resolution_shift: SD3's rule for larger videos)

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 200 if tiny else (4000 if demo else 200_000)  # optimizer steps
  c.train.init_from = ""  # new runs: start from these weights (export / workdir; '' = random)
  c.train.ema_decay = 0.99 if tiny else 0.999  # EMA of the parameters
  c.train.cond_dropout = 0.1  # classifier-free guidance: probability of the null text
  c.train.aug_max_level = 0.0  # conditioning augmentation (tsr / ssr stages)
  c.train.log_every = 20 if tiny else 100  # steps between scalar logs
  c.train.checkpoint_every = 50 if tiny else (250 if demo else 1000)  # steps between saves
  c.train.keep_checkpoints = 3  # checkpoints kept
  c.train.eval_every = 100 if tiny else (500 if demo else 2000)  # steps between evaluations
  c.train.eval_batches = 2  # validation batches per evaluation
  c.train.eval_logsnrs = (-5.0, 0.0, 5.0)  # fixed noise levels of the held-out loss
  c.train.preview_every = 100 if tiny else (500 if demo else 2000)  # steps between previews
  c.train.preview_count = 2 if tiny else 4  # validation prompts per preview

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-3 if tiny else (5e-4 if demo else 1e-4)  # AdamW peak rate
  c.optim.warmup_steps = 10 if tiny else (200 if demo else 10_000)  # linear warmup
  c.optim.total_steps = 0  # cosine decay horizon (0: train.num_steps)
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
  c.mesh.rules = sharding.UNET_RULES  # logical axis -> mesh axes (parallel/sharding.py)

  c.sample = ml_collections.ConfigDict()
  c.sample.sampler = "ddim"  # 'ddpm', 'ddim', 'dpm_solver_pp' or 'heun'
  c.sample.num_steps = 8 if tiny else 32  # denoising steps
  c.sample.spacing = "uniform"  # step grid: 'uniform' in t, 'logsnr' or 'karras'
  c.sample.guidance_scale = 3.0  # classifier-free guidance (1: none)
  c.sample.threshold = "dynamic"  # x0 clipping: 'none', 'static' or 'dynamic'
  c.sample.percentile = 0.995  # dynamic thresholding percentile
  c.sample.aug_level = 0.0  # noise level of the conditioning video (tsr / ssr)
  return c
