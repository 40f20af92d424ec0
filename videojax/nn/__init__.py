"""Flax linen modules. They know nothing about noise: inputs in, predictions out."""
