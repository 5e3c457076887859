"""Control state: the per-site SQLite schema and store (the intent journal), and the
site that owns its paths.
"""
