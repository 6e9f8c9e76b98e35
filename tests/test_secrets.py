"""One redaction function hides the PostgreSQL password in every form libpq takes, and storage secrets."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from fastclv.config import Settings
from fastclv.secrets import redact

PASSWORD = "Le/ak#?6x@y"


@pytest.mark.parametrize(
    "pg_uri",
    [
        f"postgresql://app:{PASSWORD}@db:5432/crm",  # unencoded, as users type it
        f"postgresql://app:{quote(PASSWORD, safe='')}@db:5432/crm?sslmode=require",
        f"postgresql://app@db/crm?password={quote(PASSWORD, safe='')}&sslmode=require",
        f"host=db user=app password='{PASSWORD}' dbname=crm",
        f"host=db user=app password={PASSWORD} dbname=crm",
    ],
)
def test_the_password_is_hidden_in_every_form_libpq_takes(pg_uri: str) -> None:
    settings = Settings(input="in", staging="s", pg_uri=pg_uri)
    echoed = f"connecting with {pg_uri} failed: password {PASSWORD} / {quote(PASSWORD, safe='')}"
    for shown in (redact(echoed, settings), redact(echoed, pg_uri=pg_uri), repr(settings)):
        for piece in ("Le/ak", "6x@y", quote(PASSWORD, safe="")):
            assert piece not in shown
    assert "db" in redact(echoed, settings)  # the server is still named


def test_a_uri_alone_loses_its_password_without_knowing_it() -> None:
    assert redact(f"postgresql://app:{PASSWORD}@db/crm") == "postgresql://app:***@db/crm"
    assert redact("see s3://AKID:wJalr@bucket/in/ and x") == "see s3://AKID:***@bucket/in/ and x"
    assert redact("host=db password='a b' user=app") == "host=db password=*** user=app"


def test_storage_secrets_are_hidden_given_or_from_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-environment")
    settings = Settings(
        input="s3://b/in/", staging="s", storage_options={"aws_secret_access_key": "given-secret-1"}
    )
    text = redact("signed with given-secret-1 and from-the-environment, key id AKID", settings)
    assert text == "signed with *** and ***, key id AKID"
    assert redact("x given-secret-1 y", storage_options={"azure_storage_sas_token": "given-secret-1"}) == (
        "x *** y"
    )
