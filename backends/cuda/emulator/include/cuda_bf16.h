// The emulator's stand-in for CUDA's <cuda_bf16.h>: kernels include it unchanged and get the
// emulator's __half and __nv_bfloat16 (both live in one header, as both CUDA headers
// are usually included together).
#pragma once
#include "attnspec_emu_numeric.h"
