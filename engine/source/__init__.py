"""The source side: the VM's disks at its active site, the outbox, shipping, and the
source half of resynchronisation.

It talks to the target only through the replica interface
(``engine.transport.interface``), never through the replica store or its files.
"""
