"""ArchSpec: a network as a flat, JSON-serialisable list of layers over a 1x28x28 input.

The spec is the contract between the search space (which emits specs), the builder,
the analytic parameter count, the analyser and the exporter. Field-level problems
(unknown op, non-positive width, bad post-op) are caught here when a spec is read;
geometric problems (a kernel larger than its feature map, no 10-way output) are caught
by :func:`mnist_search.models.analysis.analyse`, which needs the shapes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

from mnist_search.errors import SpecError

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
POST_OPS = ("relu", "bn")


@dataclass(frozen=True)
class Conv:
    """A stride-1 convolution followed by ``post`` ops in order, then dropout if > 0.

    ``groups`` equal to the input channels (and ``out`` a multiple of it) makes a
    depthwise convolution; a following 1x1 conv makes it depthwise-separable.
    """

    out: int
    k: int = 3
    pad: int = 0
    bias: bool = False
    post: tuple[str, ...] = ("relu", "bn")
    dropout: float = 0.0
    dilation: int = 1
    groups: int = 1
    op: ClassVar[str] = "conv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "post", tuple(self.post))
        _check_int("conv 'out'", self.out, minimum=1)
        _check_int("conv 'k'", self.k, minimum=1)
        _check_int("conv 'pad'", self.pad, minimum=0)
        _check_int("conv 'dilation'", self.dilation, minimum=1)
        _check_int("conv 'groups'", self.groups, minimum=1)
        if not isinstance(self.bias, bool):
            raise SpecError(f"conv 'bias' must be true or false, got {self.bias!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"conv 'dropout' must be a number in [0, 1), got {self.dropout!r}")
        for op in self.post:
            if op not in POST_OPS:
                raise SpecError(f"unknown post op {op!r} in conv; allowed: {', '.join(POST_OPS)}")
        if len(set(self.post)) != len(self.post):
            raise SpecError(f"conv 'post' repeats an op: {list(self.post)}")
        if self.out % self.groups:
            raise SpecError(f"conv 'out' ({self.out}) must be a multiple of 'groups' ({self.groups})")


@dataclass(frozen=True)
class MaxPool:
    """Max-pooling with kernel and stride ``k``."""

    k: int = 2
    op: ClassVar[str] = "maxpool"

    def __post_init__(self) -> None:
        _check_int("maxpool 'k'", self.k, minimum=2)


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

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [{"op": layer.op, **_layer_fields(layer)} for layer in self.layers]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> ArchSpec:
        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            raise SpecError('a spec must be a JSON object with a "layers" list')
        return cls(tuple(_layer_from_dict(i, item) for i, item in enumerate(data["layers"])))

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"the spec is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | Path) -> ArchSpec:
        try:
            text = Path(path).read_text()
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
    return fields


def _layer_from_dict(index: int, item: Any) -> Layer:
    if not isinstance(item, dict) or "op" not in item:
        raise SpecError(f"layer {index}: each layer must be an object with an \"op\" field")
    kwargs = dict(item)
    op = kwargs.pop("op")
    layer_type = LAYER_TYPES.get(op)
    if layer_type is None:
        raise SpecError(f"layer {index}: unknown op {op!r}; allowed: {', '.join(LAYER_TYPES)}")
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


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{name} must be an integer >= {minimum}, got {value!r}")
