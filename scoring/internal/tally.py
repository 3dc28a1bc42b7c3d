"""Which Ray node scored how many rows: each scorer actor keeps a tiny JSON file in the
staging folder (shared storage, like the output) that the driver sums into the summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scoring.onnx_scorer import OnnxScorer


class TalliedScorer(OnnxScorer):
    """:class:`OnnxScorer` that also counts its batches and rows in ``tally_dir``."""

    def __init__(self, *args: Any, tally_dir: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        import ray

        self.node_id_ = ray.get_runtime_context().get_node_id()
        self.tally_ = {
            "node_id": self.node_id_,
            "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "batches": 0,
            "rows": 0,
        }
        self.path_ = Path(tally_dir) / f"{self.node_id_[:16]}-{os.getpid()}.json"
        self._save()

    def __call__(self, batch: Any) -> Any:
        out = super().__call__(batch)
        self.tally_["batches"] += 1
        self.tally_["rows"] += batch.num_rows
        self._save()
        return out

    def _save(self) -> None:
        # A bookkeeping file must never fail the scoring: a lost count is only a lost count.
        try:
            tmp = self.path_.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.tally_))
            os.replace(tmp, self.path_)
        except OSError:
            pass


def read_tally(tally_dir: Path) -> dict[str, dict[str, Any]]:
    """node id -> ``{"ip", "actors", "batches", "rows"}`` over every actor (all attempts)."""
    nodes: dict[str, dict[str, Any]] = {}
    for f in sorted(tally_dir.glob("*.json")) if tally_dir.is_dir() else []:
        try:
            t = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        node = nodes.setdefault(t["node_id"], {"ip": t["ip"], "actors": 0, "batches": 0, "rows": 0})
        node["actors"] += 1
        node["batches"] += t["batches"]
        node["rows"] += t["rows"]
    return nodes
