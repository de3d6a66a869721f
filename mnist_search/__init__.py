"""mnist-search: automatic search for tiny convolutional networks on MNIST.

The Python API, for notebooks and scripts::

    import mnist_search as ms
    study = ms.search(trials=30, max_params=8000, storage="sqlite:///mnist.db", data_dir="data")
    ms.confirm(study, top=3, seeds=3)
    ms.export(study, "best_net.py", weights="best_net.safetensors")
    print(ms.evaluate("best_net.py", "best_net.safetensors"))
"""

__version__ = "0.1.0"

# The subpackage first: importing it later would rebind the name `search` to it.
import mnist_search.search  # noqa: F401
from mnist_search.api import confirm, evaluate, export, leaderboard, report, search
from mnist_search.search.settings import SearchSettings

__all__ = ["SearchSettings", "__version__", "confirm", "evaluate", "export", "leaderboard", "report", "search"]
