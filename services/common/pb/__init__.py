"""Generated protobuf and gRPC code for parley.v1 (make proto)."""
