"""Tests for the NB201 cell space encodings."""

from __future__ import annotations

import ast
import itertools

import numpy as np
import pytest

from cenas_jax.spaces import nb201

BEST_ARCH = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
             "|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
BEST_OPS = (3, 3, 3, 1, 3, 2)
BEST_GENOTYPE = ("[(('nor_conv_3x3', 0),), (('nor_conv_3x3', 0), ('nor_conv_3x3', 1)), "
                 "(('skip_connect', 0), ('nor_conv_3x3', 1), ('nor_conv_1x1', 2))]")


def test_known_cell_all_forms():
  assert nb201.arch_str_to_ops(BEST_ARCH) == BEST_OPS
  assert nb201.ops_to_arch_str(BEST_OPS) == BEST_ARCH
  assert nb201.ops_to_genotype_str(BEST_OPS) == BEST_GENOTYPE
  assert nb201.genotype_str_to_ops(BEST_GENOTYPE) == BEST_OPS
  assert nb201.arch_str_to_genotype_str(BEST_ARCH) == BEST_GENOTYPE
  assert nb201.genotype_str_to_arch_str(BEST_GENOTYPE) == BEST_ARCH


def test_round_trips_on_all_cells():
  seen_arch, seen_geno = set(), set()
  for ops in itertools.product(range(5), repeat=6):
    arch = nb201.ops_to_arch_str(ops)
    geno = nb201.ops_to_genotype_str(ops)
    assert nb201.arch_str_to_ops(arch) == ops
    assert nb201.genotype_str_to_ops(geno) == ops
    assert geno == str(nb201.ops_to_genotype(ops))  # The JSON key format is Python's str().
    seen_arch.add(arch)
    seen_geno.add(geno)
  assert len(seen_arch) == len(seen_geno) == nb201.NUM_ARCHS


def test_genotype_other_spelling_is_parsed():
  respelled = BEST_GENOTYPE.replace("'", '"').replace(", ", ",")
  assert respelled != BEST_GENOTYPE
  assert nb201.genotype_str_to_ops(respelled) == BEST_OPS


@pytest.mark.parametrize("bad, reason", [
    ("", "node groups"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "node groups"),
    (BEST_ARCH.replace("nor_conv_1x1", "conv_5x5"), "unknown op 'conv_5x5'"),
    (BEST_ARCH.replace("skip_connect~0", "skip_connect~1"), "must come from node 0"),
    (BEST_ARCH.replace("|+|skip", "|+|none~0|skip"), "input edges"),
    (BEST_ARCH[:-1], "start and end with '|'"),
    (BEST_ARCH.replace("nor_conv_1x1~2", "nor_conv_1x1"), "op~input"),
    (" " + BEST_ARCH, "start and end"),
])
def test_malformed_arch_strings_raise(bad, reason):
  with pytest.raises(ValueError, match="Malformed NB201 arch string") as err:
    nb201.arch_str_to_ops(bad)
  assert reason in str(err.value)
  assert repr(bad)[:50] in str(err.value)  # Names the string...
  assert "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|" in str(err.value)  # ...and the expected format.


def test_non_string_arch_raises():
  with pytest.raises(ValueError, match="must be a str"):
    nb201.arch_str_to_ops(["nor_conv_3x3"] * 6)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad, reason", [
    ("not a literal [", "not a Python literal"),
    ("[(('none', 0),)]", "list of 3 node tuples"),
    (BEST_GENOTYPE.replace("'nor_conv_1x1'", "'sep_conv'"), "unknown op 'sep_conv'"),
    (BEST_GENOTYPE.replace("('nor_conv_1x1', 2)", "('nor_conv_1x1', 1)"), "come from node 2"),
    (BEST_GENOTYPE.replace("('nor_conv_1x1', 2)", "('nor_conv_1x1',)"), "(op, input) pair"),
    ("__import__('os').system('true')", "not a Python literal"),
])
def test_malformed_genotype_strings_raise(bad, reason):
  with pytest.raises(ValueError, match="Malformed NB201 genotype string") as err:
    nb201.genotype_str_to_ops(bad)
  assert reason in str(err.value)


