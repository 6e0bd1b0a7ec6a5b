"""Response generation service: the chat API that gateway clients call."""
