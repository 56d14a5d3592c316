// The emulator's stand-in for CUDA's <cuda_runtime.h>: kernels that include it get the
// device-side types and functions; there is no host runtime API here.
#pragma once
#include "attnspec_emu_numeric.h"
