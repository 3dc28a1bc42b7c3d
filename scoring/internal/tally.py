"""Which Ray node scored how many rows: each scorer actor keeps a tiny JSON file in the
staging folder (shared storage, like the output: a folder or an object-store prefix) that the
driver sums into the summary."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scoring.onnx_scorer import OnnxScorer


class TalliedScorer(OnnxScorer):
    """:class:`OnnxScorer` that also counts its batches and rows in ``tally_dir``."""

    def __init__(self, *args: Any, tally_dir: str, tally_fs: Any = None, **kwargs: Any):
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
        self.fs_ = tally_fs
        name = f"{self.node_id_[:16]}-{os.getpid()}.json"
        self.path_ = f"{tally_dir}/{name}" if tally_fs is not None else Path(tally_dir) / name
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
            if self.fs_ is not None:  # an object's PUT replaces it whole
                with self.fs_.open_output_stream(self.path_, compression=None) as fh:
                    fh.write(json.dumps(self.tally_).encode())
                return
            tmp = self.path_.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.tally_))
            os.replace(tmp, self.path_)
        except OSError:
            pass


def scorer_actors(tally_dir: Path | str, filesystem: Any = None) -> list[dict[str, Any]]:
    """One record per scorer actor that has started (all attempts): ``{"node_id", "ip",
    "pid", "batches", "rows"}``. The way to find the actors' processes (operators, fault
    tests) without Ray's private modules or process titles. ``filesystem``: the pyarrow file
    system ``tally_dir`` is in (None: a local folder)."""
    if filesystem is None:
        return _tallies(Path(tally_dir))
    return _fs_tallies(str(tally_dir), filesystem)


def read_tally(tally_dir: Path | str, filesystem: Any = None) -> dict[str, dict[str, Any]]:
    """node id -> ``{"ip", "actors", "batches", "rows"}`` summed over :func:`scorer_actors`."""
    nodes: dict[str, dict[str, Any]] = {}
    for t in scorer_actors(tally_dir, filesystem):
        node = nodes.setdefault(t["node_id"], {"ip": t["ip"], "actors": 0, "batches": 0, "rows": 0})
        node["actors"] += 1
        node["batches"] += t["batches"]
        node["rows"] += t["rows"]
    return nodes


def _tallies(tally_dir: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted(tally_dir.glob("*.json")) if tally_dir.is_dir() else []:
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _fs_tallies(tally_dir: str, filesystem: Any) -> list[dict[str, Any]]:
    from pyarrow import fs as pafs

    out = []
    for info in filesystem.get_file_info(pafs.FileSelector(str(tally_dir), allow_not_found=True)):
        if not info.base_name.endswith(".json"):
            continue
        try:
            with filesystem.open_input_stream(info.path, compression=None) as fh:
                out.append(json.loads(fh.read()))
        except (OSError, json.JSONDecodeError):
            continue
    return out
