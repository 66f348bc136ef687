"""Fetcher role: repo_backfill -> getRepo -> create events (see main.py)."""
