"""Training: states, pure steps and loops."""
