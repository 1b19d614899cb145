"""Paired coders of the cache: decode(encode(v)) gives v back, for any value the Dataset contract allows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from roundtrip import attrs_dicts
from xarray.backends import BackendArray
from xarray.core import indexing

from ddxr.coders import (
    CODES_SUFFIX,
    JSON_ATTRS,
    VALUES_SUFFIX,
    CategoricalCoder,
    JsonAttrsCoder,
    NullableBooleanCoder,
    code_dtype,
    equal_runs,
    factorize,
    is_nullable_boolean,
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
    assert codes.dtype == code_dtype(len(table)) and table.dims == ("level__value",)
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


@settings(max_examples=60, deadline=None)
@given(
    values=st.one_of(
        st.lists(st.one_of(st.sampled_from(["a", "b", ""]), st.none()), max_size=30),
        st.lists(st.one_of(st.sampled_from([0.0, -0.0, 1.5]), st.just(float("nan"))), max_size=30),
    )
)
def test_factorize_by_runs_is_pandas_factorize(values: list) -> None:
    array = np.array(values, dtype=object if values and isinstance(values[0], str | None) else None)
    codes, uniques = factorize(array)
    expected_codes, expected_uniques = pd.factorize(array)
    np.testing.assert_array_equal(codes, expected_codes)
    assert pd.Index(uniques).equals(pd.Index(expected_uniques))


def test_runs_of_values_that_cannot_compare_are_single_values() -> None:
    starts, lengths = equal_runs(np.array([pd.NA, pd.NA, "a", "a"], dtype=object))
    assert starts.tolist() == [0, 1, 2, 3] and lengths.tolist() == [1, 1, 1, 1]
    codes, _ = factorize(np.array([pd.NA, "a", "a"], dtype=object))
    assert codes.tolist() == [-1, 0, 0]


@pytest.mark.parametrize(("size", "dtype"), [(0, np.int8), (126, np.int8), (127, np.int16), (32_767, np.int32)])
def test_codes_are_as_narrow_as_pandas_makes_them(size: int, dtype: type) -> None:
    assert code_dtype(size) == dtype
    codes = np.zeros(3, dtype=code_dtype(size))
    levels = [pd.Index(np.arange(max(size, 1), dtype=np.float64))]
    assert pd.MultiIndex(levels=levels, codes=[codes]).codes[0].dtype == dtype  # taken as is, not converted


def test_strings_are_told_from_nullable_booleans_by_their_first_value() -> None:
    class Strings(BackendArray):
        def __init__(self) -> None:
            self.shape, self.dtype, self.read = (1000,), np.dtype(object), 0

        def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
            return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._read)

        def _read(self, key: tuple) -> np.ndarray:
            values = np.full(self.shape, "run", dtype=object)[key]
            self.read += values.size
            return values

    strings = Strings()
    assert not is_nullable_boolean(xr.Variable("point", indexing.LazilyIndexedArray(strings)))
    assert strings.read == 1  # millions of strings along point are not scanned
    assert not is_nullable_boolean(xr.Variable("run", np.array(["a", None, True], dtype=object)))
    assert is_nullable_boolean(xr.Variable("run", np.array([None, True, False], dtype=object)))
