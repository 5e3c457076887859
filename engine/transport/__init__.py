"""The replica interface and its implementations (in-process today; HTTP(S) between
hosts later).
"""