@pytest.mark.parametrize("bad", [(0, 1, 2), (0, 1, 2, 3, 4, 0, 1), (0, 1, 2, 3, 5, 0),
                                 (0, 1, 2, 3, -1, 0), (0, 1, 2.0, 3, 4, 0), "abcdef"])
def test_wrong_ops_raise(bad):
  with pytest.raises(ValueError, match="NB201 ops"):
    nb201.ops_to_arch_str(bad)


def test_codes_round_trip_and_cover_space():
  ops = nb201.all_ops()
  assert ops.shape == (15625, 6) and ops.dtype == np.int8
  codes = nb201.ops_to_code(ops)
  np.testing.assert_array_equal(codes, np.arange(15625))
  np.testing.assert_array_equal(nb201.code_to_ops(codes), ops)
  assert int(nb201.ops_to_code(BEST_OPS)) == ((((3 * 5 + 3) * 5 + 3) * 5 + 1) * 5 + 3) * 5 + 2
  with pytest.raises(ValueError, match="codes"):
    nb201.code_to_ops(15625)


def test_one_hot():
  v = nb201.one_hot(BEST_OPS)
  assert v.shape == (30,) and v.dtype == np.float32
  m = v.reshape(6, 5)
  np.testing.assert_array_equal(m.sum(axis=1), np.ones(6))
  np.testing.assert_array_equal(m.argmax(axis=1), BEST_OPS)
  batch = nb201.one_hot(nb201.all_ops()[:7])
  assert batch.shape == (7, 30)
  np.testing.assert_array_equal(batch.reshape(7, 6, 5).argmax(-1), nb201.all_ops()[:7])
  with pytest.raises(ValueError, match="shape"):
    nb201.one_hot(np.zeros((2, 5), dtype=int))
  with pytest.raises(ValueError, match="outside"):
    nb201.one_hot([0, 0, 0, 0, 0, 7])


def test_encode_and_decode_many():
  archs = [nb201.ops_to_arch_str(o) for o in nb201.all_ops()[::97]]
  enc = nb201.encode_arch_strs(archs)
  assert enc.dtype == np.int8 and enc.shape == (len(archs), 6)
  np.testing.assert_array_equal(enc, nb201.all_ops()[::97])
  assert nb201.decode_arch_strs(enc) == archs
  assert nb201.encode_arch_strs([]).shape == (0, 6)
  with pytest.raises(ValueError, match="position 2"):
    nb201.encode_arch_strs([BEST_ARCH, BEST_ARCH, "|bad|"])


def test_is_connected():
  assert nb201.is_connected(BEST_OPS)
  assert not nb201.is_connected((0,) * 6)
  assert nb201.is_connected((0, 0, 0, 1, 0, 0))  # Direct 3<-0 edge.
  assert nb201.is_connected((2, 0, 0, 0, 0, 0)) is False  # 1<-0 only: output unreachable.
  assert nb201.is_connected((2, 0, 0, 0, 3, 0))  # 0 -> 1 -> 3.
  assert not nb201.is_connected((0, 0, 4, 0, 0, 1))  # 1 -> 2 -> 3 but node 1 unreachable.
  assert nb201.is_connected((0, 1, 0, 0, 0, 1))  # 0 -> 2 -> 3.
  ops = nb201.all_ops()
  batch = nb201.is_connected_batch(ops)
  expected = np.array([nb201.is_connected(o.tolist()) for o in ops])
  np.testing.assert_array_equal(batch, expected)
  # Brute force: a path 0 -> ... -> 3 through non-none edges.
  def reachable(o):
    return any(
        all(o[nb201.EDGES.index((b, a))] != 0 for a, b in zip(path, path[1:]))
        for path in ([0, 3], [0, 1, 3], [0, 2, 3], [0, 1, 2, 3]))
  assert all(reachable(o.tolist()) == bool(c) for o, c in zip(ops[::13], batch[::13]))
  assert int(batch.sum()) == 15284


def test_genotype_parser_never_evaluates_code():
  # literal_eval refuses calls: the string must be rejected, not run.
  with pytest.raises(ValueError):
    nb201.genotype_str_to_ops("[(('none', 0),), ((print('x'), 0), ('none', 1)), ()]")
  assert ast.literal_eval(BEST_GENOTYPE)[0] == (("nor_conv_3x3", 0),)
