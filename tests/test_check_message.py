"""check_message over every message type of the protocol: a field that breaks a rule is refused
wherever it sits (at the top, inside a message, inside a repeated field or a map's value), with the
field named, and the same message with a good value passes.

check_message's common case is one pass over a plan made per message type; only a message that pass
doubts is walked again to name the field. These cases hold the first pass to the second: a bad
value it let through would reach the database (a NUL in text fails a whole batch's COPY).
"""

from __future__ import annotations

import math

import pytest
from google.protobuf import descriptor as d
from google.protobuf import message_factory

from balsam.inputs import FIELD_TEXT_LIMITS, MAX_FIELD_TEXT, MAX_SEQ, InputError, _refuse, check_message
from balsam.protos import argo_pb2, auth_pb2

MODULES = (argo_pb2, auth_pb2)
F = d.FieldDescriptor


def _message_types() -> list:
    out = []
    for module in MODULES:
        stack = list(module.DESCRIPTOR.message_types_by_name.values())
        while stack:
            desc = stack.pop()
            if not desc.GetOptions().map_entry:
                out.append(desc)
            stack.extend(desc.nested_types)
    return sorted(out, key=lambda desc: desc.full_name)


def _is_map(field) -> bool:
    return field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _repeated(field) -> bool:
    return bool(field.is_repeated) and not _is_map(field)


def _bad_and_good(field) -> list[tuple[str, object, object]]:
    """(what is wrong, a bad value, a good value of the same field) for a scalar field a rule covers."""
    if field.type == F.TYPE_STRING:
        limit = FIELD_TEXT_LIMITS.get(field.name, MAX_FIELD_TEXT)
        return [("a NUL", "a\0b", "ab"), ("too long", "x" * (limit + 1), "x" * limit)]
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return [("not finite", math.nan, 1.5), ("infinite", -math.inf, -1.5)]
    if field.type == F.TYPE_ENUM:
        known = set(field.enum_type.values_by_number)
        return [("an unknown enum value", max(known) + 1000, min(known))]
    if field.type == F.TYPE_UINT64:
        return [("above MAX_SEQ", MAX_SEQ + 1, MAX_SEQ)]
    return []


def _set(message, field, value) -> None:
    if _repeated(field):
        getattr(message, field.name).extend(["", value] if field.type == F.TYPE_STRING else [value])  # not only at index 0
    else:
        setattr(message, field.name, value)


def _cases():
    """(id, bad message, good message, the field path the refusal names) for each rule-covered
    field of each type, reached from each type that holds it (one level of nesting)."""
    cases = []
    for desc in _message_types():
        cls = message_factory.GetMessageClass(desc)
        for field in desc.fields:
            if _is_map(field):
                key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
                if key.type == F.TYPE_STRING:
                    bad, good = cls(), cls()
                    if value.type == F.TYPE_MESSAGE:
                        getattr(bad, field.name)["k\0"].SetInParent()
                        getattr(good, field.name)["k"].SetInParent()
                    else:
                        empty = "" if value.type == F.TYPE_STRING else 0
                        getattr(bad, field.name)["k\0"] = empty
                        getattr(good, field.name)["k"] = empty
                    cases.append((f"{desc.name}.{field.name}: a map key with a NUL", bad, good, field.name))
                if value.type == F.TYPE_STRING:
                    bad, good = cls(), cls()
                    getattr(bad, field.name)["k"] = "v\0"
                    getattr(good, field.name)["k"] = "v"
                    cases.append((f"{desc.name}.{field.name}['k']: a map value with a NUL", bad, good, f"{field.name}['k']"))
                if value.type == F.TYPE_MESSAGE:
                    for inner in value.message_type.fields:
                        for what, bad_value, good_value in _bad_and_good(inner):
                            bad, good = cls(), cls()
                            _set(getattr(bad, field.name)["k"], inner, bad_value)
                            _set(getattr(good, field.name)["k"], inner, good_value)
                            cases.append((f"{desc.name}.{field.name}['k'].{inner.name}: {what}", bad, good, f"{field.name}['k'].{inner.name}"))
            elif field.type == F.TYPE_MESSAGE:
                for inner in field.message_type.fields:
                    if _is_map(inner) or inner.type == F.TYPE_MESSAGE:
                        continue  # reached from the inner type's own cases
                    for what, bad_value, good_value in _bad_and_good(inner):
                        bad, good = cls(), cls()
                        if _repeated(field):
                            getattr(good, field.name).add()
                            getattr(bad, field.name).add()
                            _set(getattr(bad, field.name).add(), inner, bad_value)
                            _set(getattr(good, field.name).add(), inner, good_value)
                            path = f"{field.name}[1].{inner.name}"
                        else:
                            _set(getattr(bad, field.name), inner, bad_value)
                            _set(getattr(good, field.name), inner, good_value)
                            path = f"{field.name}.{inner.name}"
                        cases.append((f"{desc.name}.{path}: {what}", bad, good, path))
            else:
                for what, bad_value, good_value in _bad_and_good(field):
                    bad, good = cls(), cls()
                    _set(bad, field, bad_value)
                    _set(good, field, good_value)
                    cases.append((f"{desc.name}.{field.name}: {what}", bad, good, field.name))
    return cases


CASES = _cases()


def test_the_cases_cover_every_kind_of_rule_at_every_depth():
    ids = [case[0] for case in CASES]
    assert len(ids) > 150
    for kind in ("a NUL", "too long", "not finite", "an unknown enum value", "above MAX_SEQ", "a map key with a NUL"):
        assert any(kind in i for i in ids), kind
    assert any("[1]." in case[3] for case in CASES), "inside a repeated field"
    assert any("['k']." in case[3] for case in CASES), "inside a map's value"
    assert "SiteEnvelope.messages[1].seq: above MAX_SEQ" in ids


@pytest.mark.parametrize("name, bad, good, path", CASES, ids=[case[0] for case in CASES])
def test_a_bad_field_is_refused_naming_it_and_a_good_one_passes(name, bad, good, path):
    with pytest.raises(InputError) as refused:
        check_message(bad, "the request")
    assert str(refused.value).startswith("the request: ") and path in str(refused.value), str(refused.value)[:300]
    check_message(good, "the request")
    _refuse(good, "the request")  # the walk that names fields finds nothing either
