"""mnist-search: automatic search for tiny convolutional networks on MNIST."""

__version__ = "0.1.0"
