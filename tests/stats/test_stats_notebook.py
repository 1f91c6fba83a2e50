"""notebooks/shard_stats.ipynb runs headless (nbclient) against a real small run and draws its figures."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "shard_stats.ipynb"


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_executes_and_draws_figures(corpus_out, tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    # a kernel spec pointing at this interpreter (the project's venv), whatever kernels the machine has
    spec_dir = tmp_path / "kernels" / "prosocial-venv"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "prosocial-corpus venv",
                "language": "python",
            }
        )
    )
    # Jupyter starts the kernel in notebooks/; a relative PROSOCIAL_OUT is taken from the folder above it
    kernel_cwd = tmp_path / "notebooks"
    kernel_cwd.mkdir()
    monkeypatch.setenv("PROSOCIAL_OUT", os.path.relpath(corpus_out["out"], tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    km = KernelManager(
        kernel_name="prosocial-venv",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
    )
    client = NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(kernel_cwd)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # funnel, drops, scores, tiers, languages, lengths, one shard's scores, shards, version drift
    assert len(images) >= 9
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert re.search(r"shard \d{5}\.parquet of curate/scored", text), text[-2000:]
    assert "no earlier version" not in text  # v2 is compared with v1
    (tmp_path / "executed.ipynb").write_text(nbformat.writes(nb))
