"""videojax: cascaded text-to-video diffusion in JAX/Flax."""

__version__ = "0.1.0"
