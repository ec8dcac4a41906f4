"""The browser console: a small single-page client of the daemon's own public API."""
