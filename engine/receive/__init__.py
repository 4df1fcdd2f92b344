"""Receive: the HTTP server, sources, signature schemes, ingest, and hookwise send."""
