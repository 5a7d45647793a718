"""localcloud: an OpenStack-compatible cloud on one Linux machine (API + real namespaces)."""
