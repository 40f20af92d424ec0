"""Diffusion core: pure, jittable functions over arrays and a `denoise_fn`; no Flax.

The top level holds the variance-preserving formulation; flow matching is the `flow`
submodule (`diffusion.flow.sample`, `diffusion.flow.diffuse`, ...), whose names would
otherwise clash with the VP ones.
"""

from videojax.diffusion import flow
from videojax.diffusion.conditioning import augment, sample_level
from videojax.diffusion.guidance import (classifier_free_guidance, dynamic_threshold,
                                         guided_prediction, make_x0_transform,
                                         noisy_end_guidance, static_threshold,
                                         time_reversal_guidance)
from videojax.diffusion.losses import diffusion_loss, loss_weight, masked_mean
from videojax.diffusion.parameterization import convert, diffuse, regression_target
from videojax.diffusion.samplers import SAMPLERS, sample
from videojax.diffusion.schedules import (SCHEDULES, SPACINGS, Schedule, alpha_sigma,
                                          get_schedule, sample_logsnr, schedule_from_config,
                                          shifted, step_grid)
