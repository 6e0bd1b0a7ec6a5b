"""What a re-crawl takes out of the knowledge, and what it keeps: a page's text goes once no URL leads to
it any more (gone, moved for good, no longer text, disallowed), and stays while another URL (a redirect,
a canonical link) still leads to it or the change may pass. Each crawl runs through a real crawl worker
(PostgreSQL, Kafka, the search service's indexer) against small sites on 127.0.0.1."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.scraper.test_crawl_inputs import ROBOTS, crawl, new_key, page  # noqa: F401 - crawl is a fixture
from tests.scraper.test_fetch_safety import Site

pytestmark = pytest.mark.integration


async def texts(pg, key_id: str) -> dict[str, list[str]]:
    """The key's page chunks per document."""
    rows = await pg.fetch("SELECT document, content FROM knowledge_chunks WHERE product_key_id = $1 AND kind = 'page'"
                          " ORDER BY document, position", key_id)
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["document"], []).append(r["content"])
    return out


async def records(pg, key_id: str) -> dict[str, tuple[str, int]]:
    """crawled_pages: URL -> (document, chunk count)."""
    return {r["url"]: (r["document"], r["chunk_count"]) for r in await pg.fetch(
        "SELECT url, document, chunk_count FROM crawled_pages WHERE product_key_id = $1", key_id)}


def gone() -> web.Response:
    return web.Response(status=404, text="gone")


def moved(to: str, status: int = 301) -> web.Response:
    return web.Response(status=status, headers={"Location": to})


def with_canonical(title: str, href: str) -> web.Response:
    return web.Response(content_type="text/html", text=page(title).text.replace(
        "<head>", f'<head><link rel="canonical" href="{href}">'))


@pytest.fixture(autouse=True)
def indexer(services):
    """The services, for the search indexer: it writes the pages the crawls hand over into the knowledge."""
    return services


@pytest.fixture
def one_at_a_time(settings):
    """Pages crawled in the order they are found: which URL of a page wrote its text is known."""
    return settings.model_copy(update={"scraper_job_concurrency": 1})


async def test_a_gone_url_takes_its_page_only_when_no_other_url_leads_to_it(crawl, pg, one_at_a_time):
    """/alias1 and /alias2 redirect to /target (/alias1, crawled first, wrote its text); /dupy names /dupx as
    its canonical page. The URL that wrote /target's text and the duplicate of /dupx go 404: both pages
    stay, as the other URLs lead to them, and the crawl after writes nothing. Once those go too, the
    text goes."""
    dead: set[str] = set()

    def alive(path: str, make):
        return lambda: gone() if path in dead else make()

    routes = {
        "/robots.txt": ROBOTS,
        "/": lambda: page("Home", "/alias1", "/alias2", "/dupx", "/dupy"),
        "/alias1": alive("/alias1", lambda: moved("/target")),
        "/alias2": alive("/alias2", lambda: moved("/target")),
        "/target": lambda: page("Satsuma plan"),
        "/dupx": alive("/dupx", lambda: page("Yuzu addon")),
        "/dupy": alive("/dupy", lambda: with_canonical("Yuzu addon", "/dupx")),
    }
    async with Site(routes) as site:
        key = await new_key(pg)
        first = await crawl(key, [site.base + "/"], worker_settings=one_at_a_time)
        assert first.state == "done" and first.progress.pages_fetched == 3, first    # home, target, dupx
        before = await texts(pg, key)
        known = await records(pg, key)
        assert set(before) == {site.base + "/", site.base + "/target", site.base + "/dupx"}
        assert known[site.base + "/alias1"][1] > 0 and known[site.base + "/alias2"] == (site.base + "/target", 0)
        assert known[site.base + "/dupy"] == (site.base + "/dupx", 0)

        dead.update({"/alias1", "/dupy"})
        second = await crawl(key, [site.base + "/"], worker_settings=one_at_a_time)
        assert second.state == "done", second.error
        assert second.progress.pages_removed == 2 and second.progress.chunks_deleted == 0, second
        assert await texts(pg, key) == before
        known = await records(pg, key)
        assert site.base + "/alias1" not in known and site.base + "/dupy" not in known
        # The record that wrote /target's chunks is gone: the alias left counts them.
        assert known[site.base + "/alias2"] == (site.base + "/target", len(before[site.base + "/target"]))

        third = await crawl(key, [site.base + "/"], worker_settings=one_at_a_time)
        assert third.state == "done", third.error
        assert third.progress.pages_fetched == third.progress.chunks_deleted == 0, third
        assert await texts(pg, key) == before

        dead.update({"/alias2", "/dupx"})
        last = await crawl(key, [site.base + "/"], worker_settings=one_at_a_time)
        assert last.state == "done", last.error
        assert last.progress.pages_removed == 2, last
        assert last.progress.chunks_deleted == len(before[site.base + "/target"]) + len(before[site.base + "/dupx"]), last
        assert set(await texts(pg, key)) == {site.base + "/"}


