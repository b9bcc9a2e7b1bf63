"""Import OFA's pretrained MobileNetV3 supernets into natv2's baseline-encoding supernet.

OFA's ``ofa_mbv3_d234_e346_k357_w1.0`` / ``w1.2`` checkpoints are state dicts of
``OFAMobileNetV3(width_mult=W, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
depth_list=[2, 3, 4])``. natv2's supernet with the ``baseline`` encoding (no parallel branches, no
early exits) has exactly the same tensors under other names; :func:`ofa_key_map` spells the
correspondence out one tensor at a time, and the import refuses to finish unless every natv2
parameter and buffer received a value and every OFA tensor was used (or deliberately left out,
with the reason recorded).

Channels are copied in OFA's order: OFA's released checkpoints are already importance-sorted
(``re_organize_middle_weights``), so reordering them would only change nothing or break the
elastic-expand slices.

Checkpoints are untrusted input: they are read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from natv2.errors import Natv2Error
from natv2.space import LEVELS_PER_STAGE, N_STAGES, WIDTHS
from natv2.supernet.config import STAGE_SE, SupernetConfig, config_for_encoding
from natv2.supernet.elastic import transform_name
from natv2.supernet.network import OFAv2Supernet, build_supernet
from natv2.untrusted import file_errors, path_kind, shown, torch_load_failure

OFA_PRESET = "ofa-mbv3"
BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
CLASSIFIER_KEYS = ("exits.5.classifier.weight", "exits.5.classifier.bias")


def ofa_checkpoint_name(width: float) -> str:
    return f"ofa_mbv3_d234_e346_k357_w{width:.1f}"


def canonical_ofa_key(key: str) -> str:
    """One spelling for every name OFA has used for a tensor.

    Strips DataParallel's ``module.`` prefix, maps the old ``mobile_inverted_conv`` block name
    to ``conv``, and collapses the dynamic layers' doubled ``bn.bn`` / ``conv.conv`` /
    ``linear.linear`` (the aliases ``OFAMobileNetV3.load_state_dict`` itself accepts).
    """
    while key.startswith("module."):
        key = key[len("module.") :]
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    key = key.replace(".bn.bn.", ".bn.")
    key = key.replace(".conv.conv.weight", ".conv.weight")
    return key.replace(".linear.linear.", ".linear.")


def _bn(natv2: str, ofa: str) -> Iterator[tuple[str, str]]:
    for t in BN_TENSORS:
        yield f"{natv2}.{t}", f"{ofa}.{t}"


def ofa_key_map(config: SupernetConfig) -> dict[str, str]:
    """natv2 state-dict key → OFA state-dict key (as the ``ofa`` package names it today)."""
    if config.preset != OFA_PRESET or config.parallel or config.exits or config.dense_skips:
        raise Natv2Error(
            f"OFA weights fit only the baseline-encoding {OFA_PRESET} supernet "
            "(no parallel branches, exits or dense skips)"
        )
    pairs: list[tuple[str, str]] = [("stem.0.weight", "first_conv.conv.weight")]
    pairs += _bn("stem.1", "first_conv.bn")
    # OFA's blocks[0]: MBConvLayer(expand_ratio=1) = depthwise 3x3 + BN + ReLU, 1x1 + BN, identity.
    pairs.append(("first_block.depthwise.0.weight", "blocks.0.conv.depth_conv.conv.weight"))
    pairs += _bn("first_block.depthwise.1", "blocks.0.conv.depth_conv.bn")
    pairs.append(("first_block.project.0.weight", "blocks.0.conv.point_linear.conv.weight"))
    pairs += _bn("first_block.project.1", "blocks.0.conv.point_linear.bn")
    kernels = sorted((3, 5, 7))
    for s in range(N_STAGES):
        for i in range(LEVELS_PER_STAGE):
            n = f"stages.{s}.{i}.irb"
            o = f"blocks.{1 + s * LEVELS_PER_STAGE + i}.conv"  # DynamicMBConvLayer
            pairs.append((f"{n}.expand_conv.weight", f"{o}.inverted_bottleneck.conv.conv.weight"))
            pairs += _bn(f"{n}.expand_bn", f"{o}.inverted_bottleneck.bn.bn")
            pairs.append((f"{n}.depthwise.weight", f"{o}.depth_conv.conv.conv.weight"))
            for src, dst in zip(kernels[:0:-1], kernels[-2::-1], strict=True):
                name = transform_name(src, dst)
                pairs.append(
                    (f"{n}.depthwise.transforms.{name}", f"{o}.depth_conv.conv.{name}_matrix")
                )
            pairs += _bn(f"{n}.depthwise_bn", f"{o}.depth_conv.bn.bn")
            if STAGE_SE[s]:
                for part in ("reduce", "expand"):
                    for t in ("weight", "bias"):
                        pairs.append((f"{n}.se.{part}.{t}", f"{o}.depth_conv.se.fc.{part}.{t}"))
            pairs.append((f"{n}.project_conv.weight", f"{o}.point_linear.conv.conv.weight"))
            pairs += _bn(f"{n}.project_bn", f"{o}.point_linear.bn.bn")
    # Exit "5" is OFA's final head: final_expand_layer (conv+BN+hswish), pool, feature_mix_layer
    # (conv, no BN, hswish), classifier (dropout + linear).
    pairs.append(("exits.5.expand.0.weight", "final_expand_layer.conv.weight"))
    pairs += _bn("exits.5.expand.1", "final_expand_layer.bn")
    pairs.append(("exits.5.mix.weight", "feature_mix_layer.conv.weight"))
    pairs.append(("exits.5.classifier.weight", "classifier.linear.weight"))
    pairs.append(("exits.5.classifier.bias", "classifier.linear.bias"))
    mapping = dict(pairs)
    if len(mapping) != len(pairs) or len(set(mapping.values())) != len(pairs):
        raise AssertionError("ofa_key_map: a natv2 or OFA key is mapped twice")
    return mapping


def _expected_shapes(width: float, num_classes: int) -> dict[str, tuple[int, ...]]:
    """natv2 key → shape, without allocating weights (meta device)."""
    config = config_for_encoding(
        "baseline", preset=OFA_PRESET, width=width, num_classes=num_classes
    )
    with torch.device("meta"):
        net = OFAv2Supernet(config)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@dataclass
class OFAImport:
    """What :func:`import_ofa` made: the supernet and an account of every tensor."""

    net: OFAv2Supernet
    checkpoint_classes: int
    classifier_reinitialised: bool
    used: list[str] = field(default_factory=list)  # OFA keys copied into the supernet
    ignored: dict[str, str] = field(default_factory=dict)  # OFA key → why it was left out

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())


def _unwrap(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict of a raw state dict or of ``{"state_dict": ...}``, keys canonicalised,
    and canonical key → the key as the file spells it."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise Natv2Error(
            f"{source}: not an OFA state dict (expected a dict of name → tensor, or "
            '{"state_dict": ...}); pass an OFA MobileNetV3 supernet such as '
            f"{ofa_checkpoint_name(1.0)}"
        )
    out: dict[str, torch.Tensor] = {}
    original: dict[str, str] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise Natv2Error(
                f"{source}: entry {key!r} is not a named tensor; pass an OFA state dict "
                f"(the file OFA ships as {ofa_checkpoint_name(1.0)}), not a training checkpoint"
            )
        canon = canonical_ofa_key(key)
        if canon in out:
            raise Natv2Error(
                f"{source}: {original[canon]!r} and {key!r} name the same OFA tensor; "
                "keep only one of them in the state dict"
            )
        out[canon], original[canon] = value, key
    return out, original


def _width_hint(state: dict[str, torch.Tensor], width: float, key_map: dict[str, str]) -> str:
    """'this looks like a w1.2 checkpoint: pass --width 1.2' when another width fits, else ''."""
    for other in WIDTHS:
        if other == width:
            continue
        shapes = _expected_shapes(other, 2)
        fits = all(
            canonical_ofa_key(o) in state
            and (n in CLASSIFIER_KEYS or tuple(state[canonical_ofa_key(o)].shape) == shapes[n])
            for n, o in key_map.items()
        )
        if fits:
            return f"this looks like a w{other:.1f} checkpoint: pass --width {other:.1f}"
    return ""


def _mismatch(source: str, width: float, problem: str, hint: str) -> Natv2Error:
    fix = hint or (
        f"pass the state dict of OFAMobileNetV3(width_mult={width}, ks_list=[3, 5, 7], "
        f"expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4]) ({ofa_checkpoint_name(width)})"
    )
    return Natv2Error(f"{source}: not an OFA MobileNetV3 w{width:.1f} supernet: {problem}; {fix}")


def import_ofa(
    state_dict: Mapping[str, Any],
    width: float,
    num_classes: int | None = None,
    seed: int = 0,
    source: str = "OFA state dict",
) -> OFAImport:
    """Copy an OFA MobileNetV3 state dict into a fresh baseline-encoding natv2 supernet.

    ``num_classes`` other than the checkpoint's re-initialises only the classifier Linear (from
    ``seed``); every other tensor comes from the checkpoint. Raises Natv2Error naming the first
    missing, unexpected or mis-shaped tensor.
    """
    if width not in WIDTHS:
        raise Natv2Error(f"width multiplier {width} not in {WIDTHS}; OFA ships w1.0 and w1.2")
    state, original = _unwrap(state_dict, source)
    probe = config_for_encoding("baseline", preset=OFA_PRESET, width=width, num_classes=2)
    key_map = ofa_key_map(probe)
    expected = _expected_shapes(width, 2)
    if set(key_map) != set(expected):  # totality on the natv2 side: a bug, not bad input
        missing = sorted(set(expected) - set(key_map)) or sorted(set(key_map) - set(expected))
        raise AssertionError(f"ofa_key_map does not cover the natv2 supernet: {missing[:3]}")

    # Check every OFA tensor natv2 needs, in natv2 order, then every tensor the file holds.
    for n, o in key_map.items():
        c = canonical_ofa_key(o)
        if c not in state:
            hint = _width_hint(state, width, key_map)
            raise _mismatch(source, width, f"tensor {o!r} is missing", hint)
        shape = tuple(state[c].shape)
        if n in CLASSIFIER_KEYS:
            ok = len(shape) == len(expected[n]) and shape[1:] == expected[n][1:]
        else:
            ok = shape == expected[n]
        if not ok:
            hint = _width_hint(state, width, key_map)
            want = expected[n] if n not in CLASSIFIER_KEYS else ("N", *expected[n][1:])
            problem = f"tensor {o!r} has shape {shape}, expected {want}"
            raise _mismatch(source, width, problem, hint)
    wanted = {canonical_ofa_key(o) for o in key_map.values()}
    extra = [k for k in state if k not in wanted]
    if extra:
        raise _mismatch(source, width, f"unexpected tensor {original[extra[0]]!r}", "")

    weight_key = canonical_ofa_key(key_map["exits.5.classifier.weight"])
    bias_key = canonical_ofa_key(key_map["exits.5.classifier.bias"])
    ckpt_classes = int(state[weight_key].shape[0])
    if tuple(state[bias_key].shape) != (ckpt_classes,):
        problem = (
            f"classifier bias has shape {tuple(state[bias_key].shape)}, expected ({ckpt_classes},)"
        )
        raise _mismatch(source, width, problem, "")
    classes = ckpt_classes if num_classes is None else int(num_classes)
    reinit = classes != ckpt_classes

    config = config_for_encoding("baseline", preset=OFA_PRESET, width=width, num_classes=classes)
    net = build_supernet(config, seed=seed)  # the classifier keeps this seeded init if reinit
    target = net.state_dict()
    result = OFAImport(net, ckpt_classes, reinit)
    assigned: set[str] = set()
    with torch.no_grad():
        for n, o in key_map.items():
            c = canonical_ofa_key(o)
            if reinit and n in CLASSIFIER_KEYS:
                result.ignored[o] = (
                    f"classifier for {ckpt_classes} classes; re-initialised for {classes} "
                    f"(seed {seed})"
                )
                assigned.add(n)
                continue
            if state[c].is_floating_point() and not bool(torch.isfinite(state[c]).all()):
                raise Natv2Error(
                    f"{source}: tensor {original[c]!r} holds NaN or infinite values; the "
                    "checkpoint is corrupt or diverged: download or export it again"
                )
            target[n].copy_(state[c])
            result.used.append(o)
            assigned.add(n)
    # Totality, both ways: every natv2 tensor got a value, every OFA tensor was used or ignored.
    unassigned = set(target) - assigned
    unaccounted = set(state) - {canonical_ofa_key(k) for k in (*result.used, *result.ignored)}
    if unassigned or unaccounted:
        raise Natv2Error(
            f"{source}: import incomplete (natv2 tensors without a value: "
            f"{sorted(unassigned)[:3]}; OFA tensors not used: {sorted(unaccounted)[:3]}); "
            "this is a natv2 bug, please report it with the checkpoint's name"
        )
    return result


def import_ofa_state_dict(
    state_dict: Mapping[str, Any], width: float, num_classes: int | None = None, seed: int = 0
) -> OFAv2Supernet:
    """A baseline-encoding natv2 supernet holding the weights of an OFA MobileNetV3 state dict."""
    return import_ofa(state_dict, width, num_classes, seed).net


def load_ofa_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an OFA checkpoint file without unpickling arbitrary objects."""
    path = Path(path)
    kind = path_kind(path)
    if kind == "dir":
        raise Natv2Error(
            f"OFA checkpoint {shown(str(path))} is a directory; pass the checkpoint file, e.g. "
            f"{shown(str(path / ofa_checkpoint_name(1.0)))}"
        )
    if kind != "file":
        raise Natv2Error(
            f"OFA checkpoint {shown(str(path))} does not exist; download "
            f"{ofa_checkpoint_name(1.0)} or {ofa_checkpoint_name(1.2)} from the OFA release and "
            "pass its path"
        )
    with file_errors(path, "read the OFA checkpoint"), path.open("rb") as f:
        magic = f.read(4)
    # A torch file is a zip archive (torch >= 1.6) or a legacy pickle (protocol 2+).
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
        raise Natv2Error(
            f"{path}: not a torch file (neither a zip archive nor a pickle); pass the state "
            f"dict file OFA ships, e.g. {ofa_checkpoint_name(1.0)}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Natv2Error(
            f"{path}: not a readable OFA checkpoint ({torch_load_failure(exc)}); natv2 loads "
            "checkpoints with torch.load(weights_only=True) and never unpickles other objects: "
            "pass the state dict file OFA ships (or re-save one with "
            "torch.save(model.state_dict(), path))"
        ) from None
    return obj


def import_ofa_checkpoint_file(
    path: str | Path, width: float, num_classes: int | None = None, seed: int = 0
) -> OFAImport:
    return import_ofa(load_ofa_checkpoint(path), width, num_classes, seed, source=str(path))


def import_ofa_checkpoint(
    path: str | Path, width: float, num_classes: int | None = None, seed: int = 0
) -> OFAv2Supernet:
    """A baseline-encoding natv2 supernet holding the weights of an OFA checkpoint file."""
    return import_ofa_checkpoint_file(path, width, num_classes, seed).net
