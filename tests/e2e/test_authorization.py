"""Authorization across the four services: who may call what, and what a refused caller learns.

Admin RPCs take the exact admin token only; tenant RPCs take a product key's exact, current secret
only, and read or touch that key's own data only; a revoked or rotated-away secret is refused by the
very next call on every service."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as redis

from bench.harness import free_port
from deploy.local.sample_site.server import SampleSite
from services.common.grpc_server import channel, check_serving
from services.common.pb.parley.v1 import (
    analytics_pb2,
    analytics_pb2_grpc,
    response_pb2,
    scraper_pb2,
    scraper_pb2_grpc,
    search_pb2,
)
from services.common.product_keys import TOMBSTONE, KeyCache, hash_secret, validate_key
from services.launcher import Launcher
from tests.conftest import RUN_ID, TestKey, rpc_error

ADMIN_HEADER = "x-parley-admin-token"
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[SampleSite]:
    site = SampleSite(slow_seconds=1.0)
    await site.start()
    yield site
    await site.stop()


@pytest.fixture(scope="module")
async def scraper(services, settings):
    async with channel(settings.scraper_addr) as ch:
        yield scraper_pb2_grpc.ScraperServiceStub(ch)


async def _new_key(search, admin, suffix: str, website: str = "") -> TestKey:
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
        name=f"Secret Shop {suffix}", id=f"t-{RUN_ID}-authz-{suffix}-{uuid.uuid4().hex[:4]}", website=website,
        instructions=f"internal instructions of {suffix}",
        settings=search_pb2.KeySettings(rate_limit_per_second=1000, rate_limit_burst=1000),
    ), metadata=admin, timeout=10)
    key = TestKey(reply.key.id, reply.product_key)
    await search.AddFaq(search_pb2.AddFaqRequest(
        product_key_id=key.id, question="What is the vault code?", answer=f"The vault code of {suffix} is 4711."),
        metadata=admin, timeout=10)
    return key


@pytest.fixture(scope="module")
async def victim(search, admin) -> TestKey:
    return await _new_key(search, admin, "victim")


def _token_variants(token: str, tenant_secret: str) -> list[tuple[str, tuple]]:
    """Every admin header a caller without the admin token might send. (A tab, NUL or other control
    character cannot be sent at all: gRPC refuses such a metadata value on the client.)"""
    return [
        ("no header", ()),
        ("empty", ((ADMIN_HEADER, ""),)),
        ("wrong", ((ADMIN_HEADER, "guess"),)),
        ("upper case", ((ADMIN_HEADER, token.upper()),)),
        ("trailing space", ((ADMIN_HEADER, token + " "),)),
        ("leading space", ((ADMIN_HEADER, " " + token),)),
        ("prefix", ((ADMIN_HEADER, token[:-1]),)),
        ("longer", ((ADMIN_HEADER, token + "x"),)),
        ("a tenant's secret", ((ADMIN_HEADER, tenant_secret),)),
        ("the right token under another name", (("x-parley-admin", token),)),
    ]


def _admin_calls(search, scraper, analytics, victim: TestKey, site_url: str) -> list[tuple[str, object]]:
    """(name, call(metadata)) for every RPC that needs the admin token."""

    def read_first(stream_call):
        async def read():
            call = stream_call
            try:
                return await call.read()
            finally:
                call.cancel()
        return read()

    return [
        ("CreateProductKey", lambda md: search.CreateProductKey(search_pb2.CreateProductKeyRequest(
            name="intruder", id=f"t-{RUN_ID}-intruder-{uuid.uuid4().hex[:6]}"), metadata=md, timeout=10)),
        ("ListProductKeys", lambda md: search.ListProductKeys(search_pb2.ListProductKeysRequest(), metadata=md,
                                                              timeout=10)),
        ("RevokeProductKey", lambda md: search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=victim.id),
                                                                metadata=md, timeout=10)),
        ("RotateProductKey", lambda md: search.RotateProductKey(search_pb2.RotateProductKeyRequest(id=victim.id),
                                                                metadata=md, timeout=10)),
        ("AddFaq", lambda md: search.AddFaq(search_pb2.AddFaqRequest(
            product_key_id=victim.id, question="Who are you?", answer="Owned."), metadata=md, timeout=10)),
        ("AddDocument", lambda md: search.AddDocument(search_pb2.AddDocumentRequest(
            product_key_id=victim.id, title="Owned", text="Owned."), metadata=md, timeout=10)),
        ("DeleteKnowledge", lambda md: search.DeleteKnowledge(search_pb2.DeleteKnowledgeRequest(
            product_key_id=victim.id, document="What is the vault code?"), metadata=md, timeout=10)),
        ("StartCrawl", lambda md: scraper.StartCrawl(scraper_pb2.StartCrawlRequest(
            product_key_id=victim.id, seed_urls=[site_url]), metadata=md, timeout=10)),
        ("GetCrawl", lambda md: scraper.GetCrawl(scraper_pb2.GetCrawlRequest(job_id="any"), metadata=md, timeout=10)),
        ("CancelCrawl", lambda md: scraper.CancelCrawl(scraper_pb2.GetCrawlRequest(job_id="any"), metadata=md,
                                                       timeout=10)),
        ("WatchCrawl", lambda md: read_first(scraper.WatchCrawl(scraper_pb2.GetCrawlRequest(job_id="any"),
                                                                metadata=md, timeout=10))),
        ("Fetch (any host)", lambda md: scraper.Fetch(scraper_pb2.FetchRequest(url=site_url), metadata=md,
                                                       timeout=10)),
        ("GetMetrics", lambda md: analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id=victim.id),
                                                       metadata=md, timeout=10)),
        ("StreamMetrics", lambda md: read_first(analytics.StreamMetrics(analytics_pb2.StreamMetricsRequest(
            product_key_id=victim.id, interval_seconds=1), metadata=md, timeout=10))),
        ("TopQuestions", lambda md: analytics.TopQuestions(analytics_pb2.TopQuestionsRequest(
            product_key_id=victim.id), metadata=md, timeout=10)),
        ("KnowledgeGaps", lambda md: analytics.KnowledgeGaps(analytics_pb2.TopQuestionsRequest(
            product_key_id=victim.id), metadata=md, timeout=10)),
    ]


async def test_admin_rpcs_take_the_exact_admin_token_only(search, scraper, analytics, admin, settings, victim, site):
    token = settings.admin_token
    calls = _admin_calls(search, scraper, analytics, victim, site.base_url + "/")
    for variant, metadata in _token_variants(token, victim.secret):
        for name, call in calls:
            try:
                await call(metadata)
            except grpc.aio.AioRpcError as exc:
                # The same answer from every service: a caller without the exact token is no one.
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, (name, variant, exc.code(), exc.details())
                assert token not in exc.details()
                continue
            pytest.fail(f"{name} answered OK with the admin token {variant}")
    # The victim was left alone, and the exact token does get through.
    plan = await search.Plan(search_pb2.PlanRequest(product_key=victim.secret, message="What is the vault code?"),
                             timeout=10)
    assert "4711" in plan.faq_answer
    await search.ListProductKeys(search_pb2.ListProductKeysRequest(), metadata=admin, timeout=10)


def _secret_variants(secret: str) -> list[tuple[str, str]]:
    """Strings that are not the secret, though close to it."""
    return [
        ("leading space", " " + secret),
        ("trailing space", secret + " "),
        ("trailing newline", secret + "\n"),
        ("surrounding tabs", "\t" + secret + "\t"),
        ("upper case", secret.upper()),
        ("prefix", secret[:-1]),
        ("short prefix", secret[:8]),
        ("longer", secret + "A"),
        ("very long", secret + "A" * 100_000),
    ]


def _tenant_calls(search, response, scraper, analytics, key: TestKey, url: str):
    """(name, call(secret)) for every RPC a tenant calls with its secret."""

    async def stream_first(secret):
        call = response.ChatStream(response_pb2.ChatRequest(product_key=secret, message="What is the vault code?"),
                                   timeout=10)
        try:
            return await call.read()
        finally:
            call.cancel()

    async def metrics_first(secret):
        call = analytics.StreamMetrics(analytics_pb2.StreamMetricsRequest(product_key=secret, interval_seconds=1),
                                       timeout=10)
        try:
            return await call.read()
        finally:
            call.cancel()

    return [
        ("Plan", lambda s: search.Plan(search_pb2.PlanRequest(product_key=s, message="What is the vault code?"),
                                       timeout=10)),
        ("Chat", lambda s: response.Chat(response_pb2.ChatRequest(product_key=s, message="What is the vault code?"),
                                         timeout=10)),
        ("ChatStream", stream_first),
        ("SubmitFeedback", lambda s: response.SubmitFeedback(response_pb2.FeedbackRequest(
            product_key=s, request_id="0" * 32, rating=1), timeout=10)),
        ("Fetch", lambda s: scraper.Fetch(scraper_pb2.FetchRequest(url=url, product_key=s), timeout=10)),
        ("GetMetrics", lambda s: analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key=s), timeout=10)),
        ("StreamMetrics", metrics_first),
        ("TopQuestions", lambda s: analytics.TopQuestions(analytics_pb2.TopQuestionsRequest(product_key=s),
                                                          timeout=10)),
        ("KnowledgeGaps", lambda s: analytics.KnowledgeGaps(analytics_pb2.TopQuestionsRequest(product_key=s),
                                                            timeout=10)),
    ]


async def test_a_secret_is_matched_exactly_never_trimmed_folded_or_by_prefix(
        search, response, scraper, analytics, admin, site):
    key = await _new_key(search, admin, "exact", website=site.base_url + "/")
    calls = _tenant_calls(search, response, scraper, analytics, key, site.base_url + "/")
    wrong = []
    for variant, secret in _secret_variants(key.secret):
        for name, call in calls:
            try:
                await call(secret)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                    wrong.append((name, variant, exc.code().name, exc.details()[:100]))
                assert key.id not in exc.details() and "4711" not in exc.details()
                continue
            wrong.append((name, variant, "OK", ""))
    assert not wrong, "\n".join(map(str, wrong))
    # The exact secret is accepted by every one of them (feedback: for a turn of its own).
    for name, call in calls:
        if name != "SubmitFeedback":
            await call(key.secret)


async def _refused(call, code=grpc.StatusCode.UNAUTHENTICATED) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    err = rpc_error(info)
    assert err.code() == code, err.details()
    return err


@pytest.mark.parametrize("change", ["revoke", "rotate"])
async def test_a_revoked_or_rotated_away_secret_is_refused_at_once_by_every_service(
        search, response, scraper, analytics, admin, site, change):
    """Every service answered the secret just before (so each holds it in whatever cache it keeps);
    the very next call after the admin RPC returns is refused by each."""
    key = await _new_key(search, admin, change, website=site.base_url + "/")
    calls = _tenant_calls(search, response, scraper, analytics, key, site.base_url + "/")
    turn = None
    for _ in range(2):      # twice: the second chat is an answer-cache hit, the key record is cached
        for name, call in calls:
            if name != "SubmitFeedback":
                reply = await call(key.secret)
                if name == "Chat":
                    turn = reply
    await response.SubmitFeedback(response_pb2.FeedbackRequest(product_key=key.secret, request_id=turn.request_id,
                                                               rating=1), timeout=10)
    if change == "revoke":
        await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    else:
        await search.RotateProductKey(search_pb2.RotateProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    for name, call in calls:
        err = await _refused(call(key.secret))
        assert "4711" not in err.details()
    await _refused(response.SubmitFeedback(response_pb2.FeedbackRequest(
        product_key=key.secret, request_id=turn.request_id, rating=-1), timeout=10))


async def test_a_revocation_that_fails_refuses_nothing_and_one_that_commits_refuses_at_once(
        search, response, analytics, admin, pg):
    """The revocation's UPDATE fails after its tombstone went into the shared key cache (here the
    key's knowledge version at the bigint limit, so that its increment overflows): the key is not
    revoked, so no service may refuse it. Once the revocation commits, every service refuses it."""
    key = await _new_key(search, admin, "failed-revoke")
    plan = search_pb2.PlanRequest(product_key=key.secret, message="What is the vault code?")
    chat = response_pb2.ChatRequest(product_key=key.secret, message="What is the vault code?")
    await search.Plan(plan, timeout=10)
    await response.Chat(chat, timeout=10)                  # each service holds the key record now
    await pg.execute("UPDATE product_keys SET knowledge_version = 9223372036854775807 WHERE id = $1", key.id)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    assert rpc_error(info).code() not in (grpc.StatusCode.OK, *REFUSED)
    assert await validate_key(pg, hash_secret(key.secret)) is not None
    await search.Plan(plan, timeout=10)
    await response.Chat(chat, timeout=10)
    await analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key=key.secret), timeout=10)
    await pg.execute("UPDATE product_keys SET knowledge_version = 100 WHERE id = $1", key.id)
    await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    await _refused(search.Plan(plan, timeout=10))
    await _refused(response.Chat(chat, timeout=10))
    await _refused(analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key=key.secret), timeout=10))


async def test_feedback_on_another_tenants_turn_is_not_found_and_names_nothing_of_it(search, response, admin):
    a = await _new_key(search, admin, "fb-a")
    b = await _new_key(search, admin, "fb-b")
    turn = await response.Chat(response_pb2.ChatRequest(product_key=b.secret, message="What is the vault code?"),
                               timeout=10)
    assert "4711" in turn.answer
    err = await _refused(response.SubmitFeedback(response_pb2.FeedbackRequest(
        product_key=a.secret, request_id=turn.request_id, rating=-1, comment="spam"), timeout=10),
        grpc.StatusCode.NOT_FOUND)
    assert b.id not in err.details() and "vault" not in err.details()
    # The same answer as for a request id that never existed: nothing tells that the turn is there.
    other = await _refused(response.SubmitFeedback(response_pb2.FeedbackRequest(
        product_key=a.secret, request_id="f" * 32, rating=-1), timeout=10), grpc.StatusCode.NOT_FOUND)
    assert other.details().replace("f" * 32, turn.request_id) == err.details()
    await response.SubmitFeedback(response_pb2.FeedbackRequest(product_key=b.secret, request_id=turn.request_id,
                                                               rating=1), timeout=10)


async def test_sessions_of_two_tenants_with_the_same_session_id_stay_apart(search, response, admin):
    a = await _new_key(search, admin, "sess-a")
    b = await _new_key(search, admin, "sess-b")
    session = f"shared-{uuid.uuid4().hex[:6]}"
    await response.Chat(response_pb2.ChatRequest(product_key=b.secret, session_id=session,
                                                 message="What is the vault code?"), timeout=10)
    follow_up = await response.Chat(response_pb2.ChatRequest(product_key=a.secret, session_id=session,
                                                             message="And what about it?", no_cache=True), timeout=10)
    assert "sess-b" not in follow_up.answer and b.id not in follow_up.answer


async def test_fetch_reads_the_keys_own_website_only(search, scraper, admin, site):
    port = site.base_url.rsplit(":", 1)[1].rstrip("/")
    own = await _new_key(search, admin, "fetch-own", website=site.base_url + "/")
    other = await _new_key(search, admin, "fetch-other", website=f"http://localhost:{port}/")
    inner = await _new_key(search, admin, "fetch-inner", website="http://169.254.169.254/")
    page = await scraper.Fetch(scraper_pb2.FetchRequest(url=site.base_url + "/", product_key=own.secret), timeout=10)
    assert page.status == 200
    for secret, url in [
        (own.secret, f"http://localhost:{port}/"),              # another key's website
        (other.secret, site.base_url + "/"),
        (own.secret, "http://169.254.169.254/latest/meta-data/"),   # an internal address
        (inner.secret, "http://169.254.169.254/latest/meta-data/"),  # ... also when it is the key's website
        (own.secret, f"http://{own.id}@localhost:{port}/"),
    ]:
        err = await _refused(scraper.Fetch(scraper_pb2.FetchRequest(url=url, product_key=secret,
                                                                    product_key_id=other.id), timeout=10),
                             grpc.StatusCode.PERMISSION_DENIED)
        assert other.id not in err.details()
    # The admin token fetches from any host, but never from an internal address.
    await _refused(scraper.Fetch(scraper_pb2.FetchRequest(url="http://169.254.169.254/latest/meta-data/"),
                                 metadata=admin, timeout=10), grpc.StatusCode.PERMISSION_DENIED)


async def test_a_tenant_reads_its_own_analytics_only_and_cannot_use_crawl_jobs(
        search, scraper, analytics, admin, site):
    a = await _new_key(search, admin, "an-a")
    b = await _new_key(search, admin, "an-b", website=site.base_url + "/")
    job = await scraper.StartCrawl(scraper_pb2.StartCrawlRequest(product_key_id=b.id, seed_urls=[site.base_url + "/"],
                                                                 max_pages=1), metadata=admin, timeout=10)
    for md in [(), ((ADMIN_HEADER, a.secret),), ((ADMIN_HEADER, b.secret),)]:
        err = await _refused(scraper.GetCrawl(scraper_pb2.GetCrawlRequest(job_id=job.job_id), metadata=md, timeout=10),
                             grpc.StatusCode.UNAUTHENTICATED)
        assert b.id not in err.details() and site.base_url not in err.details()
    for rpc, request in [
        ("GetMetrics", analytics_pb2.GetMetricsRequest(product_key_id=b.id, product_key=a.secret)),
        ("TopQuestions", analytics_pb2.TopQuestionsRequest(product_key_id=b.id, product_key=a.secret)),
        ("KnowledgeGaps", analytics_pb2.TopQuestionsRequest(product_key_id=b.id, product_key=a.secret)),
    ]:
        err = await _refused(getattr(analytics, rpc)(request, timeout=10), grpc.StatusCode.PERMISSION_DENIED)
        assert b.id not in err.details()
    # The admin token with an empty product_key_id names nobody: refused, not every key's data.
    await _refused(analytics.GetMetrics(analytics_pb2.GetMetricsRequest(), metadata=admin, timeout=10),
                   grpc.StatusCode.INVALID_ARGUMENT)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


async def test_strings_longer_than_any_secret_are_refused_without_being_kept(services, search, response, analytics):
    """Each service memoises the hashes of the secrets it sees: a megabyte-long "secret" must not be kept
    with them (4,096 of them would be gigabytes in every tenant-facing process)."""
    for name, call in [
        ("search", lambda s: search.Plan(search_pb2.PlanRequest(product_key=s, message="hello"), timeout=10)),
        ("response", lambda s: response.Chat(response_pb2.ChatRequest(product_key=s, message="hello"), timeout=10)),
        ("analytics", lambda s: analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key=s), timeout=10)),
    ]:
        pid = services.pid(name)
        before = 0.0
        for i in range(48 + 144):
            if i == 48:     # after a first round that lets the allocator settle: 144 MB more are sent
                before = _rss_mb(pid)
            err = await _refused(call("pk_" + uuid.uuid4().hex + "A" * 1_000_000))
            assert len(err.details()) < 200
        grown = _rss_mb(pid) - before
        assert grown < 72, f"{name} grew by {grown:.0f} MB after 144 refused one-megabyte secrets"


async def test_a_read_that_raced_the_revocation_cannot_cache_the_revoked_key_again(
        search, response, analytics, admin, pg, settings):
    """A validator read the key in PostgreSQL just before the revocation committed and caches what it
    read (SET NX) just after the RPC returned: the tombstone must still be there to refuse it, also after
    the revocation's knowledge event (which drops the key's cached record) went round."""
    key = await _new_key(search, admin, "race")
    key_hash = hash_secret(key.secret)
    read_before = await validate_key(pg, key_hash)
    assert read_before is not None and read_before.id == key.id
    await search.RevokeProductKey(search_pb2.RevokeProductKeyRequest(id=key.id), metadata=admin, timeout=10)
    client = redis.from_url(settings.redis_url)
    try:
        cache = KeyCache(client, settings.key_cache_ttl_seconds)
        await cache.put(key_hash, read_before)
        await asyncio.sleep(1.0)    # the key_revoked event reaches every search replica's follower
        await cache.put(key_hash, read_before)
        assert await cache.get(key_hash) == TOMBSTONE
    finally:
        await client.aclose()
    await _refused(search.Plan(search_pb2.PlanRequest(product_key=key.secret, message="What is the vault code?"),
                               timeout=10))
    await _refused(response.Chat(response_pb2.ChatRequest(product_key=key.secret, message="What is the vault code?"),
                                 timeout=10))
    await _refused(analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key=key.secret), timeout=10))


async def test_an_empty_configured_admin_token_lets_nobody_in(services, victim, test_env, tmp_path):
    """A deployment whose PARLEY_ADMIN_TOKEN came out empty: no header, or an empty one, is no admin."""
    addrs = {"scraper": f"127.0.0.1:{free_port()}", "analytics": f"127.0.0.1:{free_port()}"}
    env = {**test_env, "PARLEY_ADMIN_TOKEN": "", "PARLEY_SCRAPER_ADDR": addrs["scraper"],
           "PARLEY_ANALYTICS_ADDR": addrs["analytics"], "PARLEY_SCRAPER_METRICS_PORT": str(free_port()),
           "PARLEY_ANALYTICS_METRICS_PORT": str(free_port())}
    launched = Launcher(tmp_path, env=env)
    launched.start(["scraper", "analytics"])
    try:
        async with channel(addrs["scraper"]) as scraper_ch, channel(addrs["analytics"]) as analytics_ch:
            for ch, name in ((scraper_ch, "scraper"), (analytics_ch, "analytics")):
                for _ in range(300):
                    try:
                        await check_serving(ch, name)
                        break
                    except Exception:  # noqa: BLE001 - still starting
                        await asyncio.sleep(0.1)
            scraper = scraper_pb2_grpc.ScraperServiceStub(scraper_ch)
            analytics = analytics_pb2_grpc.AnalyticsServiceStub(analytics_ch)
            for metadata in [(), ((ADMIN_HEADER, ""),)]:
                await _refused(scraper.GetCrawl(scraper_pb2.GetCrawlRequest(job_id="any"), metadata=metadata,
                                                timeout=10))
                await _refused(scraper.StartCrawl(scraper_pb2.StartCrawlRequest(
                    product_key_id=victim.id, seed_urls=["http://127.0.0.1:9/"]), metadata=metadata, timeout=10))
                await _refused(scraper.Fetch(scraper_pb2.FetchRequest(url="http://127.0.0.1:9/"), metadata=metadata,
                                             timeout=10))
            await _refused(analytics.GetMetrics(analytics_pb2.GetMetricsRequest(product_key_id=victim.id),
                                                metadata=((ADMIN_HEADER, ""),), timeout=10))
            await _refused(analytics.TopQuestions(analytics_pb2.TopQuestionsRequest(product_key_id=victim.id),
                                                  metadata=((ADMIN_HEADER, ""),), timeout=10))
    finally:
        launched.stop(["scraper", "analytics"])
