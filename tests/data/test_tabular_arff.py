"""Tests for cenas_jax.data.tabular.arff: numeric/nominal attributes, quotes, missing values, errors."""

from __future__ import annotations

import numpy as np
import pytest

from cenas_jax.data.tabular import arff
from cenas_jax.errors import DataError


ARFF = """% A small test relation
@RELATION 'tiny data'

@ATTRIBUTE id INTEGER
@ATTRIBUTE 'petal length' REAL
@attribute colour {red, 'dark blue', "x,y"}
@ATTRIBUTE width numeric
@ATTRIBUTE class {neg,pos}

@DATA
% comment inside data
1, 1.5, red, 0.5, pos
2, ?, 'dark blue', 1.0, neg
3, 2.5, "x,y", ?, pos
4, 3.0, ?, 2.0, neg
"""


def test_arff_numeric_nominal_quotes_and_missing(tmp_path):
  path = tmp_path / "tiny.arff"
  path.write_text(ARFF)
  ds = arff.load_arff_dataset(path, target="class", drop=["id"])
  assert ds.name == "tiny data" and ds.task == "binclass" and ds.class_names == ("neg", "pos")
  np.testing.assert_array_equal(ds.y, [1, 0, 1, 0])
  assert ds.num_names == ("petal length", "width") and ds.cat_names == ("colour",)
  assert ds.cat_categories == (("red", "dark blue", "x,y"),)
  np.testing.assert_array_equal(ds.x_cat[:, 0], [0, 1, 2, -1])
  np.testing.assert_array_equal(np.isnan(ds.x_num), [[0, 0], [1, 0], [0, 1], [0, 0]])
  assert ds.x_num[3, 0] == 3.0


@pytest.mark.parametrize("bad, pattern", [
    (ARFF.replace("width numeric", "width string"), r"line 7: attribute 'width' has type 'string'"),
    (ARFF.replace("4, 3.0, ?, 2.0, neg", "4, 3.0, ?, neg"), r"line 15: 4 values, but 5 attributes"),
    (ARFF.replace("4, 3.0, ?, 2.0, neg", "4, 3.0, green, 2.0, neg"),
     r"line 15: column 'colour' holds 'green'"),
    (ARFF.replace("4, 3.0, ?, 2.0, neg", "4, abc, red, 2.0, neg"),
     r"line 15: column 'petal length' must be numeric"),
    (ARFF.replace("4, 3.0, ?, 2.0, neg", "{0 4, 4 neg}"), r"line 15: sparse ARFF"),
    ("@relation x\n@attribute a numeric\n", r"no @data section"),
])
def test_arff_bad_inputs(tmp_path, bad, pattern):
  path = tmp_path / "bad.arff"
  path.write_text(bad)
  with pytest.raises(DataError, match=pattern):
    arff.load_arff_dataset(path, target="class")
