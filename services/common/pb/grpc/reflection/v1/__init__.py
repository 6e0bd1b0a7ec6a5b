"""Generated code for grpc.reflection.v1."""
