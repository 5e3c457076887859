"""The change log: its format, writer, strict reader, and the tracked disk.

Imports ``engine.storage`` only; knows nothing of sites, replicas or the lifecycle.
"""
