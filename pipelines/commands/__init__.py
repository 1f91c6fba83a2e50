"""Thin `corpus` commands that only parse arguments and call into the stages."""
