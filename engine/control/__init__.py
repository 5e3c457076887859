"""Control state: the per-site SQLite schema and store (the intent journal), the site
that owns its paths, and the lock that gives each site one owner.

``schema.py`` (tables, versions, migrations), ``store.py`` (the store, any thread),
``site.py`` (the storage root and its layout); the one-owner lock of
``<root>/site.lock`` is ``engine/storage/owner_lock.py``.
"""
