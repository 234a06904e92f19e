"""Pure decision logic. Imports no adapter and nothing of gRPC, PyJWT, Prometheus or a database."""
