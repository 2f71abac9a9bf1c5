"""Staged rollouts: the policy spec, wave assignment, rollout objects and their evaluation.

The policy spec is ``core.spec.rollout``. Pure (no I/O): the delivery worker stores rollouts
and device outcomes (``delivery/rollout_store.py``) and asks these modules what follows.
"""
