"""ONNX Runtime CPU sessions as every stage creates them (no TensorFlow here)."""

from __future__ import annotations

from typing import Any


def make_session(model: str | bytes, threads: int = 1) -> Any:
    """An ORT CPU session with ``threads`` intra-op threads and spinning off: several sessions
    (or workers) share the cores, and spinning threads would steal them from each other."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
