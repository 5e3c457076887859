"""The target side: the replica store, applying cycles, undo images, the manifest and
the recovery-point catalogue.

It never imports the source side; what reaches it comes through the transport.
"""
