"""``hvdr explore``: the model's state space, one step at a time, in a browser.

``view`` computes what the page shows from a trace (pure: the model's successor
function, its refusals, the lifecycle diagram); ``app`` serves it over HTTP with
Starlette; ``page.html`` is the page. The trace the person builds lives in the
page, in the trace format (docs/trace-format.md): every request carries it, so the
server keeps no session.
"""
