"""scipy's own ``ndimage/tests/test_filters.py`` run against sepconv (issue 12).

``shim`` serves sepconv's filters under scipy.ndimage's names (scipy's functions for the
rest) and records which test called which of them; ``runner`` runs the test file shipped
inside the installed scipy against that module in a fresh interpreter and writes one JSON
record per test; ``expected`` reads ``expected_failures.txt``, the documented list of the tests
that may fail, each with its category and reason. ``tests/test_scipy_conformance.py`` checks
the results against the list. Nothing here runs on import.
"""
