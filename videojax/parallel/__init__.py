"""Meshes, logical axis rules and shardings: the only place mesh axes are named."""
