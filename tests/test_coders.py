"""Paired coders of the cache: decode(encode(v)) gives v back, for any value the Dataset contract allows."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from roundtrip import attrs_dicts

from ddxr.coders import (
    CODES_SUFFIX,
    JSON_ATTRS,
    VALUES_SUFFIX,
    CategoricalCoder,
    JsonAttrsCoder,
    NullableBooleanCoder,
)
from ddxr.errors import CacheError

_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=10)


@settings(max_examples=60, deadline=None)
@given(attrs=attrs_dicts)
def test_json_attrs_round_trip(attrs: dict) -> None:
    variable = xr.Variable("point", np.zeros(2, np.float32), attrs=attrs)
    encoded = JsonAttrsCoder().encode(variable, "metric")
    # what netCDF stores: strings and numbers only
    assert all(isinstance(value, str | int | float) for value in encoded.attrs.values())
    decoded = JsonAttrsCoder().decode(encoded, "metric")
    assert decoded.attrs == attrs
    assert JSON_ATTRS not in decoded.attrs
    xr.testing.assert_identical(decoded, variable)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.booleans(), st.none()), min_size=1, max_size=30).filter(
        lambda v: any(value is not None for value in v)
    )
)
def test_nullable_booleans_round_trip(values: list) -> None:
    variable = xr.Variable("run", np.array(values, dtype=object), attrs={"long_name": "repaired"})
    coder = NullableBooleanCoder()
    encoded = coder.encode(variable, "repaired")
    assert encoded.dtype == np.int8 and encoded.encoding["_FillValue"] == -1
    assert encoded.values.tolist() == [-1 if value is None else int(value) for value in values]
    decoded = coder.decode(encoded, "repaired")
    assert decoded.values.tolist() == values
    xr.testing.assert_identical(decoded, variable)
    # plain xarray masks the fill value: the masked float form decodes the same
    masked = xr.Variable("run", np.where(encoded.values == -1, np.nan, encoded.values), attrs=encoded.attrs)
    assert coder.decode(masked, "repaired").values.tolist() == values


def test_nullable_boolean_coder_leaves_other_variables_alone() -> None:
    coder = NullableBooleanCoder()
    for variable in (
        xr.Variable("run", np.array([True, False])),
        xr.Variable("run", np.array(["True", None], dtype=object)),
        xr.Variable("run", np.array([None, None], dtype=object)),
        xr.Variable("run", np.array([1.0, np.nan])),
    ):
        assert coder.encode(variable) is variable
        assert coder.decode(variable) is variable


@settings(max_examples=60, deadline=None)
@given(
    values=st.one_of(
        st.lists(_TEXT, max_size=30).map(lambda v: np.array(v, dtype=object)),
        st.lists(st.floats(allow_nan=False, width=64), max_size=30).map(lambda v: np.array(v, dtype=np.float64)),
    ),
    attrs=attrs_dicts,
)
def test_categories_round_trip(values: np.ndarray, attrs: dict) -> None:
    variable = xr.Variable("point", values, attrs=attrs)
    coder = CategoricalCoder()
    encoded = coder.encode("level", variable)
    codes, table = encoded[f"level{CODES_SUFFIX}"], encoded[f"level{VALUES_SUFFIX}"]
    assert codes.dtype == np.int32 and table.dims == ("level__value",)
    assert len(table) == len(set(values.tolist()))
    xr.testing.assert_identical(encoded["level"], variable)  # the plain copy is the variable itself
    xr.testing.assert_identical(coder.decode("level", codes, table), variable)


def test_categories_refuse_codes_outside_their_table() -> None:
    coder = CategoricalCoder()
    encoded = coder.encode("params", xr.Variable("point", np.array(["4M", "1B"], dtype=object)))
    damaged = encoded["params__codes"].copy(data=np.array([0, 2], dtype=np.int32))
    with pytest.raises(CacheError, match=r"variable 'params': expected codes in \[0, 2\).*found codes from 0 to 2"):
        coder.decode("params", damaged, encoded["params__values"])
    with pytest.raises(CacheError, match="expected 1-D integer codes"):
        coder.decode("params", encoded["params__values"], encoded["params__values"])
