"""Parley: the four gRPC services, the stream processor and their shared runtime."""
