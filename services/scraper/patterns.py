"""A crawl's include/exclude patterns: the caller's regular expressions, bounded in size and in time.

They are compiled with `regex`, whose searches take a timeout: a pattern that backtracks
catastrophically on a URL (`(a|aa)+$` against a long path) gives up after PATTERN_TIMEOUT_SECONDS
instead of holding the crawl (and its worker's event loop) for ever. A search that times out counts
as not matching. Compiling is not time-bounded, so what makes it costly (long patterns, nested
counted repeats such as `((a{1000}){1000}){1000}`) is refused when the crawl is requested."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import regex

from services.common.errors import InvalidArgument

logger = logging.getLogger(__name__)

PATTERN_TIMEOUT_SECONDS = 0.05
MAX_PATTERN_CHARS = 500
# The largest repetition a pattern may ask for, counted repeats multiplied through their nesting:
# `((a{100}){100}){100}` took 0.9 s and 290 MB to compile, `((a{1000}){1000}){1000}` more than 10 s.
MAX_PATTERN_REPEAT = 1000
# After this many timeouts a pattern is not searched any more (it counts as not matching): each
# timeout holds the event loop for PATTERN_TIMEOUT_SECONDS.
MAX_PATTERN_TIMEOUTS = 20

_COUNTED = re.compile(r"\{(\d*)(?:,(\d*))?\}")


def repeat_weight(pattern: str) -> int:
    """An upper bound of how many times a counted repeat makes the compiler copy what it repeats:
    the bounds of `{n}`, `{n,}` and `{n,m}` multiplied through the groups they repeat."""
    stack = [1]     # per open group: the largest weight within it so far
    last = 1        # the weight of the last atom (what a quantifier after it repeats)
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            last, i = 1, i + 2
        elif c == "[":
            j = i + 1
            if pattern[j:j + 1] == "^":
                j += 1
            if pattern[j:j + 1] == "]":
                j += 1
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            last, i = 1, j + 1
        elif c == "(":
            stack.append(1)
            i += 1
            continue
        elif c == ")" and len(stack) > 1:
            last, i = stack.pop(), i + 1
        elif c == "{" and (m := _COUNTED.match(pattern, i)) and (m.group(1) or m.group(2)):
            last, i = last * max(int(m.group(1) or 0), int(m.group(2) or 0), 1), m.end()
        else:
            last, i = 1, i + 1
        stack[-1] = max(stack[-1], last)
    return max(stack)


def compile_patterns(name: str, patterns: Iterable[str]) -> list[regex.Pattern]:
    """The patterns compiled, or InvalidArgument naming the first one that is too long, too costly to
    compile, or no regular expression."""
    compiled = []
    for p in patterns:
        shown = p if len(p) <= 80 else p[:80] + "…"
        if len(p) > MAX_PATTERN_CHARS:
            raise InvalidArgument(f"{name} pattern {shown!r} has {len(p)} characters; the limit is {MAX_PATTERN_CHARS}")
        if repeat_weight(p) > MAX_PATTERN_REPEAT:
            raise InvalidArgument(f"{name} pattern {shown!r} repeats more than {MAX_PATTERN_REPEAT} times "
                                  "(counted repeats multiplied through their groups)")
        try:
            compiled.append(regex.compile(p))
        except (regex.error, ValueError, OverflowError, RecursionError) as exc:
            raise InvalidArgument(f"{name} pattern {shown!r} is not a regular expression: {exc}") from None
    return compiled


class UrlPatterns:
    """Include/exclude patterns of one crawl, each search bounded by PATTERN_TIMEOUT_SECONDS."""

    def __init__(self, include: list[str], exclude: list[str], job_id: str = "") -> None:
        self.include = compile_patterns("include", include)
        self.exclude = compile_patterns("exclude", exclude)
        self.job_id = job_id
        self._timeouts: dict[str, int] = {}

    def admits(self, url: str) -> bool:
        if self.include and not any(self._search(p, url) for p in self.include):
            return False
        return not any(self._search(p, url) for p in self.exclude)

    def _search(self, pattern: regex.Pattern, url: str) -> bool:
        timeouts = self._timeouts.get(pattern.pattern, 0)
        if timeouts >= MAX_PATTERN_TIMEOUTS:
            return False
        try:
            return pattern.search(url, timeout=PATTERN_TIMEOUT_SECONDS) is not None
        except TimeoutError:
            self._timeouts[pattern.pattern] = timeouts + 1
            if timeouts == 0:
                logger.warning("job %s: pattern %r took over %.0f ms on %s; it counts as not matching there (and "
                               "everywhere after %d such URLs)", self.job_id, pattern.pattern,
                               PATTERN_TIMEOUT_SECONDS * 1000, url[:200], MAX_PATTERN_TIMEOUTS)
            return False
