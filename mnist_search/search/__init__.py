"""WHICH networks to try: settings, the runner, the space, the objective, records, confirm, export, report.

Import the modules themselves (``mnist_search.search.runner``, ...): this package imports
nothing, so that ``import mnist_search`` stays light.
"""
