"""Hypothesis strategies for the request of every method of every service the
server serves, built from the protobuf descriptors themselves: the playlog.v1
file descriptors (every `*_pb2` module of the package, so a new service or
RPC is covered without touching this file), gRPC health and reflection.

A request is drawn field by field from its message descriptor, with the
values real deployments and attackers send: the ids and dates the test's
store holds (so requests get past the first checks), NUL and other control
characters, right-to-left marks, emoji, 20,000-character strings, the edges
of every integer type (0, -1, the 32/53/64-bit limits), enum numbers nobody
defined, nested messages a few levels deep and repeated fields long enough to
hit the limits. Then, on the wire, what no generated client can send: a
string field holding invalid UTF-8, truncated bodies, random bytes.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import strategies as st

import playlog.v1
from tests.builders import DAY, HOUR, T0, date_of

CH = "ch1"


@dataclasses.dataclass(frozen=True)
class Rpc:
    path: str  # /package.Service/Method
    request: Descriptor
    response: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _methods(file_descriptor: Any) -> list[Rpc]:
    found = []
    for service in file_descriptor.services_by_name.values():
        method: MethodDescriptor
        for method in service.methods:
            found.append(
                Rpc(
                    f"/{service.full_name}/{method.name}",
                    method.input_type,
                    method.output_type,
                    method.client_streaming,
                    method.server_streaming,
                )
            )
    return found


def every_rpc() -> list[Rpc]:
    """Every method the server serves, from the descriptors."""
    rpcs: list[Rpc] = []
    for module in sorted(m.name for m in pkgutil.iter_modules(playlog.v1.__path__)):
        if module.endswith("_pb2"):
            rpcs += _methods(importlib.import_module(f"playlog.v1.{module}").DESCRIPTOR)
    rpcs += _methods(health_pb2.DESCRIPTOR) + _methods(reflection_pb2.DESCRIPTOR)
    return rpcs


# -- values ----------------------------------------------------------------------------

KNOWN_STRINGS = [CH, "ch2", "d0", "d1", "d47", date_of(T0 + DAY), date_of(T0), "engine-1", "BREAKING_NEWS"]
HOSTILE_STRINGS = [
    "",
    "\x00",
    "ch1\x00",
    "\x00ch1",
    "ch1\n",
    " ch1",
    "\u202ech1",  # right-to-left override
    "é",
    "😀",
    "x" * 129,
    "x" * 20_000,
    "' OR '1'='1",
    "%s%n",
    "../../etc/passwd",
    "2026-13-45",
    "9999-12-31",
    "0000-00-00",
]
# The known values three times out of five: a request must get past the
# first checks to reach the rules and the store behind them.
strings = st.one_of(
    st.sampled_from(KNOWN_STRINGS),
    st.sampled_from(KNOWN_STRINGS),
    st.sampled_from(KNOWN_STRINGS),
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=24),
)

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_TIMES = [T0, T0 + DAY, T0 + DAY + 1, T0 - 1, T0 + 2 * DAY, 253_402_300_799_999, 253_402_300_800_000]
_RANGES = {
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [0, 1, -1, 2, 2**31 - 1, -(2**31), 2**32 - 1, 2**53, 2**63 - 1, -(2**63), 2**64 - 1]
    edges += _TIMES + [t - T0 for t in _TIMES if t > T0] + [3_600_000, 86_400_000]
    # Plausible values (instants on the hour around the test's days, whole
    # hours, small counts) as often as the edges and the whole range.
    plausible = (
        [T0 + k * HOUR for k in range(-24, 72)] + [k * HOUR for k in range(1, 25)] + list(range(0, 50))
    )
    return st.one_of(
        st.sampled_from([v for v in plausible if low <= v <= high]),
        st.sampled_from([v for v in plausible if low <= v <= high]),
        st.sampled_from(sorted({v for v in edges if low <= v <= high})),
        st.integers(low, high),
        st.integers(max(low, -1000), min(high, 1000)),
    )


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _RANGES:
        return _integers(*_RANGES[field.type])
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_STRING:
        return strings
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=32)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if field.type == FieldDescriptor.TYPE_ENUM:
        defined = [v.number for v in field.enum_type.values]
        # Proto3 enums are open: a number nobody defined arrives as it is.
        return st.one_of(st.sampled_from(defined), st.integers(*_INT32))
    raise AssertionError(f"no strategy for field {field.full_name} of type {field.type}")


def message_values(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """The fields of one message of this type (a subset, each drawn as above)."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            key, value = sub.fields_by_name["key"], sub.fields_by_name["value"]
            fields[field.name] = st.dictionaries(_scalar(key), _value(value, depth + 1), max_size=3)
            continue
        one = _value(field, depth)
        if field.is_repeated:
            # Mostly short; at the top, sometimes one item repeated hundreds or
            # thousands of times, to reach the size limits.
            fields[field.name] = (
                st.one_of(
                    st.lists(one, max_size=4),
                    st.tuples(one, st.sampled_from([200, 5_000])).map(lambda x: [x[0]] * x[1]),
                )
                if depth == 0
                else st.lists(one, max_size=3)
            )
        else:
            fields[field.name] = one
    scalars = {n: v for n, v in fields.items() if _is_single_scalar(descriptor.fields_by_name[n])}
    rest = {n: v for n, v in fields.items() if n not in scalars}
    # Either every single scalar set (as a well-meaning client does) or any
    # subset of the fields.
    return st.one_of(
        st.fixed_dictionaries(scalars, optional=rest),
        st.fixed_dictionaries({}, optional=fields),
    )


