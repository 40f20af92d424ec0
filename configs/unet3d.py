"""Video U-Net architectures (`videojax.nn.unet3d.UNet3D` fields) by variant.

  --config configs/unet3d.py:<variant>

Variants:
  tiny, tiny_tsr, tiny_ssr  unit tests: seconds on CPU.
  demo_base, demo_tsr, demo_ssr
                            the demo cascade, trained on CPU:
                            base 8x16x16 -> TSR 16x16x16 -> SSR 16x64x64.
  iv_base, iv_tsr1, iv_ssr1, iv_ssr2, iv_tsr2, iv_tsr3, iv_ssr3
                            Imagen Video's 7 stages in cascade order (Ho et al. 2022).
                            The paper gives each stage's output size, that the base
                            uses temporal self-attention while the SR stages use
                            temporal convolutions (the highest-resolution ones fully
                            convolutional), and the parameter counts, but not the
                            channel widths: the widths here are ours, chosen so the
                            counts land near the paper's (benchmarks/unet_params.py).
Each config holds `model` (the denoiser's name and the U-Net fields), `kind` (the
stage kind it serves), `input` (T, H, W, C of the stage's output) and `text_len`
(tokens of text context).
"""

import ml_collections

T5_XXL_DIM = 4096  # width of T5-XXL encoder embeddings (Imagen Video's text encoder)

# name: (model fields, (T, H, W, C), paper parameter count or None)
_VARIANTS = {
    "tiny": (dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, head_dim=8,
                  temporal_conv_levels=(0, 1), spatial_attn_levels=(1,),
                  temporal_attn_levels=(0, 1), cross_attn_levels=(1,),
                  temporal_downsample=(False,), text_dim=12), (4, 8, 8, 3), None),
    "tiny_tsr": (dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, head_dim=8,
                      temporal_conv_levels=(0, 1), spatial_attn_levels=(),
                      temporal_attn_levels=(1,), cross_attn_levels=(1,),
                      temporal_downsample=(False,), text_dim=12), (8, 8, 8, 3), None),
    "tiny_ssr": (dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, head_dim=8,
                      temporal_conv_levels=(0, 1), spatial_attn_levels=(),
                      temporal_attn_levels=(), cross_attn_levels=(1,),
                      temporal_downsample=(False,), text_dim=12), (4, 16, 16, 3), None),
    # Sized to train on a 2-core CPU within an hour and sample in seconds.
    "demo_base": (dict(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                       head_dim=32, temporal_conv_levels=(0, 1, 2),
                       spatial_attn_levels=(1, 2), temporal_attn_levels=(0, 1, 2),
                       cross_attn_levels=(0, 1, 2), temporal_downsample=(False, False),
                       text_dim=384, frame_positions=8,
                       # The field is fitted on the frozen network (experiments.fit_field):
                       # it gives the sign of motion (benchmarks/results/direction_field.md).
                       frame_conditioning=True, frame_field=True),
                  (8, 16, 16, 3), None),
    "demo_tsr": (dict(base_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                      head_dim=32, temporal_conv_levels=(0, 1), spatial_attn_levels=(),
                      temporal_attn_levels=(1,), cross_attn_levels=(1,),
                      temporal_downsample=(False,), text_dim=384),
                 (16, 16, 16, 3), None),
    "demo_ssr": (dict(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1,
                      head_dim=32, temporal_conv_levels=(1, 2), spatial_attn_levels=(),
                      temporal_attn_levels=(), cross_attn_levels=(2,),
                      temporal_downsample=(False, False), text_dim=384),
                 (16, 64, 64, 3), None),
    # Imagen Video: base 16x40x24 at 3 fps with temporal attention.
    "iv_base": (dict(base_channels=704, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                     head_dim=64, temporal_conv_levels=(0, 1, 2, 3),
                     spatial_attn_levels=(1, 2, 3), temporal_attn_levels=(0, 1, 2, 3),
                     cross_attn_levels=(1, 2, 3), temporal_downsample=(False,) * 3,
                     text_dim=T5_XXL_DIM), (16, 24, 40, 3), 5.6e9),
    "iv_tsr1": (dict(base_channels=368, channel_mult=(1, 2, 4, 4), num_res_blocks=3,
                     head_dim=64, temporal_conv_levels=(0, 1, 2, 3), spatial_attn_levels=(2, 3),
                     temporal_attn_levels=(), cross_attn_levels=(2, 3),
                     temporal_downsample=(False,) * 3, text_dim=T5_XXL_DIM),
                (32, 24, 40, 3), 1.7e9),
    "iv_ssr1": (dict(base_channels=352, channel_mult=(1, 2, 4, 4), num_res_blocks=3,
                     head_dim=64, temporal_conv_levels=(0, 1, 2, 3), spatial_attn_levels=(3,),
                     temporal_attn_levels=(), cross_attn_levels=(3,),
                     temporal_downsample=(False,) * 3, text_dim=T5_XXL_DIM),
                (32, 48, 80, 3), 1.4e9),
    "iv_ssr2": (dict(base_channels=216, channel_mult=(1, 2, 4, 8), num_res_blocks=3,
                     head_dim=64, temporal_conv_levels=(0, 1, 2, 3), spatial_attn_levels=(),
                     temporal_attn_levels=(), cross_attn_levels=(3,),
                     temporal_downsample=(False,) * 3, text_dim=T5_XXL_DIM),
                (32, 192, 320, 3), 1.2e9),
    "iv_tsr2": (dict(base_channels=256, channel_mult=(1, 2, 4, 6), num_res_blocks=2,
                     head_dim=64, temporal_conv_levels=(0, 1, 2, 3), spatial_attn_levels=(),
                     temporal_attn_levels=(), cross_attn_levels=(),
                     temporal_downsample=(False,) * 3, text_dim=T5_XXL_DIM),
                (64, 192, 320, 3), 7.8e8),
    "iv_tsr3": (dict(base_channels=232, channel_mult=(1, 2, 4, 6), num_res_blocks=2,
                     head_dim=64, temporal_conv_levels=(0, 1, 2, 3), spatial_attn_levels=(),
                     temporal_attn_levels=(), cross_attn_levels=(),
                     temporal_downsample=(False,) * 3, text_dim=T5_XXL_DIM),
                (128, 192, 320, 3), 6.3e8),
    "iv_ssr3": (dict(base_channels=200, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                     head_dim=64, temporal_conv_levels=(0, 1, 2, 3), spatial_attn_levels=(),
                     temporal_attn_levels=(), cross_attn_levels=(),
                     temporal_downsample=(False,) * 3, text_dim=T5_XXL_DIM),
                (128, 768, 1280, 3), 3.4e8),
}
VARIANTS = tuple(_VARIANTS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "tiny"
  if variant not in _VARIANTS:
    raise ValueError(f"Unknown unet3d variant {variant!r}; expected one of {VARIANTS}.")
  fields, shape, paper = _VARIANTS[variant]
  c = ml_collections.ConfigDict()
  c.variant = variant  # which architecture this is
  c.model = ml_collections.ConfigDict({"name": "unet3d", **fields})  # denoiser + its fields
  c.input = shape  # (T, H, W, C) of the stage's output video
  kind = "ssr" if "ssr" in variant else "tsr" if "tsr" in variant else "base"
  c.kind = kind  # the stage kind it serves (what it conditions on: a stage's data.kind)
  c.text_len = 128 if variant.startswith("iv_") else 16  # text tokens per caption
  c.paper_params = paper  # the paper's parameter count for this stage, if it gives one
  return c
