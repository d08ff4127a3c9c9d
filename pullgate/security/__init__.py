"""Identities and authorization: certificates, mutual TLS, the call policy and callers' tokens (docs/security.md)."""
