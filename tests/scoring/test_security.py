"""Scoring loads only ONNX and JSON: a pickle handed over as a model or an ensemble file is
refused with a clear error and never unpickled (its payload would create a folder)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from models.errors import DataError
from scoring.ensemble_spec import EnsembleSpec
from scoring.modelset import load_models


class Payload:
    """Unpickling this runs ``os.mkdir(marker)``: proof that something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture
def pickles(tmp_path) -> tuple[Path, list[Path]]:
    marker = tmp_path / "unpickled"
    data = pickle.dumps(Payload(marker), protocol=pickle.HIGHEST_PROTOCOL)
    pickle.loads(data)  # the payload works: it makes the marker
    assert marker.is_dir()
    marker.rmdir()
    files = []
    for name in ("model.pkl", "disguised.onnx", "ensemble.json"):
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    return marker, files


def test_a_pickle_given_as_a_model_is_refused_unread(pickles):
    marker, (pkl, disguised, _) = pickles
    for path in (pkl, disguised):
        with pytest.raises(DataError, match=rf"{path.name} is not an ONNX model"):
            load_models([path])
    assert not marker.exists()


def test_a_pickle_given_as_an_ensemble_file_is_refused_unread(pickles):
    marker, (*_, ensemble) = pickles
    with pytest.raises(DataError, match="ensemble file .*ensemble.json is not a JSON text file"):
        EnsembleSpec.load(ensemble)
    assert not marker.exists()


def test_a_pickle_given_to_convert_is_refused_unread(pickles):
    from convert.loading import load_keras_model

    marker, (pkl, *_) = pickles
    with pytest.raises(DataError, match=r"model.pkl is not a Keras model \(a file starting with"):
        load_keras_model(pkl)
    assert not marker.exists()
