"""Shared runtime of every Parley service: settings, logging, gRPC bootstrap, Kafka, PostgreSQL, Redis."""
