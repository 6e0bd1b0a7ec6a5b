"""The LLM prompt: the key's name and instructions, passages with ids, recent turns, within a token budget."""

from __future__ import annotations

from services.response.llm import AnswerRequest


def estimate_tokens(text: str) -> int:
    """About four characters per token for English text: enough to keep within a budget."""
    return len(text) // 4 + 1


def build_messages(request: AnswerRequest, token_budget: int) -> list[dict]:
    """System prompt with the passages (best first, as many as the budget allows), the session's
    recent turns (newest kept first), then the question."""
    name = request.key_name or "the company"
    system = [
        f"You are the customer-support assistant of {name}.",
        "Answer the customer's question using only the passages below. Cite every passage you use "
        "by its id in square brackets, like [12]. If the passages do not contain the answer, say that "
        "you do not know; never invent facts. Be brief and friendly.",
    ]
    if request.instructions.strip():
        system.append(f"Instructions from {name}: {request.instructions.strip()}")
    budget = token_budget - estimate_tokens(request.message) - sum(estimate_tokens(s) for s in system)
    passages = []
    for p in request.passages:
        block = f"[{p.id}] {p.title}\n{p.text}".strip()
        cost = estimate_tokens(block)
        if cost > budget:
            if not passages and budget > 50:  # the best passage, cut to fit, beats none
                block = block[: budget * 4]
                passages.append(block)
                budget = 0
            break
        passages.append(block)
        budget -= cost
    if passages:
        system.append("Passages:\n" + "\n\n".join(passages))
    else:
        system.append("There are no passages for this question.")
    history: list[dict] = []
    for turn in reversed(request.history):
        cost = estimate_tokens(turn.question) + estimate_tokens(turn.answer)
        if cost > budget:
            break
        history[:0] = [{"role": "user", "content": turn.question}, {"role": "assistant", "content": turn.answer}]
        budget -= cost
    return [{"role": "system", "content": "\n\n".join(system)}, *history, {"role": "user", "content": request.message}]
