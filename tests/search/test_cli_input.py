"""`parley` on input it cannot use: one line on stderr and exit status 2, never a traceback, and
nothing sent; `events tail` of a topic the cluster does not have says so instead of waiting."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from services.cli import REPO
from services.common.pb.parley.v1 import search_pb2
from tests.conftest import RUN_ID, make_key


async def parley(test_env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, cwd=REPO, env={**os.environ, **test_env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"parley {' '.join(args)} still running after {timeout} s") from None
    return proc.returncode, out.decode(), err.decode()


BAD_FILES = {
    "missing.json": None,
    "broken.json": '{"faq": [{"question": "Do you ship?", "answer": ',
    "list.json": '[{"question": "Do you ship?", "answer": "Yes."}]',
    "no-faq.json": '{"questions": []}',
    "no-answer.json": '{"faq": [{"question": "Do you ship?"}]}',
    "number.json": '{"faq": [{"question": "Do you ship?", "answer": 42}]}',
    "blank.json": '{"faq": [{"question": "\\u001b[0m\\u200b", "answer": "Yes."}]}',
    "huge.json": json.dumps({"faq": [{"question": "Why? " * 300, "answer": "Yes."}]}),
    "latin1.md": "Caf\xe9 opening hours".encode("latin-1"),
    "notes.pdf": "%PDF-1.4",
}


@pytest.mark.parametrize("name", BAD_FILES)
async def test_a_bad_knowledge_file_is_one_line_and_status_2(test_env, tmp_path, name):
    content = BAD_FILES[name]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    # No search service is asked: the file is refused before anything is sent.
    code, _, err = await parley(test_env, "knowledge", "add", str(path), "--key", "no-such-key")
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and name in err, err


async def test_a_bad_file_in_a_directory_adds_nothing(search, admin, pg, test_env, tmp_path):
    key = await make_key(search, admin, "cli-bad-dir", faq=[], docs=[])
    (tmp_path / "a.md").write_text("# Returns\n\nReturns are free within 30 days.")
    (tmp_path / "b.json").write_text('{"faq": [{"question": "Do you ship?"}]}')
    code, _, err = await parley(test_env, "knowledge", "add", str(tmp_path), "--key", key.id)
    assert code == 2 and "b.json" in err and "faq entry 0" in err, err
    assert await pg.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1", key.id) == 0


async def test_events_tail_of_a_missing_topic_says_so(stack, test_env):
    # Unique per run: where brokers create topics on demand, a subscription would have created it.
    topic = f"parley.no-such-topic.test-{RUN_ID}"
    code, _, err = await parley(test_env, "events", "tail", topic, timeout=30)
    assert code == 2 and topic in err and "Traceback" not in err, err


async def test_events_tail_of_a_topic_still_reads_it(search, admin, settings, test_env):
    key = await make_key(search, admin, "cli-tail", faq=[], docs=[])
    await search.AddFaq(search_pb2.AddFaqRequest(product_key_id=key.id, question="Do you ship?", answer="Yes."),
                        metadata=admin, timeout=10)
    code, out, err = await parley(test_env, "events", "tail", "knowledge_updated", "--from-beginning", "--limit", "1")
    assert code == 0, err
    line = json.loads(out.splitlines()[0])
    assert line["topic"] == settings.topic("knowledge_updated") and "knowledge_version" in line["value"]
