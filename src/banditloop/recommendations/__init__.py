"""Extension: recommendations from the loop's own data (docs/recommendations.md).

Tracked user events (tracked.py, beside this package) feed built-in models kept in
memory by every serving process (``models``, ``builder``); a scenario (``scenario``)
combines their candidates, the HTTP recommender connector and static lists, and the
loop ranks them (``service``).
"""
