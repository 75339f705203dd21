"""Tests of vault_ingest.hyperliquid; a package so its module names (test_models, ...) cannot clash with others."""