async def test_a_page_moved_for_good_to_a_page_already_indexed_takes_its_old_text(crawl, pg, one_at_a_time):
    """/old is indexed; then it redirects (301) to /new, which the home page links to now and which is
    crawled first: /old's text goes, and the next crawl writes and deletes nothing."""
    version = [1]
    routes = {
        "/robots.txt": ROBOTS,
        "/": lambda: page("Home", "/old" if version[0] == 1 else "/new"),
        "/old": lambda: page("Lime plan", extra="<p>The lime plan costs 7 euros.</p>") if version[0] == 1
        else moved("/new"),
        "/new": lambda: page("Lime plan", extra="<p>The lime plan costs 9 euros.</p>"),
    }
    async with Site(routes) as site:
        key = await new_key(pg)
        first = await crawl(key, [site.base + "/"], worker_settings=one_at_a_time)
        assert first.state == "done" and first.progress.pages_fetched == 2, first
        old_chunks = len((await texts(pg, key))[site.base + "/old"])

        version[0] = 2
        second = await crawl(key, [site.base + "/"], worker_settings=one_at_a_time)
        assert second.state == "done", second.error
        assert site.hits["/old"] == 2                   # asked again, as a page an earlier crawl found
        assert second.progress.pages_removed == 1 and second.progress.chunks_deleted == old_chunks, second
        now = await texts(pg, key)
        assert set(now) == {site.base + "/", site.base + "/new"}
        assert "9 euros" in "".join(now[site.base + "/new"]) and "7 euros" not in str(now)
        assert (await records(pg, key))[site.base + "/old"][0] == site.base + "/new"

        third = await crawl(key, [site.base + "/"], worker_settings=one_at_a_time)
        assert third.state == "done", third.error
        assert third.progress.chunks_written == third.progress.chunks_deleted == 0, third
        assert await texts(pg, key) == now


WALLS = {
    "page": lambda: page("Back soon", extra="<p>We are updating the help centre.</p>"),
    "noindex": lambda: web.Response(text="<html><head><meta name='robots' content='noindex'><title>Sign in</title>"
                                         "</head><body><p>Sign in to read this page.</p></body></html>",
                                    content_type="text/html"),
    "gone": lambda: web.Response(status=404, text="not here"),
    "json": lambda: web.json_response({"status": "maintenance"}),
}


@pytest.mark.parametrize("wall", sorted(WALLS))
async def test_pages_redirected_for_now_to_another_page_keep_their_text(crawl, pg, one_at_a_time, wall):
    """The whole site in maintenance or behind a sign-in wall (every page 302 to /maintenance), whatever
    that page answers (a page, noindex, 404, JSON): the pages' text stays, /maintenance is a page of its
    own, crawled once, and the crawl's page budget is not spent on it again for every redirect."""
    version = [1]

    def help_page(name: str, fact: str):
        return lambda: page(name, extra=f"<p>{fact}</p>") if version[0] == 1 else moved("/maintenance", 302)

    routes = {
        "/robots.txt": ROBOTS,
        "/": lambda: page("Home", "/plans", "/refunds") if version[0] == 1 else moved("/maintenance", 302),
        "/plans": help_page("Plans", "The lime plan costs 7 euros."),
        "/refunds": help_page("Refunds", "Refunds take five working days."),
        "/maintenance": WALLS[wall],
    }
    async with Site(routes) as site:
        key = await new_key(pg)
        first = await crawl(key, [site.base + "/"], worker_settings=one_at_a_time)
        assert first.state == "done" and first.progress.pages_fetched == 3, first
        before = await texts(pg, key)

        version[0] = 2
        second = await crawl(key, [site.base + "/"], worker_settings=one_at_a_time)
        assert second.state == "done", second.error
        after = await texts(pg, key)
        for url, chunks in before.items():
            assert after[url] == chunks, url
        assert "7 euros" in str(after) and "five working days" in str(after)
        assert second.progress.chunks_deleted == 0 and second.progress.pages_removed == 0, second
        assert second.progress.pages_seen <= 4, second


