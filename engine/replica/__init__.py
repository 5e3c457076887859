"""The target side: the replica store, applying cycles, undo images, the manifest and
the recovery-point catalogue, and the replica side of a drill (a point read through
the undo chain, differencing disks over it, the drill's area).

It never imports the source side; what reaches it comes through the transport.
"""
