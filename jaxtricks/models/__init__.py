"""Flax linen models; params are plain pytrees."""
