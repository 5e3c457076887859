"""The replica interface over HTTP(S): a replica server and the primary's client.

``hvdr serve`` runs the server (``server.py``) in front of the replica stores of one
site; the primary reaches it through :class:`~engine.transport.http.client.HttpReplica`,
which implements :class:`~engine.transport.interface.ReplicaTarget` with the same calls
as the in-process replica. Two authentication modes, as Hyper-V Replica offers:
certificates (HTTPS with mutual TLS, ``tls.py``) and Kerberos (HTTP with SPNEGO
Negotiate, ``kerberos.py``; the data then travels unencrypted). ``docs/network.md``
describes the protocol, its limits and its refusals.
"""
