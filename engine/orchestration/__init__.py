"""The engine's front: ``ReplicationEngine`` opens the sites and holds the VMs; the
orchestrator records every job (``jobs.py``) and runs recovery plans over the engine
(``recovery_plans.py``, ``plan_runner.py``; docs/orchestration.md)."""
