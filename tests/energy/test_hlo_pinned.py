"""Pinned gpu-mode kernel lists: any change to the fusion rules' output fails here.

Each case pins two SHA-256 digests of the canonical JSON of the result (kernels with every
``Kernel`` field, edges, merge groups, warnings): ``full`` over everything, and ``unnamed`` with
the HLO names (``name``, ``hlo_names``, merge-group names) left out. A speed-up of ``hlo`` must
leave both unchanged. When only ``full`` differs, the HLO instruction names changed (a new JAX
version names its lowering differently) and the kernels themselves did not.

After a deliberate change of the rules (or a JAX upgrade), print the new digests with
``python tests/energy/test_hlo_pinned.py`` and update ``PINNED`` (say why in the change).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # also when run as a script

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from cenas_jax.energy import hlo  # noqa: E402
from cenas_jax.energy.hlo import GpuFusionConfig  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when run as a script
from test_hlo import attention, conv_bn_relu, dense_relu  # noqa: E402  # pylint: disable=g-bad-import-order


def _f32(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)




FUNCTIONS = {
    "dense_relu": (dense_relu, (_f32(8, 16), _f32(16, 32), _f32(32))),
    "attention": (attention, (_f32(16, 32),) + (_f32(32, 32),) * 4),
    "conv_bn_relu": (conv_bn_relu, (_f32(2, 8, 8, 4), _f32(3, 3, 4, 16)) + (_f32(16),) * 4),
}
CONFIGS = {
    "default": GpuFusionConfig(),
    "no_cublaslt": GpuFusionConfig(cublaslt_epilogues=False),
    "no_dot_merger": GpuFusionConfig(dot_merger_threshold_bytes=0),
}
# Conv-heavy, pools only, skips only, all edges dead, an empty node feeding convs, dead edges.
NB201_CELLS = [(3, 2, 4, 1, 3, 3), (4, 4, 4, 4, 4, 4), (1, 0, 1, 0, 0, 1), (3, 3, 3, 0, 0, 0),
               (0, 0, 2, 1, 0, 3), (2, 1, 0, 4, 3, 0)]

PINNED = {
    # case: (full digest, unnamed digest, number of kernels)
    "attention/default": (
        "e934cf533fe2e22faa639727405cdb6eae1d883618c29d1d428e5fccd3fee970",
        "0fd905cbf3411eeaa7f819ed49816ca2d2d1212ca1e73fe19343c5152cf15804", 8),
    "attention/no_cublaslt": (
        "864b3ec4655da4410df2191a9a53dc59ce684f2d7ee011ffb33705a3eebc677b",
        "d7bf49b54341b18ab41a10c7690f8867e9869b2443b0055e62f1852d2a7c8f79", 8),
    "attention/no_dot_merger": (
        "51de7a0a313c2efb58d9ea45eaa47314170beedd80bacf6912d93f97239227a8",
        "253388a882c126b93090bf8b814d105cadfd2d5f3e724866551fccbe8194cd3b", 9),
    "conv_bn_relu/default": (
        "11816d6ace799a9afb01915c0769baaa8c2c03192a229e0be4eefb0d10b9248d",
        "8038a8f9712ba21733c9cfe148d15c85e7701b765335b336362b599cf2cd55a0", 2),
    "conv_bn_relu/no_cublaslt": (
        "11816d6ace799a9afb01915c0769baaa8c2c03192a229e0be4eefb0d10b9248d",
        "8038a8f9712ba21733c9cfe148d15c85e7701b765335b336362b599cf2cd55a0", 2),
    "conv_bn_relu/no_dot_merger": (
        "11816d6ace799a9afb01915c0769baaa8c2c03192a229e0be4eefb0d10b9248d",
        "8038a8f9712ba21733c9cfe148d15c85e7701b765335b336362b599cf2cd55a0", 2),
    "dense_relu/default": (
        "2576f4421f3a18d79fa622a747a011a50b19ce3631b977808b6d2b2a4088be4b",
        "c5a2011f23db4d34406c21c36cd0905a0a4b212e4b96a54c75ce7f269e42fef8", 1),
    "dense_relu/no_cublaslt": (
        "6b537f348b21ce8901babd149b2f78ebf99e6cee2efa11a5a184eeaaf69e08e4",
        "5a446a85189031fb0901608c9623c9b54fb3fde46c34ef9a4a01174295387ffc", 2),
    "dense_relu/no_dot_merger": (
        "2576f4421f3a18d79fa622a747a011a50b19ce3631b977808b6d2b2a4088be4b",
        "c5a2011f23db4d34406c21c36cd0905a0a4b212e4b96a54c75ce7f269e42fef8", 1),
    "nb201/002103": (
        "f8a2689620c16dd924cad15e9741648822933fefeca87392ed7aab91d8663c50",
        "be8dfc6855f14078c17b681d2d697ef00ff011b3948053780ae47165468682fe", 66),
    "nb201/101001": (
        "69abbb92998b29bc7c40daa08c33594a749194dc570cf5b2f816acb62bd176f6",
        "6e80452272a76033e767a1cd262441ecf27cc0e5490ddd5233bd57edb5ff2d25", 18),
    "nb201/210430": (
        "20041ce84e37cb8793e891e13880741aa8d5844da18566b70dd57ff36de44889",
        "70f094c775dc4fa384b651a013dc3a3fde3bcfe450189f52a848977e24dd4548", 78),
    "nb201/324133": (
        "fcb7963c2e330b43a28541ecf0ed49060c4d7728a28efb72f8d74e1a51cd5e20",
        "f5ac4d4f3327f64898911b20daa5ec300b53c5b364c948a7938b64ec2243d1ab", 123),
    "nb201/333000": (
        "69ee82fd7dcd8706119ac2cb814f956a68594b483b1cfde257cbaac31dd7c6f7",
        "bda71af98549f027c91e7739638e61fb6674e7bfee06f716a35495e1319837dc", 3),
    "nb201/444444": (
        "b9a1056165b8565e7bfd4b1e9fa9b1420b4aa64f554c2709253b1b2b997053ea",
        "6a259c2e767e6ad6e0d46261a75e158ea7d1c4f644423c39a58c48c57937fff1", 18),
}


def _digests(graph: hlo.KernelGraph) -> tuple[str, str, int]:
  kernels = [k.to_dict() for k in graph.kernels]
  full = {"kernels": kernels, "edges": [list(e) for e in graph.edges],
          "merge_groups": [list(g) for g in graph.merge_groups], "warnings": list(graph.warnings)}
  unnamed = {"kernels": [{f: v for f, v in k.items() if f not in ("name", "hlo_names")}
                         for k in kernels],
             "edges": full["edges"], "merge_groups": [len(g) for g in graph.merge_groups],
             "warnings": full["warnings"]}

  def sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()

  return sha(full), sha(unnamed), len(graph.kernels)


def _function_case(fn_name: str, config_name: str) -> hlo.KernelGraph:
  fn, args = FUNCTIONS[fn_name]
  return hlo.extract_kernel_graph(fn, *args, mode="gpu", config=CONFIGS[config_name])


def _nb201_case(ops: tuple[int, ...]) -> hlo.KernelGraph:
  from cenas_jax.energy import nb201_kernels as nk  # pylint: disable=g-import-not-at-top

  config = nk.NB201NetConfig()
  return hlo.kernel_graph_from_module(nk.network_module(nk.live_ops(ops), config),
                                      config=config.fusion, lowered_for="cuda")


def _cases() -> dict[str, callable]:
  cases = {f"{f}/{c}": (lambda f=f, c=c: _function_case(f, c)) for f in FUNCTIONS for c in CONFIGS}
  cases.update({f"nb201/{''.join(map(str, ops))}": (lambda ops=ops: _nb201_case(ops))
                for ops in NB201_CELLS})
  return cases


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernels_match_pinned_digests(case):
  full, unnamed, count = _digests(CASES[case]())
  want_full, want_unnamed, want_count = PINNED[case]
  assert count == want_count, f"{case}: {count} kernels, pinned {want_count}"
  assert unnamed == want_unnamed, f"{case}: the kernels changed (not only their HLO names)"
  assert full == want_full, f"{case}: the kernels are the same but their HLO names changed"


def test_module_entry_point_equals_private_pass_and_text_path():
  from cenas_jax.energy import hlo_ir  # pylint: disable=g-import-not-at-top
  from cenas_jax.energy import nb201_kernels as nk  # pylint: disable=g-import-not-at-top

  config = nk.NB201NetConfig()
  module = nk.network_module(nk.live_ops(NB201_CELLS[0]), config)
  graph = hlo.kernel_graph_from_module(module, config=config.fusion)
  kernels, edges, merge_groups, warnings = hlo._gpu_kernels(  # pylint: disable=protected-access
      module, config.fusion)
  assert graph.kernels == tuple(kernels) and graph.edges == tuple(edges)
  assert graph.merge_groups == tuple(merge_groups) and graph.warnings == tuple(warnings)
  assert graph.parser == "ir" and graph.fingerprint == "" and graph.mode == "gpu"
  # The text entry point runs the same rules on the module it reads.
  fn, args = FUNCTIONS["attention"]
  text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).compiler_ir(
      "hlo").as_hlo_text()
  from_text = hlo.kernel_graph_from_hlo(text, parser="text")
  from_module = hlo.kernel_graph_from_module(hlo_ir.module_from_text(text))
  assert from_text.kernels == from_module.kernels and from_text.edges == from_module.edges
  assert from_text.parser == "text" and len(from_text.fingerprint) == 64
  with pytest.raises(ValueError, match="mode"):
    hlo.kernel_graph_from_module(module, mode="tpu")


def test_gpu_pass_restores_the_garbage_collector_state():
  import gc  # pylint: disable=g-import-not-at-top

  fn, args = FUNCTIONS["dense_relu"]
  hlo.clear_cache()
  assert gc.isenabled()
  hlo.extract_kernels(fn, *args, mode="gpu")
  assert gc.isenabled()
  gc.disable()
  try:
    hlo.clear_cache()
    hlo.extract_kernels(fn, *args, mode="gpu")
    assert not gc.isenabled()
  finally:
    gc.enable()


if __name__ == "__main__":
  print("PINNED = {")
  for name in sorted(CASES):
    print(f"    {name!r}: {_digests(CASES[name]())!r},")
  print("}")
  sys.exit(0)
