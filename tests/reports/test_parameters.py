"""Parameter typing matches papermill's CLI; the secret filter catches secret-looking names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from papermill.cli import _resolve_type

from snowkit.reports import RunUsageError, resolve_parameter
from snowkit.reports.runner import check_parameters, new_run_id


@given(st.one_of(st.text(max_size=12), st.integers().map(str), st.floats().map(str)))
def test_resolve_parameter_types_like_papermill(value: str) -> None:
    ours, theirs = resolve_parameter(value), _resolve_type(value)
    assert type(ours) is type(theirs)
    assert ours == theirs or (ours != ours and theirs != theirs)  # NaN


@pytest.mark.parametrize(
    "name",
    ["password", "SN_PASSWORD", "db_passwd", "api_key", "apikey", "oauth_token", "client_secret",
     "private_key", "authorization", "credentials", "pwd", "sn_pass"],
)  # fmt: skip
def test_secret_looking_names_are_refused(name: str) -> None:
    with pytest.raises(RunUsageError, match="credentials"):
        check_parameters({name: "x"})


@pytest.mark.parametrize("name", ["instance", "passes", "compass", "page_size", "sites", "days"])
def test_ordinary_names_pass(name: str) -> None:
    assert check_parameters({name: 1}) == {name: 1}


def test_values_must_be_json_like() -> None:
    assert check_parameters({"sites": ["a", {"b": [1, None]}]})
    with pytest.raises(RunUsageError, match="ISO 8601"):
        check_parameters({"when": object()})


def test_run_id_format() -> None:
    run_id = new_run_id()
    assert len(run_id) == 23 and run_id[8] == "T" and run_id[15:17] == "Z-"
    int(run_id[17:], 16)
