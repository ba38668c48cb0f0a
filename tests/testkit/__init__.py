"""Helpers the tests share: the demo corpus, the invalid-spec cases, a hand-built dataset, a
tiny model with an adapter and a server process, and the cluster, operator and chart helpers.
A package the tests import (`pythonpath` in pytest's settings), so no test edits `sys.path`."""
