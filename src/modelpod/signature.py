"""Model signatures: named input and output tensors with a dtype and a per-item shape.

Shapes exclude the batch dimension: a digits image is `shape: [8, 8, 1]`, a sentence is `shape: []`.
`-1` marks a dimension of any size. The Open Inference Protocol reports shapes with the batch
dimension in front (`[-1, 8, 8, 1]`); `v2_shape()` does that conversion.
"""

from __future__ import annotations

import difflib
from itertools import chain
from typing import Any, Literal, NoReturn

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelpod.errors import InputError

DType = Literal[
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "string",
]

# modelpod dtype -> (numpy dtype, Open Inference Protocol v2 datatype)
_DTYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "bool": (np.dtype(np.bool_), "BOOL"),
    "int8": (np.dtype(np.int8), "INT8"),
    "int16": (np.dtype(np.int16), "INT16"),
    "int32": (np.dtype(np.int32), "INT32"),
    "int64": (np.dtype(np.int64), "INT64"),
    "uint8": (np.dtype(np.uint8), "UINT8"),
    "uint16": (np.dtype(np.uint16), "UINT16"),
    "uint32": (np.dtype(np.uint32), "UINT32"),
    "uint64": (np.dtype(np.uint64), "UINT64"),
    "float16": (np.dtype(np.float16), "FP16"),
    "float32": (np.dtype(np.float32), "FP32"),
    "float64": (np.dtype(np.float64), "FP64"),
    "string": (np.dtype(object), "BYTES"),
}
DTYPE_NAMES: tuple[str, ...] = tuple(_DTYPES)
# Spellings from other frameworks, suggested in errors rather than accepted silently
_DTYPE_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "int": "int64",
    "long": "int64",
    "str": "string",
    "bytes": "string",
    "text": "string",
    "fp32": "float32",
    "fp16": "float16",
}
_V2_TO_DTYPE = {v2: name for name, (_, v2) in _DTYPES.items()}


def numpy_dtype(dtype: str) -> np.dtype[Any]:
    return _DTYPES[dtype][0]


def v2_datatype(dtype: str) -> str:
    return _DTYPES[dtype][1]


def dtype_from_v2(datatype: str) -> str | None:
    """modelpod dtype for an Open Inference Protocol datatype, or None if unknown."""
    return _V2_TO_DTYPE.get(datatype.upper())


def dtype_from_numpy(dtype: np.dtype[Any]) -> str:
    """modelpod dtype of a numpy dtype; strings and objects map to "string"."""
    if dtype.kind in "OUS":
        return "string"
    for name, (np_dtype, _) in _DTYPES.items():
        if np_dtype == dtype:
            return name
    raise ValueError(f"numpy dtype {dtype} has no modelpod equivalent")


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The closest of `choices` to a mistyped `word`, for "did you mean" hints."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


