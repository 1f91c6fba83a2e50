"""The datatrove scoring step of the curate stage: `ps_<dimension>`, `prosocial` and `classifier_version`.

Why our own step rather than datatrove's FastTextClassifierFilter: that filter crashes in its annotate-only
mode, loads one model, and predicts one document at a time. This step loads the whole bundle once per
worker process (classifiers.bundle.cached_bundle; the step itself pickles without any model, so executors
can ship it to workers), scores documents in batches with one fastText call per dimension, and never drops
documents: filtering on scores is the mix stage's job, so one scored corpus serves every profile.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from classifiers.bundle import BundleError, cached_bundle, read_manifest, resolve_bundle_path
from classifiers.profiles import ProfileError, load_profile


class ProsocialScorer(PipelineStep):
    """Annotate each document with `ps_<dim>` (float in [0,1]), `prosocial` and `classifier_version`.

    Args:
        bundle: bundle folder, or "default" for the shipped bundle.
        profile: profile name or YAML path whose aggregate becomes `prosocial`.
        batch_size: documents per batched predict (large batches amortise the Python overhead).
        prefix: metadata key prefix of the per-dimension scores.
    """

    name = "🤝 Prosocial scorer"
    type = "🔢 - SCORER"

    def __init__(
        self,
        bundle: str | Path = "default",
        profile: str = "default",
        batch_size: int = 512,
        prefix: str = "ps_",
    ):
        super().__init__()
        # absolute: a worker started in another folder (`dask worker` by hand, SLURM) resolves the same file
        self.bundle_path = os.path.abspath(resolve_bundle_path(bundle))
        self.batch_size = int(batch_size)
        self.prefix = prefix
        self.profile = load_profile(profile)
        # fail at construction (in the driver), not inside a worker an hour later
        manifest = read_manifest(Path(self.bundle_path))
        missing = [d for d in self.profile.dimensions if d not in manifest["dimensions"]]
        if missing:
            raise ProfileError(
                f"profile '{self.profile.name}' weights dimensions the bundle {self.bundle_path} does not score: "
                f"{missing} (bundle dimensions: {manifest['dimensions']})"
            )
        self.version = manifest["version"]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data is None:
            return
        bundle = cached_bundle(self.bundle_path)
        version = bundle.version
        if version != self.version:  # rebuilt in place since the run started: never mix two in one corpus
            raise BundleError(
                f"{self.bundle_path}: bundle is version {version} in this worker, but the run started with "
                f"{self.version} (rebuilt during the run?); rerun to score everything with one version"
            )
        dims = bundle.dimensions
        keys = [self.prefix + d for d in dims]
        iterator: Iterator = iter(data)
        while batch := list(islice(iterator, self.batch_size)):
            with self.track_time(unit="batch"):
                scores = bundle.score([doc.text for doc in batch])
                prosocial = self.profile.aggregate(scores)
                columns = [np.clip(scores[d], 0.0, 1.0).tolist() for d in dims]
                pros = prosocial.tolist()
                for index, doc in enumerate(batch):
                    meta = doc.metadata
                    for key, column in zip(keys, columns, strict=True):
                        meta[key] = column[index]
                    meta["prosocial"] = pros[index]
                    meta["classifier_version"] = version
            self.stat_update("scored", value=len(batch))
            yield from batch
