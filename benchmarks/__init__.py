"""Side-by-side measurements of the engine against real peers (cp, plain writes).

Not part of ``make test``: run them with ``make bench`` (``python -m benchmarks``),
which runs the ``main()`` of every ``benchmarks/bench_*.py`` module in turn. Sizes
come from environment variables each module documents, so a quick run and a thorough
one use the same code.
"""
