"""CUDA backends: ``<family>.cu`` kernels and their ``<family>.py`` launchers.

Every family module defines ``SOURCE`` (its ``.cu`` file), ``SPEC`` (the spec
function it mirrors), ``KERNELS`` (every :class:`backends.cuda._launch.KernelConfig`
it launches with), the public function and ``main()``. The engine that runs them is
CuPy on a GPU or, with ``ATTNSPEC_CUDA=emulator``, the CPU emulator in
``backends.cuda.emulator``; ``backends.cuda.nvrtc_check`` compiles every
configuration with NVRTC without a GPU.
"""

FAMILIES = ("softmax", "attention", "attention_backward", "attention_tc", "rope",
            "attention_varlen", "block_sparse", "tokenize", "readout")
"""Module names of the kernel families, for the compile gate and the GPU check."""

from backends.cuda._launch import CudaUnavailableError, emulate_if_no_gpu, engine

__all__ = ["FAMILIES", "CudaUnavailableError", "emulate_if_no_gpu", "engine"]
