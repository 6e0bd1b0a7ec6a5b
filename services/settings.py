"""Every setting of Parley in one class, for the tools that start or talk to all services (the CLI, the
launcher, the benchmarks, the tests). A service itself reads only its own class."""

from __future__ import annotations

from services.analytics.settings import AnalyticsSettings
from services.common.settings import TOPICS, SettingsError, get_settings
from services.response.settings import ResponseSettings
from services.scraper.settings import ScraperSettings
from services.search.settings import SearchSettings

__all__ = ["TOPICS", "Settings", "SettingsError", "get_settings"]


class Settings(SearchSettings, ResponseSettings, ScraperSettings, AnalyticsSettings):
    """The settings of every service together (same `PARLEY_*` variables, same defaults)."""
