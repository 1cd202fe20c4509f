"""Property: whatever rows come in, validation never crashes and every row is accounted for."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specialize.data.validate import check_file

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
role = st.sampled_from(["user", "assistant", "system", "bot", "", None, 3])
content = st.one_of(
    st.text(max_size=30), st.none(), st.integers(), st.lists(json_values, max_size=3)
)
message = st.fixed_dictionaries(
    {"role": role, "content": content},
    optional={"weight": json_values, "image": st.text(max_size=5)},
)
row_like = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(message, max_size=5) | json_values}),
    st.fixed_dictionaries({"prompt": json_values, "chosen": json_values, "rejected": json_values}),
    st.fixed_dictionaries(
        {"instruction": json_values}, optional={"input": json_values, "output": json_values}
    ),
    st.fixed_dictionaries({"text": json_values}),
    json_values,
)
line = st.one_of(
    row_like.map(json.dumps), st.binary(max_size=30).map(lambda b: b.decode("latin-1"))
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(line, min_size=1, max_size=12))
def test_validator_never_crashes_and_accounts_for_every_row(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(
        b"".join(text.replace("\n", " ").encode("utf-8", "surrogatepass") + b"\n" for text in lines)
    )
    # Blank lines carry no row; "blank" is judged on bytes (ASCII whitespace), as the reader does.
    expected = sum(
        1 for text in lines if text.replace("\n", " ").encode("utf-8", "surrogatepass").strip()
    )
    checked = list(check_file(path))
    assert len(checked) == expected
    for item in checked:
        assert (item.row is None) == bool(item.errors)
        assert all(d.where.startswith(str(path)) for d in item.defects)