class TensorSpec(BaseModel):
    """One named tensor of a signature."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Tensor name, as the model and requests use it.")
    dtype: str = Field(description="Element type: " + ", ".join(DTYPE_NAMES) + ".")
    shape: tuple[int, ...] = Field(
        default=(), description="Per-item shape without the batch dimension; -1 is a dimension of any size."
    )
    description: str | None = Field(default=None, description="What the tensor holds, for people.")

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value in _DTYPES:
            return value
        lowered = value.lower()
        if lowered in _DTYPES:
            return lowered
        close = _DTYPE_ALIASES.get(lowered) or suggest(lowered, DTYPE_NAMES)
        hint = f"did you mean {close!r}? " if close else ""
        raise ValueError(f"unknown dtype {value!r}; {hint}use one of {', '.join(DTYPE_NAMES)}")

    @field_validator("shape")
    @classmethod
    def _valid_dims(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for dim in value:
            if dim == 0 or dim < -1:
                raise ValueError(
                    f"dimension {dim} in shape {list(value)}: use a positive size or -1 for any size"
                )
        return value

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        """The numpy dtype arrays of this tensor have (strings: `object`)."""
        return numpy_dtype(self.dtype)

    def v2_shape(self) -> list[int]:
        """The shape with the batch dimension in front, as the Open Inference Protocol's metadata gives it."""
        return [-1, *self.shape]

    def describe(self) -> str:
        """Short form for messages, e.g. `float32[8, 8, 1]` (`?` for a dimension of any size)."""
        dims = ", ".join("?" if d == -1 else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"

    def coerce(self, value: Any, *, batched: bool) -> np.ndarray:
        """Turn a request value (JSON lists or an array) into an array of this tensor's dtype and shape.

        With `batched=True` the value carries a leading batch dimension. Raises InputError naming
        this tensor, what was expected and what came.
        """
        array = _as_array(self, value)
        item_shape = array.shape[1:] if batched and array.ndim else array.shape
        if (batched and not array.ndim) or (
            item_shape != self.shape and not _shape_matches(self.shape, item_shape)
        ):
            what = "a batch of " if batched else ""
            raise InputError(
                self.name,
                "wrong shape",
                expected=f"{what}{self.describe()}",
                got=f"shape {list(array.shape)}",
            )
        return array


def _shape_matches(expected: tuple[int, ...], got: tuple[int, ...]) -> bool:
    return len(expected) == len(got) and all(e in (-1, g) for e, g in zip(expected, got, strict=True))


def _as_array(spec: TensorSpec, value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        return array_from_json(spec.name, value, spec.dtype)
    target = spec.numpy_dtype
    if spec.dtype == "string":
        return _strings(spec.name, value)
    array = value
    if array.dtype.kind in "OUSV":
        raise InputError(
            spec.name, "wrong dtype", expected=f"{spec.dtype} numbers", got=_describe_kind(array)
        )
    if array.dtype == target:
        return array
    if not np.can_cast(array.dtype, target, casting="same_kind") and not (
        array.dtype.kind in "iub" and target.kind in "iuf"
    ):
        raise InputError(spec.name, "wrong dtype", expected=spec.dtype, got=_describe_kind(array))
    if target.kind == "f" and array.dtype.kind == "f" and target.itemsize < array.dtype.itemsize:
        with np.errstate(over="ignore"):
            narrowed = array.astype(target)
        if (np.isinf(narrowed) & np.isfinite(array)).any():  # 1e300 as float64 is no float32
            raise InputError(spec.name, "value out of range", expected=_range(spec.dtype))
        return narrowed
    return array.astype(target)


# what a JSON value of each Python type is called in an error
_JSON_KINDS = {
    bool: "booleans",
    int: "integers",
    float: "floating-point numbers",
    str: "strings",
    type(None): "null",
    dict: "objects",
    list: "ragged nested lists",
}


def array_from_json(name: str, value: Any, dtype: str) -> np.ndarray:
    """A JSON value (a number, boolean or string, or nested lists of them) as an array of `dtype`.

    Strict where a silent conversion would change the answer: numbers only for numeric dtypes (no
    strings such as "nan", no booleans), integers only for integer dtypes, booleans only for bool, and
    every value within the dtype's range (1e308 is no float32). Raises InputError naming the input.

    The nested lists are flattened level by level with C-speed builtins, and each leaf's type is
    looked at once: about 10 µs for a digits image (8x8x1), less than numpy's own shape discovery."""
    if dtype == "string":
        return _strings(name, np.asarray(value, dtype=object))
    target = numpy_dtype(dtype)
    leaves, shape = _flatten(name, value)
    kinds = set(map(type, leaves))
    allowed = _ALLOWED_KINDS[target.kind]
    if not kinds <= allowed:
        if list in kinds:
            raise InputError(name, "ragged nested lists", expected="lists of equal length at each level")
        wrong = sorted(_JSON_KINDS.get(kind, kind.__name__) for kind in kinds - allowed)
        expected = "booleans" if target.kind == "b" else f"{dtype} numbers"
        raise InputError(name, "wrong dtype", expected=expected, got=" and ".join(wrong))
    try:
        if dtype in _FLOAT_MAX and leaves:  # beyond the range, the cast would make inf (with a warning)
            limit = _FLOAT_MAX[dtype]
            if max(leaves) > limit or min(leaves) < -limit:  # exact, also for Python ints of any size
                raise OverflowError
        return np.asarray(leaves, dtype=target).reshape(shape)
    except OverflowError:  # beyond the dtype, or an integer beyond float64
        raise InputError(name, "value out of range", expected=_range(dtype), got=_extreme(leaves)) from None


# the Python types orjson gives that each kind of dtype accepts
_ALLOWED_KINDS: dict[str, frozenset[type]] = {
    "b": frozenset({bool}),
    "i": frozenset({int}),
    "u": frozenset({int}),
    "f": frozenset({int, float}),
}


_FLOAT_MAX = {name: float(np.finfo(numpy_dtype(name)).max) for name in ("float16", "float32")}


def _range(dtype: str) -> str:
    if numpy_dtype(dtype).kind == "f":
        return f"finite {dtype} numbers within ±{float(np.finfo(numpy_dtype(dtype)).max):.4g}"
    info = np.iinfo(numpy_dtype(dtype))
    return f"{dtype} numbers in [{info.min}, {info.max}]"


def _extreme(leaves: list[Any]) -> str:
    low, high = min(leaves), max(leaves)
    value = low if abs(low) > abs(high) else high
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} digits)"


