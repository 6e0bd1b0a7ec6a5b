"""What a key's website and a document's url may be: an http(s) URL whose host can be a DNS name or is
an IP address (a document's also doc:<name>, as `parley knowledge add` names files); anything else is
INVALID_ARGUMENT naming the field, so no Plan offers a page no Fetch can read and no Chat source
carries a script URL."""

from __future__ import annotations

import grpc
import pytest

from services.common.pb.parley.v1 import common_pb2, search_pb2
from services.search import urls
from tests.conftest import RUN_ID, make_key, rpc_error
from tests.search.conftest import plan

GOOD_SITES = [
    "https://help.example.com/", "http://shop.example", "HTTPS://Shop.Example.COM/docs?x=1", "https://shop.example./",
    "http://127.0.0.1:8000/", "http://[::1]:8080/help", "https://bücher.example/", "http://intranet/",
    "https://my_shop.example/",
]
BAD_SITES = [
    "http://exa mple.com/", "http://a b/", " http://exa mple.com", "http://exa\tmple.com/", "http://exa\nmple.com/",
    "http://exa%20mple.com/", "http://exa..mple.com/", "http://.example.com/", "http://999.1.1.1/", "http://1.2.3/",
    "http://0x7f.1/", "http://" + "a" * 64 + ".example/", "http://" + "a." * 127 + "example/", "http://[zz]/",
    "http://user:pw@shop.example/", "http://shop.example:99999/", "ftp://shop.example/", "javascript:alert(1)",
    "https:///help", "//shop.example/", "http://exa<mple.com/", "http://\u200bshop.example/",
    "http://xn--zz.example/", "http://www.xn--ls8h.la/", "http://shop.example:0/",
]


@pytest.mark.parametrize("url", GOOD_SITES)
def test_http_urls_with_a_host_are_websites(url):
    assert urls.website_problem(url) is None


@pytest.mark.parametrize("url", BAD_SITES)
def test_urls_without_a_usable_host_are_not_websites(url):
    assert urls.website_problem(url)


@pytest.mark.parametrize("url", ["", "doc:returns.md", "doc:Returns and refunds.md", "https://help.example.com/a?b=c#d",
                                 "http://127.0.0.1:8000/x"])
def test_document_urls_the_project_uses_are_accepted(url):
    assert urls.document_url_problem(url) is None


@pytest.mark.parametrize("url", ["javascript:alert(document.cookie)", "JavaScript:alert(1)", "vbscript:msgbox(1)",
                                 "data:text/html,<script>alert(1)</script>", "file:///etc/passwd", "mailto:a@b.example",
                                 "ftp://files.example/a", "doc:", "doc:   ", "https://exa mple.com/x", "returns.md",
                                 "//files.example/a", "https://user@evil.example/"])
def test_other_document_urls_are_refused(url):
    assert urls.document_url_problem(url)


async def _error(call, request, admin) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request, metadata=admin, timeout=30)
    return rpc_error(info)


async def test_a_website_without_a_usable_host_is_refused(search, admin):
    for i, website in enumerate(["http://exa mple.com/", "http://a b/", "http://exa\tmple.com/", "http://1.2.3/"]):
        error = await _error(search.CreateProductKey, search_pb2.CreateProductKeyRequest(
            name="Shop", id=f"t-{RUN_ID}-url-bad-{i}", website=website), admin)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "website" in error.details(), website
    listed = await search.ListProductKeys(search_pb2.ListProductKeysRequest(), metadata=admin, timeout=10)
    assert not [k.id for k in listed.keys if k.id.startswith(f"t-{RUN_ID}-url-bad-")]
    for i, website in enumerate(["https://bücher.example/", "http://[::1]:8080/", "http://127.0.0.1:8000/"]):
        reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(
            name="Shop", id=f"t-{RUN_ID}-url-good-{i}", website=website), metadata=admin, timeout=10)
        assert reply.key.website == website


async def test_a_stored_website_without_a_usable_host_is_not_offered(search, admin, pg):
    """A key stored before websites were checked: Plan does not send its turns to a Fetch that cannot succeed."""
    key = await make_key(search, admin, "url-stored", faq=[], docs=[])
    await pg.execute("UPDATE product_keys SET website = 'http://exa mple.com/' WHERE id = $1", key.id)
    reply = await plan(search, key.secret, "What colours does the jacket come in?")   # the record read now
    assert reply.strategy == common_pb2.STRATEGY_NO_ANSWER and not reply.fetch_url


async def test_a_document_url_must_be_http_or_a_document_name(search, admin):
    key = await make_key(search, admin, "url-doc", faq=[], docs=[])
    for url in ["javascript:alert(document.cookie)", "data:text/html,<b>x</b>", "file:///etc/passwd",
                "https://exa mple.com/mars"]:
        error = await _error(search.AddDocument, search_pb2.AddDocumentRequest(
            product_key_id=key.id, title="Mars", text="Shipping to Mars takes forty days by rocket.", url=url), admin)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "url" in error.details(), url
    for url in ["doc:mars.md", "https://help.example.com/mars"]:
        await search.AddDocument(search_pb2.AddDocumentRequest(
            product_key_id=key.id, title="Mars", text=f"Shipping to Mars takes forty days by rocket ({url}).", url=url),
            metadata=admin, timeout=30)
    reply = await plan(search, key.secret, "How long does shipping to Mars take?")
    assert {p.url for p in reply.passages} == {"doc:mars.md", "https://help.example.com/mars"}
