"""Every property of the model as a named predicate, and the checkers that use them.

``catalogue`` lists the properties (``replica``, ``failover`` and ``witnesses`` hold
them by theme); ``explorer`` checks them on every reachable state of a bounded model
(over the factored successor function of ``projection``); ``fuzz`` checks them along
Hypothesis-driven runs; ``trace`` reads, writes and replays counterexamples;
``mutants`` are the broken models that prove the checks bite.
"""
