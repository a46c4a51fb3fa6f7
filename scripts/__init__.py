"""Sweep scripts and helpers (run as files, e.g. ``python scripts/summarize.py``); a
package so that tests can import ``scripts.summarize``."""
