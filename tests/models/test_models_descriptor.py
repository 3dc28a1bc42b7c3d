"""The one model descriptor: the name rule, the scores column and the field checks every
stage (convert's metadata, scoring's models, the ensemble file's members) relies on."""

from __future__ import annotations

import pytest

from models.descriptor import ModelDescriptor, check_model_name, column_name
from models.errors import DataError, UsageError


def _descriptor(**overrides) -> ModelDescriptor:
    fields = dict(
        name="mnv2", input_size=(64, 48), class_names=("female", "male"), positive_class="male"
    )
    return ModelDescriptor(**(fields | overrides))


@pytest.mark.parametrize("name", ["a", "mnv2", "ResNet_50", "x" * 64])
def test_names_that_make_a_plain_column_are_accepted(name):
    assert check_model_name(name) == name
    assert _descriptor(name=name).column == column_name(name) == f"p_{name}"


@pytest.mark.parametrize("name", ["", "1st", "_x", "p-1", "a.b", "a\n", "x" * 65, "é", None, 3])
def test_the_name_rule_refuses_what_would_not_be_a_plain_column(name):
    with pytest.raises(DataError, match=r"must be a letter then letters, digits or '_' "):
        check_model_name(name)
    with pytest.raises(DataError, match=r"becomes the scoring column p_<name>"):
        _descriptor(name=name)


def test_the_name_rule_names_the_option_and_raises_the_callers_error():
    with pytest.raises(UsageError, match=r"^--name '1st' must be a letter then"):
        check_model_name("1st", "--name", UsageError)


def test_descriptor_fields_are_checked_and_json_lists_become_tuples():
    d = _descriptor(input_size=[64, 48], class_names=["female", "male"])
    assert d == _descriptor() and d.positive_index == 1 and d.negative_class == "female"
    assert d.describe() == {
        "name": "mnv2",
        "input_size": [64, 48],
        "class_names": ["female", "male"],
        "positive_class": "male",
    }
    with pytest.raises(DataError, match=r"class_names must be two distinct names"):
        _descriptor(class_names=("male", "male"))
    with pytest.raises(DataError, match=r"positive_class 'boy' is not one of"):
        _descriptor(positive_class="boy")
    with pytest.raises(DataError, match=r"input_size must be two positive integers"):
        _descriptor(input_size=(64, 0))
    with pytest.raises(DataError, match=r"input_size must be two positive integers"):
        _descriptor(input_size=(True, 64))
