"""WHICH networks to try: settings, the runner, the space, the objective, records, confirm, export, report.

This package imports nothing, so that ``import mnist_search`` stays light. Import its modules
with ``from mnist_search.search.runner import run_search`` (``import mnist_search.search.runner
as runner`` does not work: ``mnist_search.search`` is the API's ``search()`` function).
"""
