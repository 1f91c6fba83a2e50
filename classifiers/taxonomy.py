"""The value taxonomy (dimensions, definitions, 0-5 rubrics), loaded from `taxonomy.yaml`.

Kept as data so that a community can read, criticise and extend it without reading code, and so the LLM
annotator (synthetic.annotate) builds its prompts from the same text the model card shows.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from classifiers.yamlconfig import read_yaml, validate

TAXONOMY_FILE = Path(__file__).resolve().parent / "taxonomy.yaml"


class Dimension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    trained_from: Literal["human", "rubric"] = Field(
        description="'human': learned from the seed recipes; 'rubric': waits for LLM annotation."
    )
    definition: str
    rubric: list[str] = Field(
        min_length=5, max_length=5, description="Five additive criteria, one point each."
    )
    seeds: str

    def rubric_prompt(self) -> str:
        """The additive 0-5 rubric as an annotation prompt body."""
        lines = [f"Dimension: {self.name}. {self.definition}", "Score the text from 0 to 5, adding points:"]
        lines += [f"- {criterion}" for criterion in self.rubric]
        return "\n".join(lines)


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    dimensions: dict[str, Dimension]

    @property
    def human_dimensions(self) -> list[str]:
        return [name for name, dim in self.dimensions.items() if dim.trained_from == "human"]

    @property
    def rubric_dimensions(self) -> list[str]:
        return [name for name, dim in self.dimensions.items() if dim.trained_from == "rubric"]


@lru_cache(maxsize=4)
def load_taxonomy(path: str | Path = TAXONOMY_FILE) -> Taxonomy:
    """Parse and validate the taxonomy file (cached)."""
    data = read_yaml(path)
    for name, dim in (data.get("dimensions") or {}).items():
        if isinstance(dim, dict):
            dim.setdefault("name", name)
    return validate(data, Taxonomy, str(path))
