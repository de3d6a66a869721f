"""ArchSpec: a network as a flat, JSON-serialisable list of layers over a 1x28x28 input.

The spec is the contract between the search space (which emits specs), the builder,
the analytic parameter count, the analyser and the exporter. Field-level problems
(unknown op, non-positive width, bad post-op, a reference to a later layer) are caught
here when a spec is read; geometric problems (a kernel larger than its feature map, no
10-way output, shared weights of another shape) are caught by
:func:`mnist_search.models.analysis.analyse`, which needs the shapes.

A spec may come from a user's file (``train --spec``), so every size is bounded here and in
``analyse``: a spec that would exhaust memory, and any malformed JSON (deep nesting, numbers
too large for Python, booleans for integers), is one SpecError line, never a traceback.
"""

from __future__ import annotations

import json
import reprlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

from mnist_search.errors import SpecError
from mnist_search.levers import LEVER_CONV_FIELDS

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
# "bn": BatchNorm (batch statistics, running averages for evaluation); "in": InstanceNorm and
# "gn": GroupNorm over ``norm_groups`` groups, both affine and per sample (no running statistics).
NORM_OPS = ("bn", "in", "gn")
POST_OPS = ("relu", *NORM_OPS)

# Bounds on what a spec may declare: far above any network this project searches (a few
# thousand parameters, widths below 100, about 15 layers), far below what exhausts memory.
MAX_LAYERS = 64
MAX_WIDTH = 1024
# Kernel, dilation and padding are capped here so that no arithmetic on them blows up; that
# a kernel fits its (padded) feature map, and what padding costs, are checked by analyse.
MAX_KERNEL = 64
MAX_PAD = 32
MAX_SPEC_BYTES = 1_000_000  # a spec file; 64 layers of JSON take a few kilobytes
# Fields the levers added after specs were stored: written out only when they differ from the
# default, so every spec without them serialises exactly as before.
OPTIONAL_FIELDS = LEVER_CONV_FIELDS

_show = reprlib.Repr()
_show.maxlevel, _show.maxstring, _show.maxother, _show.maxlong = 2, 40, 40, 40


