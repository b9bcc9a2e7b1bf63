"""The analytical cost model against real modules, fvcore and exported ONNX graphs.

What is shown, for the ``tiny`` and ``ofa-mbv3-w1.0`` presets, every encoding, dense skips off
and on, on the 200 archs ``SearchSpace(E, widths=(1.0,)).sample(200, rng)`` plus the maximal
and the minimal arch of each encoding:

1. **Every arch, default run** (cheap): cost-model params == the parameters of the plain
   module; cost-model MACs == the MACs of the plain module; cost-model flash (float32, int8) ==
   ``flash_bytes_of_module`` of the plain module, less the BatchNorm the exporter folds (see
   ``profiling/cost.py``). A ``Subnet`` is its stem + first block, its levels and its exit head
   and nothing else (``plain.Subnet``), so these are summed over those segment modules, each
   built once per (stage, level, block) with ``plain.make_level`` (and run once per input
   size): 200 whole subnets per encoding and preset would take minutes to build. The MACs come
   from forward hooks on every Conv2d / Linear of the real modules (output elements x in/groups
   x kh x kw; in x out for Linear), which is the formula of fvcore's conv/linear handles; part 2
   holds that count equal to fvcore and to the ONNX graph on whole subnets.
2. **Whole subnets through fvcore and ONNX** (0.1-1.3 s each on a 2-core EPYC, so a fixed subset
   by default): with dense skips off, the minimal arch of each encoding and the 12 (``tiny``; 2
   for ``ofa-mbv3``) sampled archs that, picked greedily, cover the most features (stage x level
   kind x branch mask, IRB (E, K) per stage, depth per stage, exit, resolution); with dense
   skips on, the first half of them. Each graph is the one ``natv2 export`` writes
   (``to_onnx``), and the module-side counters export checks it against
   (``params_after_bn_folding``, ``flash_bytes_of_module``) must agree with it too. Plus two
   hand-made edge archs (both presets, both dense settings) that hold every case the cost model
   treats specially: the folded BatchNorm (an IRB alone, then a transformation branch alone) at
   depth 2 and 3, transformation-only levels (no nodes: their output is their input buffer)
   inside dense stages of depth 3 and 4, dense stages of depth 3 and 4 where every level
   allocates, stride-2 max-pool branches, SE, exits 4 and 5. For each: ``Subnet(arch, cfg)``
   params == cost; fvcore MACs == ONNX MACs == cost; ONNX flash (float32, int8) == cost; ONNX
   peak activation bytes (float32, int8) == cost, both for the whole graph and for every segment
   (stem + first block, each stage, head: ONNX nodes grouped by their module scope), so a
   disagreement anywhere shows even when the stem holds the peak.
   ``NATV2_FULL_COST_CHECK=1`` runs part 2 on all 202 archs per encoding, preset and dense
   setting (3,232 subnet checks: 52 min on this two-core machine, all equal).
   Exporting each distinct segment instead does not pay here: the 200 archs per encoding hold
   ~1,900 distinct (stage, level, block, input size) levels per preset, and a one-level export
   still costs ~0.1 s (the exporter's fixed passes), more than the whole-subnet subset.
3. Materialisation: ``materialize`` from a built supernet gives the same parameter names and
   shapes as ``Subnet(arch, cfg)`` (so the plain module stands for it above), and its export
   costs the same.
4. Peak memory by hand on a tiny hand-made arch (the live tensors are listed in the comments),
   and the cheapest-cost bound, ``ensure_feasible`` and ``natv2 space cost``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from natv2.device_profiles import Costs
from natv2.errors import Natv2Error
from natv2.export.onnx import check_counts, to_onnx
from natv2.pipeline import ensure_feasible
from natv2.profiling.cost import (
    SubnetCost,
    batch_costs,
    cheapest_costs,
    segment_costs,
    subnet_cost,
)
from natv2.profiling.counters import (
    flash_bytes_of_module,
    fvcore_macs,
    module_params,
    onnx_costs,
    params_after_bn_folding,
)
from natv2.space import (
    BRANCH_IRB,
    BRANCH_POINTWISE,
    BRANCH_TRANSFORM,
    ENCODINGS,
    Arch,
    Block,
    SearchSpace,
)
from natv2.supernet.config import SupernetConfig, config_for_encoding
from natv2.supernet.plain import FirstBlock, Subnet, make_exit_head, make_level, make_stem

FULL = os.environ.get("NATV2_FULL_COST_CHECK") == "1"
PRESETS = ("tiny", "ofa-mbv3")
N_SAMPLES = 200
DTYPES = ("float32", "int8")


def cfg_of(preset: str, encoding: str, dense: bool) -> SupernetConfig:
    return config_for_encoding(encoding, preset=preset, width=1.0, dense_skips=dense)


@cache
def archs_of(encoding: str) -> tuple[Arch, ...]:
    """The 200 sampled archs of an encoding, then its maximal and minimal arch."""
    space = SearchSpace(encoding, widths=(1.0,))
    rng = np.random.default_rng(2024 + ENCODINGS.index(encoding))
    sampled = [space.decode(v) for v in space.sample(N_SAMPLES, rng)]
    return (*sampled, space.maximal(), space.minimal())


def features(arch: Arch) -> set[tuple]:
    out: set[tuple] = {("exit", arch.exit), ("resolution", arch.resolution)}
    for s in range(arch.exit):
        blocks = arch.active_blocks(s)
        out.add(("depth", s, len(blocks)))
        for i, b in enumerate(blocks):
            out.add(("level", s, min(i, 2), b.branches))
            if b.has_irb:
                out.add(("irb", s, b.expand, b.kernel))
    return out


@cache
def covering(encoding: str, k: int) -> tuple[Arch, ...]:
    """The k sampled archs that, picked greedily, cover the most features (deterministic)."""
    pool = list(archs_of(encoding)[:N_SAMPLES])
    seen: set[tuple] = set()
    chosen: list[Arch] = []
    for _ in range(k):
        best = max(pool, key=lambda a: len(features(a) - seen))
        chosen.append(best)
        seen |= features(best)
        pool.remove(best)
    return tuple(chosen)


# --------------------------------------------------------------------------- 1. segment modules


def hook_macs(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """MACs of every Conv2d / Linear the forward pass runs, and the output."""
    total = 0

    def count(mod: nn.Module, _inp, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    layers = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.no_grad():
            out = module.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total, out


def module_counts(module: nn.Module) -> tuple[int, int, int]:
    return (
        sum(p.numel() for p in module.parameters()),
        flash_bytes_of_module(module, "float32"),
        flash_bytes_of_module(module, "int8"),
    )


class PlainSegments:
    """Counts of the plain segment modules of one preset (width 1.0), built once each."""

    def __init__(self, preset: str) -> None:
        self.cfg = cfg_of(preset, "exits+parallel", False)
        self.modules: dict[tuple, tuple[nn.Module, tuple[int, int, int]]] = {}
        self.runs: dict[tuple, tuple[int, int]] = {}  # (key, hw) -> (macs, output hw)

    def _module(self, key: tuple, build) -> tuple[nn.Module, tuple[int, int, int]]:
        if key not in self.modules:
            module = build()
            self.modules[key] = (module, module_counts(module))
        return self.modules[key]

    def _run(self, key: tuple, build, channels: int, hw: int) -> tuple[int, int, int, int, int]:
        module, counts = self._module(key, build)
        if (key, hw) not in self.runs:
            macs, out = hook_macs(module, torch.zeros(1, channels, hw, hw))
            self.runs[(key, hw)] = (macs, out.shape[-1] if out.dim() == 4 else 0)
        macs, hw_out = self.runs[(key, hw)]
        return (counts[0], macs, counts[1], counts[2], hw_out)

    def totals(self, arch: Arch, dense: bool) -> dict[str, int]:
        """params, macs, flash float32/int8 of ``Subnet(arch, cfg)`` from its segments."""
        cfg = self.cfg
        r = arch.resolution
        rows = [
            self._run(
                ("stem",),
                lambda: nn.Sequential(make_stem(cfg), FirstBlock(cfg.stem_channels)),
                cfg.in_channels,
                r,
            )
        ]
        hw = rows[0][-1]
        folded = 0
        for s in range(arch.exit):
            blocks = arch.active_blocks(s)
            for i, b in enumerate(blocks):
                cin = cfg.level_io(s, i)[0]
                rows.append(
                    self._run(
                        ("level", s, i, b), lambda s=s, i=i, b=b: make_level(cfg, s, i, b), cin, hw
                    )
                )
                hw = rows[-1][-1]
            cin, cout, stride = cfg.level_io(s, 0)
            if (
                blocks[0].branches == BRANCH_IRB
                and not (stride == 1 and cin == cout)
                and blocks[1].branches == BRANCH_TRANSFORM
                and (not dense or len(blocks) == 2)
            ):
                folded += cout  # the exporter folds this BN into level 1's project conv
        head = make_exit_head
        rows.append(
            self._run(
                ("head", arch.exit - 1, hw),
                lambda: head(cfg, arch.exit - 1),
                cfg.stage_channels[arch.exit - 1],
                hw,
            )
        )
        return {
            "params": sum(row[0] for row in rows),
            "macs": sum(row[1] for row in rows),
            "flash_float32": sum(row[2] for row in rows) - 8 * folded,
            "flash_int8": sum(row[3] for row in rows) - 8 * folded,
        }


@cache
def plain_segments(preset: str) -> PlainSegments:
    return PlainSegments(preset)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_sampled_arch_costs_what_its_plain_module_holds(preset, encoding):
    plain = plain_segments(preset)
    archs = archs_of(encoding)
    assert len(archs) == N_SAMPLES + 2
    for dense in (False, True):
        cfg = cfg_of(preset, encoding, dense)
        bad = []
        for arch in archs:
            want = plain.totals(arch, dense)
            f32, i8 = subnet_cost(arch, cfg, "float32"), subnet_cost(arch, cfg, "int8")
            got = {
                "params": f32.params,
                "macs": f32.macs,
                "flash_float32": f32.flash_bytes,
                "flash_int8": i8.flash_bytes,
            }
            if got != want:
                bad.append((arch.id, got, want))
        assert not bad, f"{len(bad)} of {len(archs)} disagree, e.g. {bad[0]}"


def test_whole_subnet_params_equal_the_segment_sum():
    """The segment sum above is the parameter count of ``Subnet`` itself."""
    for preset in PRESETS:
        for encoding in ("baseline", "exits+parallel"):
            cfg = cfg_of(preset, encoding, False)
            for arch in (*covering(encoding, 2), archs_of(encoding)[-2]):
                params = sum(p.numel() for p in Subnet(arch, cfg).parameters())
                assert params == plain_segments(preset).totals(arch, False)["params"]
                assert params == subnet_cost(arch, cfg).params


# --------------------------------------------------------------------------- 2. fvcore and ONNX


def export_graph(module: nn.Module, resolution: int) -> onnx.ModelProto:
    """The graph ``natv2 export`` writes (``export.onnx.to_onnx``)."""
    return to_onnx(module, resolution)


def segment_of(node_name: str) -> str | None:
    """Which cost-model segment an exported node belongs to, from its module scope."""
    parts = node_name.split("/")
    scope = parts[1] if len(parts) > 2 else ""
    if scope in ("stem", "first_block"):
        return "stem"
    if scope == "head":
        return "head"
    if scope.startswith("stages."):
        return f"stage{int(scope.split('.')[1]) + 1}"
    return None


def graph_figures(model: onnx.ModelProto) -> dict[str, dict[str, int]]:
    """MACs, flash (float32, int8) and peak (float32, int8) of the graph and of each segment."""
    figures: dict[str, dict[str, int]] = {}
    for dtype in DTYPES:
        costs = onnx_costs(model, dtype=dtype)
        total = figures.setdefault("total", {})
        total["macs"] = costs.macs
        total[f"flash_{dtype}"] = costs.flash_bytes
        total[f"peak_{dtype}"] = costs.peak_sram_bytes
        for node in costs.nodes:
            seg = segment_of(node.name)
            if seg is None:  # only constant helpers (Identity of shared initialisers) lack one
                assert node.live_bytes is None and node.macs == 0 and node.flash_bytes == 0, node
                continue
            row = figures.setdefault(seg, {"macs": 0})
            if dtype == "float32":
                row["macs"] += node.macs
            row[f"flash_{dtype}"] = row.get(f"flash_{dtype}", 0) + node.flash_bytes
            if node.live_bytes is not None:
                key = f"peak_{dtype}"
                row[key] = max(row.get(key, 0), node.live_bytes)
    return figures


def model_figures(arch: Arch, cfg: SupernetConfig) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for dtype in DTYPES:
        parts = {"total": subnet_cost(arch, cfg, dtype), **segment_costs(arch, cfg, dtype)}
        for name, c in parts.items():
            row = out.setdefault(name, {"macs": c.macs})
            row[f"flash_{dtype}"] = c.flash_bytes
            row[f"peak_{dtype}"] = c.peak_sram_bytes
    return out


_checked: dict[tuple, bool] = {}


def check_whole_subnet(arch: Arch, cfg: SupernetConfig, with_fvcore: bool = True) -> None:
    """Params, MACs (fvcore and ONNX), flash and peak of ``Subnet(arch, cfg)`` == cost model."""
    # encodings share archs (their maximal ones): the module does not depend on the encoding
    key = (replace(cfg, parallel=True, exits=True), arch, with_fvcore)
    if key in _checked:
        return
    torch.manual_seed(0)
    net = Subnet(arch, cfg).eval()
    cost = subnet_cost(arch, cfg)
    assert sum(p.numel() for p in net.parameters()) == cost.params, arch.id
    r = arch.resolution
    if with_fvcore:
        assert fvcore_macs(net, (1, 3, r, r)) == cost.macs, arch.id
    model = export_graph(net, r)
    got = graph_figures(model)
    want = model_figures(arch, cfg)
    assert got == want, f"{arch.id} ({cfg.name}, dense={cfg.dense_skips}):\n{arch.describe()}"
    # the module-side counters export checks against (BatchNorm folding on the data flow)
    assert onnx_costs(model).params == params_after_bn_folding(net), arch.id
    for dtype in DTYPES:
        assert flash_bytes_of_module(net, dtype) == want["total"][f"flash_{dtype}"], arch.id
    _checked[key] = True


def whole_subnet_archs(preset: str, encoding: str, dense: bool) -> tuple[Arch, ...]:
    archs = archs_of(encoding)
    if FULL:
        return archs
    # two dozen per encoding: 12 + 6 tiny, 2 + 2 ofa-mbv3 (0.3-1 s each on a 2-core EPYC); the
    # edge archs hold the structures a random sample rarely has
    k = 12 if preset == "tiny" else 2
    if dense:
        return covering(encoding, k // 2)
    return (archs[-1], *covering(encoding, k))


@pytest.mark.parametrize("dense", [False, True], ids=["plain", "dense"])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("preset", PRESETS)
def test_whole_subnets_agree_with_fvcore_and_onnx(preset, encoding, dense):
    cfg = cfg_of(preset, encoding, dense)
    for arch in whole_subnet_archs(preset, encoding, dense):
        # fvcore MACs do not depend on dense skips (adds are not MACs): traced once per arch
        # by default, with both settings in the full run
        check_whole_subnet(arch, cfg, with_fvcore=FULL or not dense)
        if not FULL:
            assert (
                subnet_cost(arch, cfg).macs
                == subnet_cost(arch, cfg_of(preset, encoding, not dense)).macs
            )


def edge_archs() -> list[Arch]:
    """Hand-made archs holding every case the cost model treats specially."""
    irb = Block(BRANCH_IRB, 6, 5)
    small = Block(BRANCH_IRB, 3, 3)
    pw = Block(BRANCH_POINTWISE, 3, 3)
    tr = Block(BRANCH_TRANSFORM, 3, 3)
    all3 = Block(7, 4, 7)
    irb_tr = Block(BRANCH_IRB | BRANCH_TRANSFORM, 3, 7)
    pw_tr = Block(BRANCH_POINTWISE | BRANCH_TRANSFORM, 3, 3)
    irb_pw = Block(BRANCH_IRB | BRANCH_POINTWISE, 4, 3)
    with_aliases = [
        (irb, tr, None, None),  # fold (depth 2); on tiny a stride-2 same-width level 1
        (small, tr, pw, None),  # fold without dense skips only (depth 3); dense: o2 is o1
        (irb, tr, tr, irb_tr),  # depth 4: o3 is o2 is o1, block 4 reads o3 + o1
        (pw_tr, tr, all3, irb),  # stride-1 stage with a channel change, SE
        (tr, pw, irb_tr, tr),  # stride-2 max-pool + 1x1 conv transformation branch, SE
    ]
    allocating = [  # every level allocates its output (the closed-form dense peaks)
        (irb, pw, all3, None),
        (pw_tr, irb, irb_tr, pw),
        (irb, irb_pw, small, irb),
        (all3, pw, None, None),
        (irb_tr, all3, pw_tr, None),
    ]
    space = SearchSpace("exits+parallel", widths=(1.0,))
    out = []
    for resolution, exit_, stages in ((52, 5, with_aliases), (60, 4, allocating)):
        levels = tuple(b for stage in stages for b in stage)
        out.append(space.decode(space.encode(Arch(resolution, 1.0, exit_, levels))))
    return out


@pytest.mark.parametrize("dense", [False, True], ids=["plain", "dense"])
@pytest.mark.parametrize("preset", PRESETS)
def test_edge_archs_agree_with_fvcore_and_onnx(preset, dense):
    cfg = cfg_of(preset, "exits+parallel", dense)
    for arch in edge_archs():
        check_whole_subnet(arch, cfg, with_fvcore=not dense)


# --------------------------------------------------------------------------- 3. materialise


def test_materialised_subnets_are_the_plain_modules():
    from natv2.supernet import build_supernet, materialize

    cfg = cfg_of("tiny", "exits+parallel", False)
    supernet = build_supernet(cfg, seed=0).eval()
    archs = [*covering("exits+parallel", 3), *edge_archs()[:1], archs_of("exits+parallel")[-1]]
    for arch in archs:
        net = materialize(supernet, arch)
        shapes = [(n, tuple(p.shape)) for n, p in net.named_parameters()]
        assert shapes == [(n, tuple(p.shape)) for n, p in Subnet(arch, cfg).named_parameters()]
        assert sum(p.numel() for p in net.parameters()) == subnet_cost(arch, cfg).params
    arch = archs[0]
    got = graph_figures(export_graph(materialize(supernet, arch), arch.resolution))
    assert got == model_figures(arch, cfg)


# --------------------------------------------------------------------------- 4. by hand


def hand_arch() -> Arch:
    """tiny W1.0 at 48 px, exit 2: stage 1 = IRB(E6,K3), TR; stage 2 = PW, PW, IRB(E6,K7)."""
    filler = (Block(1, 3, 3), Block(1, 3, 3), None, None)
    levels = (
        (Block(BRANCH_IRB, 6, 3), Block(BRANCH_TRANSFORM, 3, 3), None, None)
        + (Block(BRANCH_POINTWISE, 3, 3), Block(BRANCH_POINTWISE, 3, 3), Block(1, 6, 7), None)
        + filler * 3
    )
    return Arch(48, 1.0, 2, levels)


# Live elements, batch 1 (tiny W1.0: stem 8 ch, stage 1 8 ch stride 2, stage 2 16 ch stride 2).
# stem + first block: input x = 3*48*48 = 6912; stem conv -> h = 8*24*24 = 4608 (x + h = 11520);
#   depthwise d = 4608 (h + d = 9216); project p = 4608 (h + d + p = 13824);
#   add: h + p + out = 13824.                                              stem peak 13824
# stage 1 (input s = 4608), level 1 IRB E6 K3 stride 2, mid = 48: expand e = 48*24*24 = 27648
#   (s + e = 32256); depthwise d = 48*12*12 = 6912 (e + d = 34560: s is dead, no residual);
#   project o1 = 8*12*12 = 1152 (d + o1 = 8064). Level 2: the transformation branch alone on a
#   same-shape level is BN + ReLU, in place: no node, o2 is the buffer o1.  stage 1 peak 34560
# stage 2 (input o2 = 1152), z = 16*6*6 = 576 per output:
#   level 1 PW stride 2: o2 + o1' = 1152 + 576 = 1728; level 2 PW: o1' + o2' = 1152.
#   level 3 IRB E6 K7 with SE, mid = 96, m = 96*6*6 = 3456, se = 24, residual (input kept):
#     expand: in + e = 576 + 3456 = 4032; depthwise: in + e + d = 7488; SE pool: in + d + 96
#     = 4128; reduce: in + d + 96 + 24 = 4152; expand: in + d + 24 + 96 = 4152; mul: in + d
#     + 96 + m = 7584; project: in + m + 576 = 4608; add: in + p + out = 1728.
#   without dense skips the stage peak is 7584 (SE's multiply: its output is a new tensor).
#   with dense skips (depth 3: output o3 + o1'): o1' waits through level 3, adding 576 to
#     every node of it: 8160; level 2 keeps o1' (its input, read again): still 1152; the
#     stage output add: o1' + o3 + out = 1728.                      stage 2 peak 7584 / 8160
# head after stage 2 (16 ch at 6x6): expand 96*36 = 3456 (in + e = 4032); pool 96 (3552);
#   mix 128 (224); linear 10 (138).                                        head peak 4032
HAND_PEAKS = {
    False: {"stem": 13824, "stage1": 34560, "stage2": 7584, "head": 4032},
    True: {"stem": 13824, "stage1": 34560, "stage2": 8160, "head": 4032},
}


@pytest.mark.parametrize("dense", [False, True], ids=["plain", "dense"])
def test_peak_memory_of_a_hand_made_arch(dense):
    cfg = cfg_of("tiny", "exits+parallel", dense)
    arch = hand_arch()
    for dtype, size in (("int8", 1), ("float32", 4)):
        segments = segment_costs(arch, cfg, dtype)
        assert {k: c.peak_sram_bytes for k, c in segments.items()} == {
            k: v * size for k, v in HAND_PEAKS[dense].items()
        }
        assert subnet_cost(arch, cfg, dtype).peak_sram_bytes == 34560 * size
    # the graph the exporter writes agrees, node by node grouped per segment
    check_whole_subnet(arch, cfg, with_fvcore=not dense)


def test_the_folded_batchnorm_costs_no_flash():
    """Stage 1 of the hand-made arch ends in a transformation branch alone after an IRB alone:
    the exporter folds that BN (8 channels) into the IRB's project conv, and the module-side
    counters see it in the data flow (export's parameter check failed on such subnets of a
    real search front when they went by module order)."""
    arch = hand_arch()
    cfg = cfg_of("tiny", "exits+parallel", False)
    net = Subnet(arch, cfg)
    for dtype in DTYPES:
        assert subnet_cost(arch, cfg, dtype).flash_bytes == flash_bytes_of_module(net, dtype)
    graph = export_graph(net, arch.resolution)
    bns = [n for n in graph.graph.node if n.op_type == "BatchNormalization"]
    assert bns == []
    # every BN folds: -2C each, +C bias for each bias-free conv it lands on (one BN of 8
    # channels lands on a conv that already has the first BN's bias)
    bn_channels = sum(m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert (
        onnx_costs(graph).params
        == params_after_bn_folding(net)
        == module_params(net) - bn_channels - 8
    )
    check_counts(net, graph, (1, 3, arch.resolution, arch.resolution), subnet_cost(arch, cfg))


def test_segments_add_up_and_costs_are_consistent():
    for preset in PRESETS:
        for dense in (False, True):
            cfg = cfg_of(preset, "exits+parallel", dense)
            archs = archs_of("exits+parallel")
            for arch, cost in zip(archs, batch_costs(archs, cfg, "int8"), strict=True):
                parts = segment_costs(arch, cfg, "int8")
                assert list(parts) == ["stem", *(f"stage{s + 1}" for s in range(arch.exit)), "head"]
                assert cost.params == sum(p.params for p in parts.values())
                assert cost.macs == sum(p.macs for p in parts.values())
                assert cost.flash_bytes == sum(p.flash_bytes for p in parts.values())
                assert cost.peak_sram_bytes == max(p.peak_sram_bytes for p in parts.values())
                f32 = subnet_cost(arch, cfg, "float32")
                assert f32.peak_sram_bytes == 4 * cost.peak_sram_bytes
                assert (f32.params, f32.macs) == (cost.params, cost.macs)
    with pytest.raises(ValueError, match="dtype"):
        subnet_cost(archs[0], cfg, "int4")


def test_width_comes_from_the_arch():
    space = SearchSpace("baseline")
    arch = space.maximal()  # width 1.2
    assert arch.width == 1.2
    wide = config_for_encoding("baseline", preset="tiny", width=1.2)
    narrow = config_for_encoding("baseline", preset="tiny", width=1.0)
    assert subnet_cost(arch, narrow) == subnet_cost(arch, wide)
    assert subnet_cost(arch, wide).params == sum(p.numel() for p in Subnet(arch, wide).parameters())


# --------------------------------------------------------------------------- cheapest, feasible


@pytest.mark.parametrize("preset", PRESETS)
def test_cheapest_costs_bound_every_sample(preset):
    keys = ("params", "macs", "peak_sram_bytes", "tflm_arena_bytes", "flash_bytes")
    for encoding in ENCODINGS:
        for dense in (False, True):
            cfg = cfg_of(preset, encoding, dense)
            space = SearchSpace(encoding, widths=(1.0,))
            cheapest = cheapest_costs(space, cfg, "int8")
            for arch in archs_of(encoding):
                c = subnet_cost(arch, cfg, "int8")
                assert all(cheapest[k] <= getattr(c, k) for k in keys), (arch.id, cheapest, c)
            # each figure is reached by some subnet
            minimal = subnet_cost(space.minimal(), cfg, "int8")
            assert all(cheapest[k] <= getattr(minimal, k) for k in keys)


def write_profile(path, budgets: str, resolutions: str = "[48, 52, 56, 60, 64]") -> str:
    path.write_text(
        f"""name = "impossible-profile"
