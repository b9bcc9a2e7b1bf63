"""The OFAv2 search space: Arch, the four integer encodings of NATv2 (paper Fig. 2), samplers.

Pure Python + numpy: the search evaluates thousands of vectors per second through here, and the
cost model builds on it without torch.

Canonical form
--------------
NSGA-III's integer operators produce any in-bounds vector, so every in-bounds vector decodes to
a runnable Arch, and ``encode(decode(v))`` is the *canonical* vector, a fixed point of
decode/encode. The rules, applied in this order:

1. **Mandatory levels.** Levels 1 and 2 of every stage can never be skipped: their genes have
   lower bound 1 (a 0 there is out of range, not silently repaired).
2. **Depth compaction.** The supernet runs the first ``d`` levels of a stage (OFA's elastic
   depth). A skipped level 3 with an active level 4 is read as depth 3, with level 4's
   configuration moved to level 3; level 4 becomes a skip.
3. **Irrelevant kernel/expand.** A parallel level whose branch mask has no IRB (A in {2, 4, 6})
   ignores E and K: they are set to E3 K3.
4. **Unreached stages.** With exit X < 5, stages X+1..5 never run: their levels become the
   smallest filler (levels 1-2 = code 1, levels 3-4 = skip).
5. **Allowed values.** When a space restricts resolutions or widths to a non-contiguous set, R and
   W snap to the nearest allowed value (ties to the smaller).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from natv2.errors import EncodingError
from natv2.untrusted import MAX_RESOLUTION, short_int, shown

#: the paper's resolutions (the R gene's values in OFA's ImageNet layout); a supernet trained on
#: small images has its own (``SupernetConfig.resolutions``, ``SearchSpace.grid``)
RESOLUTIONS: tuple[int, ...] = (48, 52, 56, 60, 64)
#: the input sides any Arch may have (a supernet's resolutions lie inside)
MIN_RESOLUTION = 4
WIDTHS: tuple[float, ...] = (1.0, 1.2)
EXITS: tuple[int, ...] = (1, 2, 3, 4, 5)
EXPANDS: tuple[int, ...] = (3, 4, 6)
KERNELS: tuple[int, ...] = (3, 5, 7)
N_STAGES = 5
LEVELS_PER_STAGE = 4
N_LEVELS = N_STAGES * LEVELS_PER_STAGE
MIN_DEPTH = 2
# (E, K) pairs in the order of the encoding: E3K3, E3K5, E3K7, E4K3, ..., E6K7.
EK_PAIRS: tuple[tuple[int, int], ...] = tuple(itertools.product(EXPANDS, KERNELS))

# Branch mask bits (A = 1..7): which parallel branches a level runs.
BRANCH_IRB = 1
BRANCH_POINTWISE = 2
BRANCH_TRANSFORM = 4

ENCODINGS: tuple[str, ...] = ("baseline", "parallel", "exits", "exits+parallel")


@dataclass(frozen=True)
class Block:
    """One active level: branch mask A, expand ratio E and kernel size K of its IRB."""

    branches: int = BRANCH_IRB
    expand: int = 6
    kernel: int = 7

    @property
    def has_irb(self) -> bool:
        return bool(self.branches & BRANCH_IRB)

    @property
    def has_pointwise(self) -> bool:
        return bool(self.branches & BRANCH_POINTWISE)

    @property
    def has_transform(self) -> bool:
        return bool(self.branches & BRANCH_TRANSFORM)

    def describe(self) -> str:
        names = [
            n
            for bit, n in (
                (BRANCH_IRB, f"IRB(E{self.expand},K{self.kernel})"),
                (BRANCH_POINTWISE, "PW"),
                (BRANCH_TRANSFORM, "TR"),
            )
            if self.branches & bit
        ]
        return "+".join(names)


@dataclass(frozen=True)
class Arch:
    """The decoded description of a subnet; ``levels[i]`` is None when level i is skipped."""

    resolution: int
    width: float
    exit: int
    levels: tuple[Block | None, ...]

    def stage_levels(self, stage: int) -> tuple[Block | None, ...]:
        """Levels of ``stage`` (0-based)."""
        start = stage * LEVELS_PER_STAGE
        return self.levels[start : start + LEVELS_PER_STAGE]

    @property
    def depths(self) -> tuple[int, ...]:
        """Active levels per stage (stages past the exit included, as their canonical filler)."""
        return tuple(sum(b is not None for b in self.stage_levels(s)) for s in range(N_STAGES))

    def active_blocks(self, stage: int) -> tuple[Block, ...]:
        """The blocks the supernet runs in ``stage`` (empty past the exit)."""
        if stage >= self.exit:
            return ()
        return tuple(b for b in self.stage_levels(stage) if b is not None)

    @property
    def id(self) -> str:
        """Stable, short, human-readable id: resolution, width, exit, depths and a digest."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
        depths = "".join(str(d) for d in self.depths[: self.exit])
        return (
            f"r{self.resolution}-w{round(self.width * 10):02d}-x{self.exit}-d{depths}-{digest[:6]}"
        )

    def to_dict(self) -> dict:
        return {
            "resolution": self.resolution,
            "width": self.width,
            "exit": self.exit,
            "levels": [
                None
                if b is None
                else {"branches": b.branches, "expand": b.expand, "kernel": b.kernel}
                for b in self.levels
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Arch:
        try:
            levels = tuple(
                None if b is None else Block(int(b["branches"]), int(b["expand"]), int(b["kernel"]))
                for b in d["levels"]
            )
            arch = cls(int(d["resolution"]), float(d["width"]), int(d["exit"]), levels)
        except (KeyError, TypeError, ValueError) as exc:
            raise EncodingError(f"malformed arch description: {exc!r}") from None
        validate_arch(arch)
        return arch

    def describe(self) -> str:
        lines = [
            f"Arch {self.id}: resolution {self.resolution}, width {self.width}, exit {self.exit}"
        ]
        for s in range(N_STAGES):
            reached = s < self.exit
            blocks = self.active_blocks(s) if reached else ()
            body = ", ".join(b.describe() for b in blocks) if reached else "(not reached)"
            lines.append(f"  stage {s + 1}: depth {len(blocks)}: {body}")
        return "\n".join(lines)


def validate_arch(arch: Arch) -> None:
    """Raise EncodingError unless the supernet can run ``arch`` as written."""
    if not MIN_RESOLUTION <= arch.resolution <= MAX_RESOLUTION:
        raise EncodingError(
            f"resolution {short_int(arch.resolution)} not in {MIN_RESOLUTION}..{MAX_RESOLUTION}"
        )
    if arch.width not in WIDTHS:
        raise EncodingError(f"width {arch.width} not in {WIDTHS}")
    if arch.exit not in EXITS:
        raise EncodingError(f"exit {arch.exit} not in {EXITS}")
    if len(arch.levels) != N_LEVELS:
        raise EncodingError(f"an Arch has {N_LEVELS} levels, got {len(arch.levels)}")
    for s in range(N_STAGES):
        lv = arch.stage_levels(s)
        if lv[0] is None or lv[1] is None:
            raise EncodingError(f"stage {s + 1}: levels 1 and 2 can never be skipped")
        if lv[2] is None and lv[3] is not None:
            raise EncodingError(f"stage {s + 1}: level 4 is active while level 3 is skipped")
        for b in lv:
            if b is None:
                continue
            if not 1 <= b.branches <= 7:
                raise EncodingError(f"branch mask {b.branches} not in 1..7")
            if b.expand not in EXPANDS or b.kernel not in KERNELS:
                raise EncodingError(f"(E{b.expand}, K{b.kernel}) not in E{EXPANDS} x K{KERNELS}")


@dataclass(frozen=True)
class SearchSpace:
    """One encoding over the OFAv2 space, optionally restricted to some resolutions/widths.

    ``grid`` is the supernet's resolutions: gene R = i means ``grid[i]`` (the paper's 48..64 px
    by default; a supernet fitted to small images has its own, ``SupernetConfig.resolutions``).
    The gene values keep that meaning whatever the restriction (with the paper's grid, R=0 is
    48 px); a restriction narrows the bounds and snaps values outside the allowed set.
    """

    encoding: str = "exits+parallel"
    resolutions: tuple[int, ...] | None = None  # allowed, a subset of the grid (None: all)
    widths: tuple[float, ...] = WIDTHS
    grid: tuple[int, ...] = RESOLUTIONS

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise EncodingError(
                f"unknown encoding {self.encoding!r}; choose one of: {', '.join(ENCODINGS)}"
            )
        grid = tuple(sorted({int(r) for r in self.grid}))
        if not grid or not all(MIN_RESOLUTION <= r <= MAX_RESOLUTION for r in grid):
            raise EncodingError(
                f"a resolution grid is a non-empty list of {MIN_RESOLUTION}..{MAX_RESOLUTION} px"
            )
        object.__setattr__(self, "grid", grid)
        if self.resolutions is None:
            object.__setattr__(self, "resolutions", grid)
        assert self.resolutions is not None
        bad_r = [r for r in self.resolutions if r not in grid]
        if not self.resolutions or bad_r:
            raise EncodingError(f"resolutions must be a non-empty subset of {list(grid)}")
        bad_w = [w for w in self.widths if w not in WIDTHS]
        if not self.widths or bad_w:
            raise EncodingError(f"widths must be a non-empty subset of {WIDTHS}")
        object.__setattr__(self, "resolutions", tuple(sorted(set(self.resolutions))))
        object.__setattr__(self, "widths", tuple(sorted(set(self.widths))))

    @property
    def allowed_resolutions(self) -> tuple[int, ...]:
        """The resolutions subnets may have (``resolutions``, never None after init)."""
        assert self.resolutions is not None
        return self.resolutions

    # --- layout -------------------------------------------------------------------------
    @property
    def parallel(self) -> bool:
        return "parallel" in self.encoding

    @property
    def has_exits(self) -> bool:
        return self.encoding.startswith("exits")

    @property
    def level_offset(self) -> int:
        """Index of L1/P1 in the vector."""
        return 3 if self.has_exits else 2

    @property
    def length(self) -> int:
        return self.level_offset + N_LEVELS

    @property
    def max_level_code(self) -> int:
        return 63 if self.parallel else 9

    def gene_names(self) -> list[str]:
        head = ["R", "W", "X"] if self.has_exits else ["R", "W"]
        letter = "P" if self.parallel else "L"
        return head + [f"{letter}{i + 1}" for i in range(N_LEVELS)]

    @property
    def lower(self) -> np.ndarray:
        lo = np.zeros(self.length, dtype=np.int64)
        lo[0] = self.grid.index(self.allowed_resolutions[0])
        lo[1] = WIDTHS.index(self.widths[0])
        for i in range(N_LEVELS):
            if i % LEVELS_PER_STAGE < MIN_DEPTH:
                lo[self.level_offset + i] = 1
        return lo

    @property
    def upper(self) -> np.ndarray:
        hi = np.full(self.length, self.max_level_code, dtype=np.int64)
        hi[0] = self.grid.index(self.allowed_resolutions[-1])
        hi[1] = WIDTHS.index(self.widths[-1])
        if self.has_exits:
            hi[2] = len(EXITS) - 1
        return hi

    # --- level codes ----------------------------------------------------------------------
    def _level_from_code(self, code: int) -> Block | None:
        if code == 0:
            return None
        branches, ek = divmod(code - 1, len(EK_PAIRS)) if self.parallel else (0, code - 1)
        expand, kernel = EK_PAIRS[ek]
        return Block(branches + 1, expand, kernel)

    def _level_to_code(self, block: Block | None) -> int:
        if block is None:
            return 0
        ek = EK_PAIRS.index((block.expand, block.kernel))
        if not self.parallel:
            if block.branches != BRANCH_IRB:
                raise EncodingError(
                    f"encoding {self.encoding!r} has no parallel branches (A={block.branches})"
                )
            return 1 + ek
        return 1 + (block.branches - 1) * len(EK_PAIRS) + ek

    # --- validation, decode, encode -------------------------------------------------------
    def check(self, vector: Sequence[int] | np.ndarray) -> np.ndarray:
        """Return ``vector`` as int64 array, or raise naming the first bad position."""
        # Python ints first: a gene too large for int64 is out of range, not an OverflowError
        try:
            genes = [int(x) for x in vector]
        except (TypeError, ValueError, OverflowError):
            raise EncodingError(
                f"an encoding vector is a list of integers (comma-separated on the command line), "
                f"got {shown(list(vector) if not isinstance(vector, str) else vector)}"
            ) from None
        if len(genes) != self.length:
            raise EncodingError(
                f"encoding {self.encoding!r} has {self.length} genes "
                f"({' '.join(self.gene_names()[:3])} ...), got {len(genes)}"
            )
        lo, hi, names = self.lower, self.upper, self.gene_names()
        for i, x in enumerate(genes):
            if not int(lo[i]) <= x <= int(hi[i]):
                hint = (
                    " (levels 1-2 of a stage cannot be skipped)"
                    if x == 0 and i >= self.level_offset
                    else ""
                )
                raise EncodingError(
                    f"position {i + 1} ({names[i]}) is {short_int(x)}, allowed range is "
                    f"{lo[i]}..{hi[i]}{hint}"
                )
        return np.asarray(genes, dtype=np.int64)

    def decode(self, vector: Sequence[int] | np.ndarray) -> Arch:
        """Decode any in-bounds vector to its canonical, runnable Arch."""
        v = self.check(vector)
        resolution = _snap(self.grid[v[0]], self.allowed_resolutions)
        width = _snap(WIDTHS[v[1]], self.widths)
        exit_ = EXITS[v[2]] if self.has_exits else EXITS[-1]
        levels: list[Block | None] = []
        for s in range(N_STAGES):
            codes = v[self.level_offset + s * LEVELS_PER_STAGE :][:LEVELS_PER_STAGE]
            if s >= exit_:
                levels += [self._filler(), self._filler(), None, None]
                continue
            blocks = [self._canonical_block(self._level_from_code(int(c))) for c in codes]
            active = [b for b in blocks if b is not None]
            levels += active + [None] * (LEVELS_PER_STAGE - len(active))
        return Arch(resolution, width, exit_, tuple(levels))

    def encode(self, arch: Arch) -> np.ndarray:
        """The vector of ``arch``; raises when ``arch`` is outside this space."""
        validate_arch(arch)
        if arch.resolution not in self.allowed_resolutions:
            raise EncodingError(
                f"resolution {arch.resolution} not in {list(self.allowed_resolutions)}"
            )
        if arch.width not in self.widths:
            raise EncodingError(f"width {arch.width} not in {self.widths}")
        if not self.has_exits and arch.exit != EXITS[-1]:
            raise EncodingError(f"encoding {self.encoding!r} has no early exits")
        head = [self.grid.index(arch.resolution), WIDTHS.index(arch.width)]
        if self.has_exits:
            head.append(EXITS.index(arch.exit))
        return np.asarray(head + [self._level_to_code(b) for b in arch.levels], dtype=np.int64)

    def canonical(self, vector: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.encode(self.decode(vector))

    def _filler(self) -> Block:
        return self._level_from_code(1)  # type: ignore[return-value]

    def _canonical_block(self, block: Block | None) -> Block | None:
        if block is None or block.has_irb:
            return block
        return Block(block.branches, EXPANDS[0], KERNELS[0])

    # --- special subnets ------------------------------------------------------------------
    def maximal(self) -> Arch:
        """Every level active, largest IRB, all branches, last exit, largest R and W."""
        branches = 7 if self.parallel else BRANCH_IRB
        block = Block(branches, EXPANDS[-1], KERNELS[-1])
        resolution = self.allowed_resolutions[-1]
        return Arch(resolution, self.widths[-1], EXITS[-1], (block,) * N_LEVELS)

    def minimal(self) -> Arch:
        """Depth 2 everywhere, cheapest level, first exit, smallest R and W.

        For parallel encodings the cheapest level is the transformation branch alone (no
        depthwise conv; on same-shape levels it is BatchNorm + activation only).
        """
        block = (
            Block(BRANCH_TRANSFORM, EXPANDS[0], KERNELS[0])
            if self.parallel
            else Block(BRANCH_IRB, EXPANDS[0], KERNELS[0])
        )
        exit_ = EXITS[0] if self.has_exits else EXITS[-1]
        arch = Arch(
            self.allowed_resolutions[0],
            self.widths[0],
            exit_,
            (block, block, None, None) * N_STAGES,
        )
        return self.decode(self.encode(arch))

    # --- samplers -------------------------------------------------------------------------
    def canonical_batch(self, vectors: np.ndarray) -> np.ndarray:
        """Vectorised ``canonical`` for an (n, length) array of in-bounds vectors.

        Same rules as ``decode`` + ``encode`` (the tests hold the two equal); used by the
        samplers and by NSGA-III, which canonicalise whole populations.
        """
        v = np.array(vectors, dtype=np.int64, copy=True).reshape(-1, self.length)
        lo, hi = self.lower, self.upper
        bad = (v < lo) | (v > hi)
        if bad.any():
            row = np.argwhere(bad)[0][0]
            self.check(v[row])  # raises the one-line message for the first bad vector
        allowed = self.allowed_resolutions
        r_table = np.array([self.grid.index(_snap(r, allowed)) for r in self.grid])
        w_table = np.array([WIDTHS.index(_snap(w, self.widths)) for w in WIDTHS])
        v[:, 0] = r_table[v[:, 0]]
        v[:, 1] = w_table[v[:, 1]]
        levels = v[:, self.level_offset :].reshape(-1, N_STAGES, LEVELS_PER_STAGE)
        if self.parallel:
            branches = (levels - 1) // len(EK_PAIRS) + 1
            no_irb = (levels > 0) & ((branches & BRANCH_IRB) == 0)
            levels[no_irb] = 1 + (branches[no_irb] - 1) * len(EK_PAIRS)
        shift = (levels[:, :, 2] == 0) & (levels[:, :, 3] != 0)
        levels[:, :, 2] = np.where(shift, levels[:, :, 3], levels[:, :, 2])
        levels[:, :, 3] = np.where(shift, 0, levels[:, :, 3])
        if self.has_exits:
            unreached = np.arange(N_STAGES)[None, :] > v[:, 2:3]  # stage index >= exit
            levels[unreached] = np.array([1, 1, 0, 0])
        v[:, self.level_offset :] = levels.reshape(len(v), -1)
        return v

    def sample_uniform(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """NAT's sampler: every gene uniform over its bounds (biased to deep stages)."""
        raw = rng.integers(self.lower, self.upper + 1, size=(n, self.length))
        return self.canonical_batch(raw)

    def sample_natv2(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """NATv2's sampler: uniform in stage depth, in network depth and in block configuration.

        Stage depths are drawn jointly from a fixed distribution over the 3^5 depth patterns
        whose network-depth marginal is uniform on 10..20 and whose every stage-depth marginal
        is uniform on 2..4 (found by iterative proportional fitting; both hold exactly).
        """
        patterns, probs = _depth_pattern_distribution()
        depths = np.asarray(patterns)[rng.choice(len(patterns), size=n, p=probs)]
        v = np.zeros((n, self.length), dtype=np.int64)
        v[:, 0] = [self.grid.index(r) for r in rng.choice(self.allowed_resolutions, size=n)]
        v[:, 1] = [WIDTHS.index(w) for w in rng.choice(self.widths, size=n)]
        if self.has_exits:
            v[:, 2] = rng.integers(len(EXITS), size=n)
        codes = rng.integers(1, self.max_level_code + 1, size=(n, N_STAGES, LEVELS_PER_STAGE))
        active = np.arange(LEVELS_PER_STAGE)[None, None, :] < depths[:, :, None]
        v[:, self.level_offset :] = np.where(active, codes, 0).reshape(n, -1)
        return self.canonical_batch(v)

    def sample(self, n: int, rng: np.random.Generator, sampler: str = "natv2") -> np.ndarray:
        if sampler == "natv2":
            return self.sample_natv2(n, rng)
        if sampler == "uniform":
            return self.sample_uniform(n, rng)
        raise EncodingError(f"unknown sampler {sampler!r}; choose natv2 or uniform")


SAMPLERS: tuple[str, ...] = ("natv2", "uniform")


def parse_vector(text: str) -> list[int]:
    """Parse the command-line form ``4,1,2,7,...`` (spaces and brackets tolerated)."""
    cleaned = text.strip().strip("[]()")
    parts = [p for p in cleaned.replace(" ", ",").split(",") if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise EncodingError(
            f"cannot read {text!r} as an encoding vector: write comma-separated integers, "
            "e.g. 4,1,4,9,9,0,0,..."
        ) from None


def _snap(value, allowed):
    return min(allowed, key=lambda a: (abs(a - value), a))


@lru_cache(maxsize=1)
def _depth_pattern_distribution() -> tuple[tuple[tuple[int, ...], ...], np.ndarray]:
    extra_choices = LEVELS_PER_STAGE - MIN_DEPTH + 1
    patterns = np.array(list(itertools.product(range(extra_choices), repeat=N_STAGES)))
    totals = patterns.sum(axis=1)
    n_totals = N_STAGES * (extra_choices - 1) + 1
    w = np.full(len(patterns), 1.0 / len(patterns))
    for _ in range(500):
        for t in range(n_totals):
            m = totals == t
            w[m] *= (1.0 / n_totals) / w[m].sum()
        for s in range(N_STAGES):
            for x in range(extra_choices):
                m = patterns[:, s] == x
                w[m] *= (1.0 / extra_choices) / w[m].sum()
    w /= w.sum()
    depths = tuple(tuple(int(x) + MIN_DEPTH for x in p) for p in patterns)
    return depths, w
