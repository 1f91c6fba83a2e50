"""Value taxonomy, seed recipes, fastText training and evaluation, the model bundle and the scoring step.

A leaf package: it imports neither `synthetic` nor `pipelines`.
"""
