"""The one batch loop: the slices that cut n rows into batches of `size`, the last one shorter."""

import math


def batch_count(n, size):
    return math.ceil(n / size)


def batch_slice(index, size):
    """The rows of batch `index`; a slice past the end is cut short by the array it indexes."""
    return slice(index * size, (index + 1) * size)


def batch_slices(n, size):
    """batch_slice of every batch of n rows, in order."""
    return (batch_slice(index, size) for index in range(batch_count(n, size)))