@dataclass(frozen=True)
class Conv:
    """A stride-1 convolution followed by ``post`` ops in order, then dropout if > 0.

    ``groups`` equal to the input channels (and ``out`` a multiple of it) makes a
    depthwise convolution; a following 1x1 conv makes it depthwise-separable.

    ``share``: the index of an earlier conv layer whose weights (and bias) this layer applies
    again, so one conv can run several times for the parameters of one. Only the conv is
    shared: this layer's own norm and dropout follow it. A norm per application is what
    makes the reuse work: each application sees activations of a different depth with
    their own statistics, and a norm's two parameters per channel cost little.
    ``norm_groups``: the group count of a "gn" post op (1: LayerNorm-like; ``out``: like "in").
    """

    out: int
    k: int = 3
    pad: int = 0
    bias: bool = False
    post: tuple[str, ...] = ("relu", "bn")
    dropout: float = 0.0
    dilation: int = 1
    groups: int = 1
    share: int | None = None
    norm_groups: int = 1
    op: ClassVar[str] = "conv"

    def __post_init__(self) -> None:
        if not isinstance(self.post, (list, tuple)):
            raise SpecError(f"conv 'post' must be a list of ops from {', '.join(POST_OPS)}, got {_show.repr(self.post)}")
        object.__setattr__(self, "post", tuple(self.post))
        _check_int("conv 'out'", self.out, minimum=1, maximum=MAX_WIDTH)
        _check_int("conv 'k'", self.k, minimum=1, maximum=MAX_KERNEL)
        _check_int("conv 'pad'", self.pad, minimum=0, maximum=MAX_PAD)
        _check_int("conv 'dilation'", self.dilation, minimum=1, maximum=MAX_PAD)
        _check_int("conv 'groups'", self.groups, minimum=1, maximum=MAX_WIDTH)
        _check_int("conv 'norm_groups'", self.norm_groups, minimum=1, maximum=MAX_WIDTH)
        if self.share is not None:
            _check_int("conv 'share'", self.share, minimum=0, maximum=MAX_LAYERS - 1)
        if not isinstance(self.bias, bool):
            raise SpecError(f"conv 'bias' must be true or false, got {_show.repr(self.bias)}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"conv 'dropout' must be a number in [0, 1), got {_show.repr(self.dropout)}")
        for op in self.post:
            if not isinstance(op, str) or op not in POST_OPS:
                raise SpecError(f"unknown post op {_show.repr(op)} in conv; allowed: {', '.join(POST_OPS)}")
        if len(set(self.post)) != len(self.post):
            raise SpecError(f"conv 'post' repeats an op: {list(self.post)}")
        if len(self.norms) > 1:
            raise SpecError(f"conv 'post' has more than one norm ({', '.join(self.norms)}); keep one")
        if self.out % self.groups:
            raise SpecError(f"conv 'out' ({self.out}) must be a multiple of 'groups' ({self.groups})")
        if self.norm_groups != 1 and "gn" not in self.post:
            raise SpecError(f"conv 'norm_groups' ({self.norm_groups}) is only used by a \"gn\" post op; drop it or add \"gn\"")
        if self.out % self.norm_groups:
            raise SpecError(f"conv 'out' ({self.out}) must be a multiple of 'norm_groups' ({self.norm_groups})")

    @property
    def norms(self) -> tuple[str, ...]:
        return tuple(op for op in self.post if op in NORM_OPS)

    @property
    def norm(self) -> str | None:
        """The conv's norm op ("bn", "in" or "gn"), or None."""
        return self.norms[0] if self.norms else None


@dataclass(frozen=True)
class MaxPool:
    """Max-pooling with kernel and stride ``k``."""

    k: int = 2
    op: ClassVar[str] = "maxpool"

    def __post_init__(self) -> None:
        _check_int("maxpool 'k'", self.k, minimum=2, maximum=MAX_KERNEL)


@dataclass(frozen=True)
class GAP:
    """Global average pooling: C x H x W -> C x 1 x 1."""

    op: ClassVar[str] = "gap"


Layer = Union[Conv, MaxPool, GAP]
LAYER_TYPES: dict[str, type] = {cls.op: cls for cls in (Conv, MaxPool, GAP)}


@dataclass(frozen=True)
class ArchSpec:
    """An ordered list of layers; the network's output must be 10 x 1 x 1."""

    layers: tuple[Layer, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise SpecError("the spec has no layers; give at least one conv producing 10 channels")
        if len(self.layers) > MAX_LAYERS:
            raise SpecError(f"the spec has {len(self.layers)} layers; at most {MAX_LAYERS} are allowed")
        for index, layer in enumerate(self.layers):
            if isinstance(layer, Conv) and layer.share is not None:
                _check_share(index, layer.share, self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [{"op": layer.op, **_layer_fields(layer)} for layer in self.layers]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> ArchSpec:
        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            raise SpecError('a spec must be a JSON object with a "layers" list')
        if len(data["layers"]) > MAX_LAYERS:
            raise SpecError(f"the spec has {len(data['layers'])} layers; at most {MAX_LAYERS} are allowed")
        return cls(tuple(_layer_from_dict(i, item) for i, item in enumerate(data["layers"])))

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        if len(text) > MAX_SPEC_BYTES:
            raise SpecError(f"the spec is {len(text):,} characters long; at most {MAX_SPEC_BYTES:,} are allowed")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"the spec is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except RecursionError:
            raise SpecError("the spec's JSON is nested too deeply") from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise SpecError(f"the spec's JSON holds a value Python cannot read ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | Path) -> ArchSpec:
        try:
            # A bounded read: the size a file reports says nothing for a pipe or /dev/zero.
            with open(path, encoding="utf-8") as file:
                text = file.read(MAX_SPEC_BYTES + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read spec file {path}: {exc.strerror or exc}") from None
        try:
            return cls.from_json(text)
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}") from None


def _layer_fields(layer: Layer) -> dict[str, Any]:
    fields = asdict(layer)
    if "post" in fields:
        fields["post"] = list(fields["post"])
    return {k: v for k, v in fields.items() if k not in OPTIONAL_FIELDS or v != OPTIONAL_FIELDS[k]}


def _check_share(index: int, share: int, layers: tuple[Layer, ...]) -> None:
    """A layer shares the weights of an EARLIER conv that owns its weights (no chains)."""
    if share >= index:
        raise SpecError(f"layer {index}: 'share' must name an earlier layer, got {share}")
    owner = layers[share]
    if not isinstance(owner, Conv):
        raise SpecError(f"layer {index}: 'share' names layer {share}, which is a {owner.op}, not a conv")
    if owner.share is not None:
        raise SpecError(f"layer {index}: 'share' names layer {share}, which itself shares layer {owner.share}; "
                        f"name layer {owner.share}")


def _layer_from_dict(index: int, item: Any) -> Layer:
    if not isinstance(item, dict) or "op" not in item:
        raise SpecError(f"layer {index}: each layer must be an object with an \"op\" field")
    kwargs = dict(item)
    op = kwargs.pop("op")
    layer_type = LAYER_TYPES.get(op) if isinstance(op, str) else None
    if layer_type is None:
        raise SpecError(f"layer {index}: unknown op {_show.repr(op)}; allowed: {', '.join(LAYER_TYPES)}")
    try:
        return layer_type(**kwargs)
    except TypeError as exc:
        raise SpecError(f"layer {index} ({op}): {_explain_type_error(exc)}") from None
    except SpecError as exc:
        raise SpecError(f"layer {index}: {exc}") from None


def _explain_type_error(exc: TypeError) -> str:
    message = str(exc)
    if "unexpected keyword argument" in message:
        name = message.split("'")[-2]
        return f"unknown field {name!r}"
    if "missing" in message and "required" in message:
        return "missing required field " + message.split(":")[-1].strip()
    return message


def _check_int(name: str, value: Any, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise SpecError(f"{name} must be an integer from {minimum} to {maximum}, got {_show.repr(value)}")