def _flatten(name: str, value: Any) -> tuple[list[Any], tuple[int, ...]]:
    """The leaves of rectangular nested lists, and their shape; a scalar is one leaf of shape ().

    A string or an object where a list belongs is flattened into its characters or keys, which the
    caller's look at the leaves' types then refuses."""
    if type(value) is not list:
        return [value], ()
    shape = [len(value)]
    items: list[Any] = value
    while items and type(items[0]) is list:
        try:
            widths = set(map(len, items))
        except TypeError:  # a number beside lists
            widths = set()
        if len(widths) != 1:
            raise InputError(name, "ragged nested lists", expected="lists of equal length at each level")
        shape.append(widths.pop())
        items = list(chain.from_iterable(items))
    return items, tuple(shape)  # a list among the leaves is found by the caller's look at their types


def _strings(name: str, array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    for i, item in enumerate(flat):
        if isinstance(item, bytes):
            flat[i] = item.decode("utf-8", errors="replace")
        elif not isinstance(item, str):
            raise InputError(name, "wrong dtype", expected="strings", got=_describe_kind(array))
    return array


def _describe_kind(array: np.ndarray) -> str:
    kinds = {"f": "floating-point numbers", "i": "integers", "u": "integers", "b": "booleans", "c": "complex"}
    if array.dtype.kind == "O":  # Python objects: name what they are, e.g. null for None
        found = {type(item) for item in array.reshape(-1)[:1000]} - {str, bytes}
        return " and ".join(sorted(_JSON_KINDS.get(kind, kind.__name__) for kind in found)) or "strings"
    return kinds.get(array.dtype.kind, "strings")


class Signature(BaseModel):
    """The named inputs and outputs of a model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: tuple[TensorSpec, ...] = Field(min_length=1, description="The tensors one request item holds.")
    outputs: tuple[TensorSpec, ...] = Field(
        min_length=1, description="The tensors the model answers per item."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Signature:
        for side, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            names = [t.name for t in tensors]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{side} names must be unique; repeated: {', '.join(dupes)}")
        return self

    def _refuse_names(self, values: dict[str, Any]) -> NoReturn:
        """The InputError for values that are not exactly the inputs: an unknown name, else a missing one."""
        expected = [t.name for t in self.inputs]
        unknown = [name for name in values if name not in expected]
        if unknown:
            raise InputError(unknown[0], "unknown input", expected=f"one of {expected}")
        missing = next(t for t in self.inputs if t.name not in values)
        raise InputError(missing.name, "missing input", expected=missing.describe())

    def input(self, name: str) -> TensorSpec:
        """The input called **name**; raises `KeyError` when there is none."""
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    def coerce_inputs(self, values: dict[str, Any], *, batched: bool) -> dict[str, np.ndarray]:
        """Check a request's inputs by name (none missing, none unknown) and coerce each one.

        **Parameters**

        * **values** `dict[str, Any]` - input name to value (JSON lists, numbers, strings or arrays).
        * **batched** `bool` - whether each value carries a leading batch dimension (`False`: one item).

        Returns input name to array of the declared dtype. Raises `InputError` naming the input, the
        expected dtype and shape, and what came.
        """
        inputs = self.inputs
        if len(values) != len(inputs) or not all(t.name in values for t in inputs):
            self._refuse_names(values)
        arrays = {tensor.name: tensor.coerce(values[tensor.name], batched=batched) for tensor in inputs}
        if batched and len(arrays) > 1:
            sizes = {len(a) for a in arrays.values()}
            if len(sizes) > 1:
                raise InputError(inputs[0].name, "inputs disagree on the batch size", got=str(sorted(sizes)))
        return arrays
