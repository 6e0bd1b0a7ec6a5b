"""Generated code for the grpc package (server reflection v1)."""
