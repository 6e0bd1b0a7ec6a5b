"""Analytics: the Faust stream processor (stream/) and the analytics gRPC API."""
