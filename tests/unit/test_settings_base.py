"""`EnvSettings` (livedub/settings.py) and the `Record` helpers it leans on (livedub/typed.py):
the parts the STS, media-server and orchestrator settings need beyond plain fields."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec
import pytest
from msgspec.structs import force_setattr

from livedub.settings import EnvSettings
from livedub.settings_cli import markdown_table
from livedub.typed import Meta, Secret, ValidationError, describe, field_error, fields_of


class Sample(EnvSettings, frozen=True):  # type: ignore[misc]
    env_prefix: ClassVar[str] = "SAMPLE_"

    port: Annotated[int, Meta(ge=0, le=65535, description="a port")] = 80
    limit: Annotated[int, Meta(ge=1, description="a bound, or none")] | None = None
    token: Annotated[Secret, Meta(description="a secret, or none")] | None = None
    table: Annotated[dict[str, str], Meta(description="JSON")] = msgspec.field(
        default_factory=lambda: {"a": "b"}
    )
    url: str = "http://x"

    def check(self) -> None:
        url = self.url.strip().rstrip("/")
        if "://" not in url:
            raise field_error("url", "must be a URL")
        force_setattr(self, "url", url)  # frozen: normalised once, while it is made


def test_an_optional_field_keeps_its_description() -> None:
    docs = {f.name: f.description for f in fields_of(Sample)}
    assert docs == {
        "port": "a port",
        "limit": "a bound, or none",
        "token": "a secret, or none",
        "table": "JSON",
        "url": "",
    }
    assert "| `SAMPLE_TOKEN` | `--token` | unset | a secret, or none |" in markdown_table(Sample)


def test_a_check_error_names_its_field_however_the_record_is_made() -> None:
    for make in (
        lambda: Sample(url="nope"),
        lambda: Sample.parse({"url": "nope"}),
        lambda: Sample.load(environ={"SAMPLE_URL": "nope"}),
    ):
        with pytest.raises(ValidationError) as refused:
            make()
        assert describe(refused.value) == ("url", "must be a URL")
    assert Sample(url=" http://y/ ").url == "http://y"
    assert Sample.load(environ={"SAMPLE_URL": "http://z/"}).url == "http://z"


def test_a_frozen_settings_record_refuses_assignment() -> None:
    s = Sample()
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]
    assert s.replace(port=81).port == 81
    with pytest.raises(ValidationError):
        s.replace(port=-1)


def test_json_fields_from_env_and_from_a_flag() -> None:
    assert Sample.load(environ={"SAMPLE_TABLE": '{"x": "y"}'}).table == {"x": "y"}
    assert Sample.load({"table": '{"f": "g"}'}, environ={"SAMPLE_TABLE": "{}"}).table == {"f": "g"}
    assert Sample.load({"table": {"d": "e"}}).table == {"d": "e"}  # already a dict: as it is
    # an empty value is the default (compose's `${X:-}`), from the env or a flag
    assert Sample.load(environ={"SAMPLE_TABLE": " "}).table == {"a": "b"}
    assert Sample.load({"table": ""}).table == {"a": "b"}
    for given, environ in (({}, {"SAMPLE_TABLE": "{oops"}), ({"table": "[1"}, {})):
        with pytest.raises(ValidationError) as refused:
            Sample.load(given, environ=environ)
        loc, reason = describe(refused.value)
        assert loc == "table" and reason.startswith("not valid JSON")
    with pytest.raises(ValidationError):
        Sample.load(environ={"SAMPLE_TABLE": "[1]"})  # JSON, not an object


def test_empty_optional_values_are_unset_and_secrets_stay_hidden() -> None:
    s = Sample.load(environ={"SAMPLE_LIMIT": "", "SAMPLE_TOKEN": "", "SAMPLE_PORT": "81"})
    assert (s.limit, s.token, s.port) == (None, None, 81)
    s = Sample.load(environ={"SAMPLE_TOKEN": "t0ken"})
    assert s.token == Secret("t0ken") and "t0ken" not in repr(s)
    assert s.to_builtins()["token"] == "**********"
