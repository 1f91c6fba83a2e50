"""Synthetic flourishing dialogues: LLM engines, scenario sampling, guided generation, validation, annotation.

Imports `classifiers` (to score and validate); never `pipelines`.
"""
