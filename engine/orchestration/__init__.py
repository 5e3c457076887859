"""The engine's front: ``ReplicationEngine`` opens the sites and holds the VMs."""
