"""Generated code for grpc.reflection."""