async def test_a_page_that_is_no_longer_text_disallowed_or_moved_off_the_site_takes_its_text(crawl, pg):
    """Pages indexed as HTML that now are a PDF, JSON, a permanent redirect off the site, or disallowed by
    robots.txt lose their text. Those that now loop, ask for a login, fail (503) or redirect off the site
    for now (302) keep it: that may pass."""
    version = [1]
    kinds = ["pdf", "json", "offsite", "robots", "loop", "login", "unavailable", "elsewhere"]

    def changed(kind: str, other: str):
        def respond():
            if version[0] == 1:
                return page(f"Plan {kind}")
            return {
                "pdf": lambda: web.Response(body=b"%PDF-1.4 binary", content_type="application/pdf"),
                "json": lambda: web.json_response({}),
                "offsite": lambda: moved(other + "/landed", 301),
                "robots": lambda: page(f"Plan {kind} now disallowed"),
                "loop": lambda: moved(f"/to-{kind}", 302),
                "login": lambda: web.Response(status=401, text="login required"),
                "unavailable": lambda: web.Response(status=503, text="try later"),
                "elsewhere": lambda: moved(other + "/landed", 302),
            }[kind]()
        return respond

    def robots():
        extra = "Disallow: /to-robots\n" if version[0] == 2 else ""
        return web.Response(text="User-agent: *\n" + extra + "Allow: /\n")

    async with Site({"/robots.txt": ROBOTS, "/landed": lambda: page("Landed")}) as other, Site({}) as site:
        site._routes.update({"/robots.txt": robots, "/": lambda: page("Home", *(f"/to-{k}" for k in kinds)),
                             **{f"/to-{k}": changed(k, other.base) for k in kinds}})
        key = await new_key(pg)
        first = await crawl(key, [site.base + "/"], max_depth=1)
        assert first.state == "done" and first.progress.pages_fetched == 1 + len(kinds), first
        before = await texts(pg, key)

        version[0] = 2
        second = await crawl(key, [site.base + "/"], max_depth=1)
        assert second.state == "done", second.error
        assert second.progress.pages_removed == 4, second
        after = await texts(pg, key)
        for kind in kinds:
            url = f"{site.base}/to-{kind}"
            if kind in ("pdf", "json", "offsite", "robots"):
                assert url not in after, kind
            else:
                assert after[url] == before[url], kind
        assert site.hits["/to-robots"] == 1          # disallowed now: not asked again
        assert other.hits["/landed"] == 0            # off the crawl's site: never followed
        known = await records(pg, key)
        assert site.base + "/to-robots" not in known and site.base + "/to-offsite" not in known
        assert known[site.base + "/to-pdf"] == ("", 0)


async def test_dot_segments_in_absolute_links_do_not_get_round_robots_txt(crawl, pg):
    """robots.txt disallows /secret; a page links to it as /./secret, /a/x/../../secret and with its
    dots percent-encoded. Each is the disallowed page as the server resolves it: none is requested."""
    async with Site({}) as site:
        site._routes.update({
            "/robots.txt": lambda: web.Response(text="User-agent: *\nDisallow: /secret\n"),
            "/": lambda: page("Home", f"{site.base}/./secret", f"{site.base}/a/x/../../secret",
                              f"{site.base}/a/%2e%2E/secret", "/a/../secret"),
            "/secret": lambda: page("Orchid secret"),
        })
        key = await new_key(pg)
        status = await crawl(key, [site.base + "/"])
        assert status.state == "done", status.error
        assert [p for p in site.hits if "secret" in p] == [], site.hits
        assert "Orchid" not in str(await texts(pg, key))
        assert set(await records(pg, key)) == {site.base + "/"}


async def test_one_page_in_several_spellings_is_crawled_once(crawl, pg):
    """Links to the same page whose escapes differ in case, escape unreserved characters (%7E) or write
    its letters unescaped (an IRI) are one URL; a query and a trailing slash still name other pages."""
    async with Site({}) as site:
        site._routes.update({
            "/robots.txt": ROBOTS,
            "/": lambda: page("Home", "/caf%c3%a9", "/caf%C3%A9", "/café", "/%7Eann", "/~ann", "/~ann/",
                              "/~ann?tab=2"),
            "/café": lambda: page("Coffee"),
            "/~ann": lambda: page("Ann"),
            "/~ann/": lambda: page("Ann folder"),
        })
        key = await new_key(pg)
        status = await crawl(key, [site.base + "/"])
        assert status.state == "done", status.error
        assert site.hits["/café"] == 1 and site.hits["/~ann"] == 2 and site.hits["/~ann/"] == 1, site.hits
        assert set(await records(pg, key)) == {site.base + p for p in (
            "/", "/caf%C3%A9", "/~ann", "/~ann/", "/~ann?tab=2")}