def _is_single_scalar(field: FieldDescriptor) -> bool:
    return field.message_type is None and not field.is_repeated and field.containing_oneof is None


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    sub = field.message_type
    if sub is None:
        return _scalar(field)
    if depth >= 3:
        return st.just({})
    return message_values(sub, depth + 1)


def _build(descriptor: Descriptor, values: dict[str, Any]) -> Any:
    cls = message_factory.GetMessageClass(descriptor)
    message = cls()
    _fill(message, values)
    return message


def _fill(message: Any, values: dict[str, Any]) -> None:
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            target = getattr(message, name)
            for k, v in value.items():
                if sub.fields_by_name["value"].message_type is not None:
                    _fill(target[k], v)
                else:
                    target[k] = v
        elif field.is_repeated:
            if sub is not None:
                for item in value:
                    _fill(getattr(message, name).add(), item)
            else:
                getattr(message, name).extend(value)
        elif sub is not None:
            _fill(getattr(message, name), value)  # also sets a oneof member
        else:
            setattr(message, name, value)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _invalid_utf8(number: int, body: bytes) -> bytes:
    """The body with one more occurrence of a string field, holding bytes that
    are not UTF-8 (a later occurrence of a field wins when it is parsed)."""
    bad = b"\xc3\x28\xff"
    return body + _varint(number << 3 | 2) + _varint(len(bad)) + bad


def _scalar_paths(message: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where a seed holds a single scalar: (field name | index, ...) paths;
    of a long repeated field, its first and last items only."""
    paths: list[tuple[Any, ...]] = []
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue
        if field.is_repeated:
            indexes = sorted({0, len(value) - 1})
            for i in indexes:
                if field.message_type is None:
                    paths.append((*prefix, field.name, i))
                else:
                    paths += _scalar_paths(value[i], (*prefix, field.name, i))
        elif field.message_type is not None:
            paths += _scalar_paths(value, (*prefix, field.name))
        else:
            paths.append((*prefix, field.name))
    return paths


def _mutated(seed: Any, path: tuple[Any, ...], value: Any) -> bytes:
    message = type(seed)()
    message.CopyFrom(seed)
    target, steps = message, list(path)
    while len(steps) > 1:
        step = steps.pop(0)
        target = target[step] if isinstance(step, int) else getattr(target, step)
    last = steps[0]
    if isinstance(last, int):
        target[last] = value
    else:
        setattr(target, last, value)
    return bytes(message.SerializeToString())


def _field_at(descriptor: Descriptor, path: tuple[Any, ...]) -> FieldDescriptor:
    field = None
    for step in path:
        if isinstance(step, int):
            continue
        field = descriptor.fields_by_name[step]
        descriptor = field.message_type
    assert field is not None
    return field


def mutations(seed: Any) -> st.SearchStrategy[bytes]:
    """A valid request with one of its scalars replaced by a drawn value: the
    requests that reach the rules past the edge's checks."""
    paths = _scalar_paths(seed)
    return st.sampled_from(paths).flatmap(
        lambda path: _scalar(_field_at(seed.DESCRIPTOR, path)).map(lambda value: _mutated(seed, path, value))
    )


def request_bodies(rpc: Rpc, seeds: list[Any] = ()) -> st.SearchStrategy[bytes]:  # type: ignore[assignment]
    """What a client may put on the wire for this method's request; `seeds`,
    valid requests of it, are sent as they are and mutated one field at a time."""
    messages = message_values(rpc.request).map(lambda values: _build(rpc.request, values).SerializeToString())
    if seeds:
        valid = st.sampled_from([bytes(seed.SerializeToString()) for seed in seeds])
        mutated = st.one_of(*[mutations(seed) for seed in seeds])
        messages = st.one_of(valid, mutated, mutated, messages)
    string_fields = [f.number for f in rpc.request.fields if f.type == FieldDescriptor.TYPE_STRING]
    wire = [st.binary(max_size=48), messages.map(lambda b: b[: max(0, len(b) - 1)] + b"\x80")]
    if string_fields:
        wire.append(
            st.tuples(st.sampled_from(string_fields), messages).map(lambda nb: _invalid_utf8(nb[0], nb[1]))
        )
    # Well-formed messages most of the time: they are what reach the rules.
    return st.one_of(messages, messages, messages, *wire)
