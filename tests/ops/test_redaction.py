"""Redaction: secrets masked by key and by registered value, everywhere in nested data."""

from __future__ import annotations

import base64
import threading

from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from snowkit.ops.redaction import MASK, SecretRegistry, is_secret_key, redact, secrets


def test_masks_values_under_secret_keys_case_insensitively() -> None:
    data = {
        "Password": "p",
        "headers": {"Authorization": "Bearer x", "X-SN-APIKEY": "k", "Accept": "json"},
        "items": [{"client-secret": "s", "name": "ok"}],
        "refresh_token": "r",
        "Set-Cookie": "c",
    }
    out = redact(data)
    assert out == {
        "Password": MASK,
        "headers": {"Authorization": MASK, "X-SN-APIKEY": MASK, "Accept": "json"},
        "items": [{"client-secret": MASK, "name": "ok"}],
        "refresh_token": MASK,
        "Set-Cookie": MASK,
    }
    assert data["Password"] == "p"  # the input is not modified


def test_none_under_secret_key_stays_none() -> None:
    assert redact({"password": None}) == {"password": None}


def test_registered_values_are_masked_inside_any_string(clean_secrets: SecretRegistry) -> None:
    clean_secrets.register("s3cr3t-value")
    clean_secrets.register(SecretStr("other-secret"))
    out = redact(
        {"url": "https://x/api?token=s3cr3t-value&a=1", "msg": ("saw other-secret twice", 3)}
    )
    assert out == {"url": "https://x/api?token=***&a=1", "msg": ("saw *** twice", 3)}


def test_basic_auth_form_is_registered(clean_secrets: SecretRegistry) -> None:
    clean_secrets.register_basic("admin", "pa55word!")
    header = "Basic " + base64.b64encode(b"admin:pa55word!").decode()
    assert redact(f"sent {header}") == "sent Basic ***"
    assert redact("pw pa55word!") == "pw ***"


def test_secretstr_and_bytes(clean_secrets: SecretRegistry) -> None:
    clean_secrets.register("abcdefgh")
    assert redact([SecretStr("x"), b"key=abcdefgh"]) == [MASK, b"key=***"]


def test_short_values_are_not_registered(clean_secrets: SecretRegistry) -> None:
    clean_secrets.register("ab")
    assert len(clean_secrets) == 0
    assert redact("ab cd") == "ab cd"


def test_longest_secret_wins(clean_secrets: SecretRegistry) -> None:
    clean_secrets.register("abcd")
    clean_secrets.register("abcdefgh")
    assert redact("xabcdefghx") == "x***x"


def test_repr_never_shows_values(clean_secrets: SecretRegistry) -> None:
    clean_secrets.register("topsecret-1")
    assert "topsecret" not in repr(clean_secrets)


def test_is_secret_key() -> None:
    assert is_secret_key("API_KEY") and is_secret_key("x-sn-apikey") and is_secret_key("pwd")
    assert not is_secret_key("table") and not is_secret_key(3)


def test_registration_is_thread_safe(clean_secrets: SecretRegistry) -> None:
    values = [f"secret-{i:04d}" for i in range(200)]
    barrier = threading.Barrier(4)

    def register(chunk: list[str]) -> None:
        barrier.wait()
        for value in chunk:
            clean_secrets.register(value)
            redact({"m": value})

    threads = [threading.Thread(target=register, args=(values[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(clean_secrets) == 200
    assert all(redact(f"<{v}>") == "<***>" for v in values)


@given(
    secret=st.text(min_size=4, max_size=40).filter(lambda s: s.strip() == s and "*" not in s),
    prefix=st.text(max_size=30),
    suffix=st.text(max_size=30),
)
def test_registered_secret_never_survives(secret: str, prefix: str, suffix: str) -> None:
    registry = SecretRegistry()
    registry.register(secret)
    out = redact({"free": f"{prefix}{secret}{suffix}", "nested": [secret]}, registry)
    assert secret not in out["free"]
    assert out["nested"] == [MASK]


def test_module_registry_is_shared() -> None:
    from snowkit.ops import redaction

    assert redaction.secrets is secrets


def test_keys_that_contain_a_secret_word_are_masked_but_references_are_not() -> None:
    """Only exact names (``password``) had counted: ``db_password`` went out in clear."""
    data = {"db_password": "p", "X-Api-Key": "k", "wifi_passphrase": "w", "csrf_token": "t",
            "password_ref": "op://vault/item/password", "name": "ok"}  # fmt: skip
    assert redact(data) == {
        "db_password": MASK, "X-Api-Key": MASK, "wifi_passphrase": MASK, "csrf_token": MASK,
        "password_ref": "op://vault/item/password", "name": "ok",
    }  # fmt: skip


def test_an_object_whose_text_holds_a_secret_is_masked(clean_secrets: SecretRegistry) -> None:
    """A log field holding an exception or a path was written with ``str()``, unmasked."""
    clean_secrets.register("s3cr3t-token-abcdef")
    failure = RuntimeError("401 for token s3cr3t-token-abcdef")
    assert redact({"error": failure}) == {"error": "401 for token ***"}
    harmless = RuntimeError("nothing secret")
    assert redact({"error": harmless})["error"] is harmless


@given(
    secret=st.text(min_size=4, max_size=40).filter(
        lambda s: s.strip() == s and "*" not in s and not is_secret_key(s)  # a name masks all
    ),
    prefix=st.text(max_size=10),
    others=st.lists(st.text(max_size=12), max_size=4),
)
def test_a_secret_used_as_a_dict_key_is_masked_and_no_value_is_lost(
    secret: str, prefix: str, others: list[str]
) -> None:
    """A token used as a key (a cache keyed by credential) had gone out in clear."""
    registry = SecretRegistry()
    registry.register(secret)
    data = {f"{prefix}{secret}": 1, MASK: 2, **{o: 3 for o in others}}
    out = redact({"outer": data, secret: data}, registry)
    assert len(out) == 2 and all(secret not in key for key in out)
    for masked in out.values():
        assert all(secret not in key for key in masked)
        assert len(masked) == len(data)  # two keys that mask alike both stay


def test_a_secret_key_reaches_no_log_line(clean_secrets: SecretRegistry, tmp_path) -> None:
    from snowkit.ops.logging import configure_logging, get_logger

    clean_secrets.register("tok-9f8e7d6c5b4a")
    log = tmp_path / "log.jsonl"
    configure_logging(file_path=log, console=False)
    try:
        get_logger("t").info("cache", sessions={"tok-9f8e7d6c5b4a": "alive"})
    finally:
        configure_logging()
    text = log.read_text()
    assert "tok-9f8e7d6c5b4a" not in text and '{"***":"alive"}' in text