description = "budgets nothing fits"
[hardware]
dtype = "int8"
macs_per_second = 1.0e8
[task]
objectives = ["accuracy", "macs"]
resolutions = {resolutions}
[budgets]
{budgets}
"""
    )
    return str(path)


def test_ensure_feasible_passes_a_shipped_profile_and_names_the_cheapest():
    from natv2.device_profiles import load_profile

    profile = load_profile("microcontroller-profile")
    space = SearchSpace("exits+parallel")
    cfg = cfg_of("tiny", "exits+parallel", False)
    cheapest = ensure_feasible(profile, space, cfg)
    assert cheapest.macs is not None
    assert cheapest == Costs.of(
        {
            **cheapest_costs(space, cfg, "int8"),
            "latency_ms": profile.estimate_latency_ms(cheapest.macs),
        }
    )


def test_ensure_feasible_rejects_an_impossible_profile(tmp_path):
    from natv2.device_profiles import load_profile

    path = write_profile(tmp_path / "impossible.toml", "max_params = 1000\nmax_macs = 5e9")
    profile = load_profile(path)
    space = SearchSpace("exits+parallel")
    cfg = cfg_of("tiny", "exits+parallel", False)
    smallest = cheapest_costs(space, cfg, "int8")["params"]
    assert smallest > 1000
    with pytest.raises(Natv2Error) as err:
        ensure_feasible(profile, space, cfg)
    msg = str(err.value)
    assert path in msg and "impossible-profile" in msg
    assert f"max_params = 1000 but the smallest achievable params is {smallest}" in msg
    assert "max_macs" not in msg  # met budgets are not blamed


def test_ensure_feasible_uses_the_profile_resolutions_and_dtype(tmp_path):
    from natv2.device_profiles import load_profile

    cfg = cfg_of("tiny", "baseline", False)
    space = SearchSpace("baseline")
    at_64 = cheapest_costs(SearchSpace("baseline", resolutions=(64,)), cfg, "int8")
    # a budget the 48-px subnets meet but the 64-px ones do not
    budget = at_64["peak_sram_bytes"] - 1
    path = write_profile(tmp_path / "p64.toml", f"max_peak_sram_bytes = {budget}", "[64]")
    with pytest.raises(Natv2Error, match="max_peak_sram_bytes"):
        ensure_feasible(load_profile(path), space, cfg)
    path = write_profile(tmp_path / "p48.toml", f"max_peak_sram_bytes = {budget}", "[48, 64]")
    sram = ensure_feasible(load_profile(path), space, cfg).peak_sram_bytes
    assert sram is not None and sram <= budget
    with pytest.raises(Natv2Error, match="resolutions"):
        ensure_feasible(load_profile(path), SearchSpace("baseline", resolutions=(56,)), cfg)


def test_ensure_feasible_judges_a_tflm_profile_on_the_tflm_arena(tmp_path):
    """A budget the MCUNet-style peak meets but TFLM's arena (activations + persistent part)
    does not: a TFLM profile is infeasible, naming the figure; a TinyEngine one is not."""
    from natv2.device_profiles import load_profile

    cfg = cfg_of("tiny", "exits+parallel", False)
    space = SearchSpace("exits+parallel")
    cheapest = cheapest_costs(space, cfg, "int8")
    assert cheapest["tflm_arena_bytes"] > cheapest["peak_sram_bytes"]
    budget = cheapest["tflm_arena_bytes"] - 1
    path = write_profile(tmp_path / "tflm.toml", f"max_peak_sram_bytes = {budget}")
    text = Path(path).read_text().replace('dtype = "int8"', 'dtype = "int8"\nruntime = "tflm"')
    Path(path).write_text(text)
    with pytest.raises(Natv2Error) as err:
        ensure_feasible(load_profile(path), space, cfg)
    msg = str(err.value)
    assert f"max_peak_sram_bytes = {budget} but the smallest achievable tflm_arena_bytes" in msg
    assert "runtime = tflm" in msg
    Path(path).write_text(text.replace('runtime = "tflm"', 'runtime = "tinyengine"'))
    sram = ensure_feasible(load_profile(path), space, cfg).peak_sram_bytes
    assert sram is not None and sram <= budget


# TFLM's smallest arena and its activation part, measured by ``find_arena`` on the int8 TFLite
# files of untrained tiny subnets with random BatchNorm statistics (2-core AMD EPYC host,
# tflite-micro 64-bit): (encoding, dense skips, width, vector, arena, activations)
TFLM_MEASURED = [
    ("baseline", False, 1.0, "0,0,9,1,2,0,9,3,3,0,4,3,8,0,4,6,5,0,1,8,7,8", 111080, 34560),
    ("baseline", True, 1.0, "4,0,3,4,0,0,1,4,6,0,7,9,2,0,1,6,0,0,6,3,6,0", 89520, 32768),
    ("exits", False, 1.0, "2,0,0,2,8,0,0,1,1,0,0,1,1,0,0,1,1,0,0,1,1,0,0", 32192, 25088),
    ("exits", True, 1.0, "3,0,1,9,9,9,1,5,6,3,4,1,1,0,0,1,1,0,0,1,1,0,0", 79520, 54000),
    ("exits", False, 1.0, "1,0,3,5,5,6,3,9,1,3,4,6,4,0,0,1,1,2,0,1,1,0,0", 71456, 27040),
    (
        "parallel",
        False,
        1.0,
        "0,0,22,60,24,0,24,28,63,0,40,27,43,46,21,43,43,0,8,39,4,0",
        106888,
        27648,
    ),
    (
        "parallel",
        True,
        1.0,
        "2,0,57,37,46,0,55,4,19,10,56,58,1,28,55,9,46,0,55,46,20,0",
        96992,
        29792,
    ),
    ("exits+parallel", True, 1.0, "4,0,0,10,21,0,0,1,1,0,0,1,1,0,0,1,1,0,0,1,1,0,0", 30896, 24576),
    (
        "exits+parallel",
        False,
        1.0,
        "0,0,1,62,38,43,46,59,46,58,58,1,1,0,0,1,1,0,0,1,1,0,0",
        68368,
        39168,
    ),
    (
        "exits+parallel",
        True,
        1.0,
        "1,0,2,55,46,28,10,55,28,10,9,55,1,0,0,1,1,0,0,1,1,0,0",
        52680,
        25696,
    ),
    (
        "exits+parallel",
        True,
        1.0,
        "3,0,3,38,38,0,0,28,10,0,0,28,5,0,0,1,1,0,0,1,1,0,0",
        58888,
        34208,
    ),
    (
        "exits+parallel",
        False,
        1.0,
        "4,0,4,5,10,0,0,37,23,28,0,60,43,42,0,10,57,0,0,46,1,0,0",
        84976,
        40960,
    ),
    (
        "parallel",
        False,
        1.2,
        "1,1,46,5,46,60,10,10,5,46,60,39,39,46,1,46,58,0,63,46,19,0",
        104136,
        32448,
    ),
    (
        "parallel",
        True,
        1.0,
        "4,0,23,6,45,22,55,22,41,10,28,5,46,0,46,46,28,46,37,55,46,0",
        104376,
        49152,
    ),
    ("baseline", True, 1.2, "2,1,8,3,4,2,1,4,0,0,2,9,7,5,4,7,5,0,9,2,0,0", 170040, 94080),
    (
        "exits+parallel",
        True,
        1.0,
        "0,0,4,55,6,28,0,55,40,28,2,55,56,0,0,55,1,0,0,55,1,0,0",
        77464,
        21888,
    ),
]
#: the cost model's TFLM figure is an upper bound of the arena by at most this many bytes
TFLM_TOLERANCE = 12


@pytest.mark.parametrize("row", TFLM_MEASURED, ids=lambda r: f"{r[0]}-{r[1]}-{r[2]}-{r[4]}")
def test_tflm_arena_bounds_the_measured_arena(row):
    """Activations equal TFLM's; the arena is over by 0..TFLM_TOLERANCE bytes (the live
    check against find_arena is tests/test_tflite.py; these are its recorded figures on 16
    subnets of every encoding, exits 1-5, dense skips on and off, widths 1.0 and 1.2)."""
    encoding, dense, width, vector, arena, activations = row
    space = SearchSpace(encoding, widths=(width,))
    arch = space.decode([int(v) for v in vector.split(",")])
    cfg = config_for_encoding(
        encoding, preset="tiny", width=width, num_classes=10, dense_skips=dense
    )
    c = subnet_cost(arch, cfg, "int8")
    assert c.tflm_arena_bytes - c.tflm_persistent_bytes == activations
    assert 0 <= c.tflm_arena_bytes - arena <= TFLM_TOLERANCE
    assert c.tflm_arena_bytes > c.peak_sram_bytes


def test_tflm_persistent_part_follows_the_ops_not_the_resolution():
    cfg = cfg_of("tiny", "exits+parallel", True)
    for arch in archs_of("exits+parallel")[:50]:
        small = subnet_cost(replace(arch, resolution=48), cfg, "int8")
        big = subnet_cost(replace(arch, resolution=64), cfg, "int8")
        assert small.tflm_persistent_bytes == big.tflm_persistent_bytes > 0
        assert small.tflm_arena_bytes <= big.tflm_arena_bytes
        # the reversed copy of the int8 input is live with the input
        assert big.tflm_arena_bytes - big.tflm_persistent_bytes >= 2 * 3 * 64 * 64


# --------------------------------------------------------------------------- CLI


#: `natv2 space cost` in OFA's layout (the hand-made arch's 48..64 px resolutions)
OFA_COST = ("space", "cost", "-e", "exits+parallel", "--layout", "imagenet")


def vector_of(arch: Arch, encoding: str) -> str:
    return ",".join(str(int(v)) for v in SearchSpace(encoding).encode(arch))


def test_cli_cost_json_matches_the_model(cli):
    arch = hand_arch()
    vec = vector_of(arch, "exits+parallel")
    res = cli(
        *OFA_COST,
        vec,
        "--supernet",
        "tiny-w1.0",
        "--json",
    )
    assert res.code == 0, res.err
    doc = res.json()
    cost = subnet_cost(arch, cfg_of("tiny", "exits+parallel", False), "float32")
    assert doc["id"] == arch.id and doc["encoding"] == "exits+parallel"
    assert doc["vector"] == [int(v) for v in vec.split(",")]
    assert doc["supernet"] == "tiny-w1.0" and doc["num_classes"] == 10 and doc["dtype"] == "float32"
    for key in ("params", "macs", "peak_sram_bytes", "flash_bytes"):
        assert doc[key] == cost.as_dict()[key]
    assert doc["profile"] is None
    # dense skips, classes and dtype change what they should
    dense = cli(
        *OFA_COST,
        vec,
        "--supernet",
        "tiny",
        "--dense-skips",
        "--classes",
        "100",
        "--dtype",
        "int8",
        "--json",
    ).json()
    cfg = config_for_encoding("exits+parallel", preset="tiny", num_classes=100, dense_skips=True)
    want = subnet_cost(arch, cfg, "int8")
    assert (dense["peak_sram_bytes"], dense["params"]) == (
        want.peak_sram_bytes,
        want.params,
    )
    assert dense["dtype"] == "int8" and dense["dense_skips"] is True


def test_cli_cost_with_a_device_reports_each_budget(cli):
    arch = hand_arch()
    vec = vector_of(arch, "exits+parallel")
    res = cli(
        *OFA_COST,
        vec,
        "--supernet",
        "tiny",
        "--device",
        "microcontroller",
        "--json",
    )
    assert res.code == 0, res.err
    doc = res.json()
    cost = subnet_cost(arch, cfg_of("tiny", "exits+parallel", False), "int8")
    assert doc["dtype"] == "int8" and doc["flash_bytes"] == cost.flash_bytes
    prof = doc["profile"]
    assert prof["name"] == "microcontroller-profile" and prof["fits"] is True
    names = [c["name"] for c in prof["checks"]]
    assert names == ["macs", "flash_bytes", "peak_sram_bytes", "latency_ms"]
    assert doc["latency_ms"] == pytest.approx(cost.macs / 1e8 * 1000)
    text = cli(
        *OFA_COST,
        vec,
        "--device",
        "microcontroller",
    )
    assert text.code == 0 and "max_peak_sram_bytes" in text.out and "verdict: fits" in text.out
    # a profile that measures latency: that budget is reported as not checked
    host = cli(
        *OFA_COST,
        vec,
        "--device",
        "host-cpu",
        "--json",
    )
    prof = host.json()["profile"]
    assert host.json()["dtype"] == "float32" and host.json()["latency_ms"] is None
    assert prof["checks"] == [] and prof["unchecked"] == ["max_latency_ms"]


def test_cli_cost_with_an_impossible_profile_reports_and_exits_0(cli, tmp_path):
    path = write_profile(tmp_path / "impossible.toml", "max_params = 1000")
    vec = vector_of(hand_arch(), "exits+parallel")
    res = cli(
        *OFA_COST,
        vec,
        "--device",
        path,
        "--json",
    )
    assert res.code == 0, res.err
    prof = res.json()["profile"]
    assert prof["fits"] is False
    assert [c["budget_key"] for c in prof["checks"] if not c["passed"]] == ["max_params"]
    text = cli(
        "space", "cost", vec, "-e", "exits+parallel", "--layout", "imagenet", "--device", path
    )
    assert text.code == 0 and "does not fit" in text.out and "max_params" in text.out


def test_cli_cost_bad_input_exits_2(cli, tmp_path):
    vec = vector_of(hand_arch(), "exits+parallel")
    wide = vec.split(",")
    wide[1] = "1"
    for args, needle in [
        (("space", "cost", "1,2,3", "-e", "baseline"), "has 22 genes"),
        (("space", "cost", vec, "--supernet", "huge"), "unknown supernet 'huge'"),
        (("space", "cost", ",".join(wide), "--supernet", "tiny-w1.0"), "position 2 (W)"),
        (("space", "cost", vec, "--classes", "1"), "at least 2 classes"),
        (("space", "cost", vec, "--dtype", "int4"), "dtype"),
        (("space", "cost", vec, "--device", str(tmp_path / "none.toml")), "does not exist"),
        (("space", "cost", vec, "--device", "microcontroller", "--dtype", "float32"), "int8"),
    ]:
        res = cli(*args)
        assert res.code == 2, (args, res.out, res.err)
        assert needle in res.err, (needle, res.err)
        assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1


def test_subnet_cost_record():
    c = SubnetCost(1, 2, 3, 4, "int8", 5, 2, 6)
    assert c.as_dict() == {
        "params": 1,
        "macs": 2,
        "peak_sram_bytes": 3,
        "tflm_arena_bytes": 5,
        "flash_bytes": 4,
        "tflite_bytes": 6,
        "dtype": "int8",
    }


@pytest.mark.parametrize("storage", [28, 64, 8], ids=["28px", "64px", "8px"])
@pytest.mark.parametrize("dense", [False, True], ids=["plain", "dense"])
def test_data_fitted_layouts_cost_what_fvcore_and_onnx_count(storage, dense):
    """A supernet fitted to small images (a stride-1 stem, strides in stages 2 and 3, its own
    resolutions): the cost model is exact there too, resolution by resolution."""
    from natv2.supernet.config import layout_for

    layout = layout_for(storage)
    cfg = config_for_encoding(
        "exits+parallel", preset="tiny", width=1.0, dense_skips=dense, **layout
    )
    space = SearchSpace("exits+parallel", widths=(1.0,), grid=cfg.resolutions)
    rng = np.random.default_rng(storage)
    archs = [space.maximal(), space.minimal()]
    archs += [space.decode(v) for v in space.sample(4, rng)]
    assert {a.resolution for a in archs} <= set(layout["resolutions"])
    for arch in archs:
        check_whole_subnet(arch, cfg, with_fvcore=not dense)
