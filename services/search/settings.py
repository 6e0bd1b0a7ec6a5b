"""Settings of the search service and its indexer (over the shared `CommonSettings`)."""

from __future__ import annotations

from services.common.settings import CommonSettings


class SearchSettings(CommonSettings):
    """Retrieval, dense index, the indexer's consumer group and the answer decision of Plan."""

    # Search.
    knowledge_min_score: float = 0.4      # share of the question's terms a passage must contain
    faq_min_score: float = 0.6            # FAQ question match above which its stored answer is used
    search_candidates: int = 20           # per retrieval arm, before fusion

    # Dense retrieval (services/search/dense.py, vector_index.py, indexer.py)
    dense_retrieval: bool = True                  # dense candidates in Plan (the model loads at start)
    dense_candidates: int = 20                    # nearest chunks per message
    vector_index_max_bytes: int = 256 * 1024 * 1024   # loaded keys' vectors per search process (LRU)
    spelling_correction: bool = True              # misspelt words read as the key's own (spelling.py)

    # Hybrid ranking and the answer decision (services/search/strategy.py) and the extractive answerer's
    # sentence choice (services/response/extractive.py). Chosen on the dev split of the help-site evaluation
    # (bench/eval_tune.py over `make bench ARGS="--only search-eval"`); see README "How the thresholds were chosen".
    # (The extractive answerer's thresholds are in services/response/settings.py.)
    lexical_weight: float = 0.1               # lexical relevance added to the dense score in the ranking
    answer_min_dense: float = 0.24            # best passage score from which the knowledge answers at all
    passage_min_dense: float = 0.24           # score a passage needs to be returned with a KNOWLEDGE answer
    faq_min_dense: float = 0.80               # FAQ entry cosine from which its stored answer is used
    faq_min_margin: float = 0.10              # ... or by which it stands above every passage that is no FAQ entry
    #   (the demo set, tests/search/eval_demo.json: questions written for an FAQ entry had it first by
    #   0.05-0.55 above the best page passage, questions about the pages had an FAQ entry first once, by 0.02)

    # NO_ANSWER by the support of the answer (services/search/strategy.py support()): how far the best
    # passage stands above the 10 best (peak) plus known_weight times the share of the message's terms
    # that the key's knowledge contains. Chosen with answer_min_dense and extractive_min_similarity.
    answer_min_support: float = 0.21
    # ... and when the message is a yes/no question naming a word no chunk holds (strategy.asks_unknown());
    # chosen with extractive_min_similarity on the dev split of four sites (bench/eval/README.md): the
    # middle of the plateau 0.26-0.28
    unknown_min_support: float = 0.27
    known_weight: float = 0.2     # the middle of the dev plateau (0.15-0.3 caught as many unanswerable questions)
    covered_weight: float = 0.5   # weight of strategy.covered() (the question's rare terms in the passages read) in support
