"""Search strategy service: product keys, knowledge, and the per-message answering plan."""
