"""Storage: raw disk images, durable files and sparse copies (the bottom layer).

Nothing here knows of change logs, replicas or the lifecycle; everything above
reaches the filesystem through these modules.
"""
