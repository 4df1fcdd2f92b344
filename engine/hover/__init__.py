"""Hover: the account (OAuth tokens, rate limit, API client), its callback, the handshake."""
