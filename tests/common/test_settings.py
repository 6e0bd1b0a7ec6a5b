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
