"""Settings: defaults, environment overrides, and a clear message for a malformed value."""

from __future__ import annotations

import pytest

from services import settings as settings_mod


def test_topic_namespace_is_appended(monkeypatch):
    monkeypatch.setenv("PARLEY_TOPIC_NAMESPACE", ".x")
    assert settings_mod.Settings().topic("chat_turns") == "parley.chat.turns.v1.x"


def test_malformed_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("PARLEY_TOPIC_PARTITIONS", "many")
    settings_mod.get_settings.cache_clear()
    with pytest.raises(SystemExit, match="PARLEY_TOPIC_PARTITIONS"):
        settings_mod.get_settings()
    settings_mod.get_settings.cache_clear()


WELL_KNOWN_TOKENS = ["parley-dev-admin-token", "REPLACE-WITH-A-LONG-RANDOM-TOKEN"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "search.parley.svc"])
@pytest.mark.parametrize("token", WELL_KNOWN_TOKENS)
def test_a_well_known_admin_token_stops_a_service_that_listens_beyond_loopback(monkeypatch, host, token):
    """The development default and the Secret example's placeholder are public: a service reachable
    from other machines (PARLEY_GRPC_BIND_HOST=0.0.0.0 in a pod) refuses to start with either."""
    monkeypatch.setenv("PARLEY_GRPC_BIND_HOST", host)
    monkeypatch.setenv("PARLEY_ADMIN_TOKEN", token)
    settings_mod.get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit, match="PARLEY_ADMIN_TOKEN") as info:
            settings_mod.get_settings()
        assert "PARLEY_GRPC_BIND_HOST" in str(info.value)
        if token == WELL_KNOWN_TOKENS[0]:       # the default, not set at all
            monkeypatch.delenv("PARLEY_ADMIN_TOKEN")
            settings_mod.get_settings.cache_clear()
            with pytest.raises(SystemExit, match="PARLEY_ADMIN_TOKEN"):
                settings_mod.get_settings()
    finally:
        settings_mod.get_settings.cache_clear()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_the_default_admin_token_serves_on_loopback(monkeypatch, host):
    monkeypatch.delenv("PARLEY_ADMIN_TOKEN", raising=False)
    assert settings_mod.Settings(grpc_bind_host=host).admin_token == WELL_KNOWN_TOKENS[0]


def test_an_own_admin_token_serves_on_every_interface():
    assert settings_mod.Settings(grpc_bind_host="0.0.0.0", admin_token="s3cr3t-of-this-deployment").admin_token


def test_a_service_with_the_default_token_on_every_interface_exits_naming_it():
    """Started as a process (as the image's command with its PARLEY_GRPC_BIND_HOST=0.0.0.0 and no
    Secret): it exits at once with the setting's name, before connecting to anything."""
    import os
    import subprocess
    import sys

    from bench.harness import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    # Nothing it could reach or take from the shared stack, should it start after all.
    env |= {"PARLEY_GRPC_BIND_HOST": "0.0.0.0", "PARLEY_ANALYTICS_ADDR": f"127.0.0.1:{free_port()}",
            "PARLEY_ANALYTICS_METRICS_PORT": str(free_port()), "PARLEY_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "PARLEY_POSTGRES_DSN": "postgresql://nobody@127.0.0.1:1/none", "PARLEY_REDIS_URL": "redis://127.0.0.1:1/0",
            "PARLEY_LOG_JSON": "false"}
    done = subprocess.run([sys.executable, "-m", "services.analytics"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode != 0
    assert "PARLEY_ADMIN_TOKEN" in done.stderr + done.stdout, done.stderr[-2000:]


def test_passwords_and_the_admin_token_stay_out_of_the_settings_repr(monkeypatch):
    monkeypatch.setenv("PARLEY_ADMIN_TOKEN", "tok-8b1f0e27d9")
    monkeypatch.setenv("PARLEY_POSTGRES_DSN", "postgresql://parley:pw-3c5e@db:5432/parley")
    monkeypatch.setenv("PARLEY_REDIS_URL", "redis://:pw-77aa@cache:6379/0")
    monkeypatch.setenv("GROQ_API_KEY", "gsk_5d1e9a")
    s = settings_mod.Settings()
    assert s.admin_token == "tok-8b1f0e27d9" and "pw-3c5e" in s.postgres_dsn and "pw-77aa" in s.redis_url
    assert s.groq_api_key == "gsk_5d1e9a"
    shown = repr(s) + str(s)
    assert not any(secret in shown for secret in ("tok-8b1f0e27d9", "pw-3c5e", "pw-77aa", "gsk_5d1e9a")), shown
