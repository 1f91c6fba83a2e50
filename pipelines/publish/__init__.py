"""Versioned, verified, atomic publishing; incremental refresh; the run lock and the input state store."""
