"""Local stack: real Kafka (KRaft), PostgreSQL 15 and Redis processes for development and tests."""
