"""The binding: each VM's mechanics behind its state machine. The only engine package
that imports ``model``.
"""
