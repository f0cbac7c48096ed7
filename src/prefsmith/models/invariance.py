"""Batch-invariant computation: a response's numbers depend on that response alone.

Float32 kernels are not invariant on their own. Measured with torch 2.13.0+cpu (MKL) on this
project's CPUs, 1 to 8 threads:

* a matrix product of 1-3 rows (and 5-7 or 9-11 rows with 2 or 8 threads) rounds differently
  from the same rows inside a larger product; from 12 rows on, each row's result is the same
  whatever the row and thread counts;
* a row padded into a batch with longer rows changes in its last digits (about 1e-5 nats per
  token after a whole model);
* the CPU flash-attention kernel rounds differently with the thread count when queries are
  fewer than keys (a response scored on its context's key/value cache); the math kernel does not.

So scoring runs each sequence in a forward pass of its own, gives every product at least
:data:`MIN_MATMUL_ROWS` rows (padding short inputs, by a rule that depends on the input alone)
and computes attention with the math kernel (:func:`invariant_kernels`). Then ``score``,
``score_requests``, a chunk of a run and a Ray worker with any thread count return the same
bits for the same response.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

#: Fewest rows given to a matrix product on a batch-invariant path (see the module docstring).
MIN_MATMUL_ROWS = 16


@contextlib.contextmanager
def invariant_kernels(enabled: bool = True) -> Iterator[None]:
    """No autograd and, when ``enabled``, attention by the math kernel.

    >>> import torch
    >>> with invariant_kernels():
    ...     torch.ones(2, requires_grad=True).sum().requires_grad
    False
    """
    import torch

    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if enabled:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        yield
