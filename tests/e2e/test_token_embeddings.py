"""langchain-openai's `OpenAIEmbeddings` (default settings) through the proxy.

It tokenizes with OpenAI's tokenizer and sends token ids; Bastion's bge-m3 has another
tokenizer, and the sandbox (like Bastion) refuses token ids. The proxy decodes them back
to text with the packaged cl100k_base, so the sandbox embeds the app's own text."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from harness import APP_KEY, Proxy, Sandbox
from langchain_openai import OpenAIEmbeddings

# tiktoken caches each download under sha1(its URL); the app side (langchain) needs the
# file too and, like the proxy, cannot download it here.
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture
def app_env(proxy: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken_ext

    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    packaged = Path(next(iter(tiktoken_ext.__path__))) / "data" / "cl100k_base.tiktoken"
    shutil.copy(packaged, cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    for name, value in proxy.app_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENAI_API_KEY", APP_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.mark.usefixtures("app_env")
def test_langchain_openai_embeddings_token_ids_reach_bastion_as_text(
    sandbox: Sandbox, proxy: Proxy
) -> None:
    texts = ["hello world", "naïve café ☃ — second document"]
    sandbox.clear_journal()
    embedder = OpenAIEmbeddings()  # default settings: ada-002, token ids
    vectors = embedder.embed_documents(texts)
    query = embedder.embed_query("hello world")
    assert [len(v) for v in vectors] == [1024, 1024] and len(query) == 1024
    bodies = [json.loads(e["body"]) for e in sandbox.journal() if e["path"] == "/v1/embeddings"]
    assert bodies[0]["model"] == "bge-m3"
    assert bodies[0]["input"] == texts  # decoded back to the app's own text
    assert bodies[1]["input"] == ["hello world"]
    records = [json.loads(line) for line in proxy.access_log.read_text().splitlines()]
    decoded = [r for r in records if r.get("endpoint") == "embeddings"
               and "token-ids" in r.get("rewrites", [])]
    assert len(decoded) == 2  # the app really sent token ids, both times
    assert "token-id input decoded with text-embedding-ada-002's tokenizer" in decoded[0]["notes"]


@pytest.mark.usefixtures("app_env")
def test_dimensions_the_target_cannot_honour_is_a_clear_400() -> None:
    import openai

    embedder = OpenAIEmbeddings(model="text-embedding-3-small", dimensions=512, max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        embedder.embed_query("hello")
    error = raised.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"]) == ("dimensions_not_supported", "dimensions")
    assert "bge-m3" in error["message"] and "1024" in error["message"]
