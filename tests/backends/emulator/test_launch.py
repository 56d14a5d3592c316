"""The emulator's API: compiling, options, the cache, and the strict launch checks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from backends.cuda import emulator
from backends.cuda.emulator import (
    EmulatorCompileError,
    KernelError,
    RawKernel,
    RawModule,
    _build,
)

SOURCE = r"""
#include <cuda_fp16.h>

// A comment that mentions extern "C" __global__ void not_a_kernel(int x) is no kernel.
extern "C" __global__ void __launch_bounds__(128) axpy(float a, const float* __restrict__ x,
                                                       float* __restrict__ y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += a * __ldg(&x[i]);  // __ldg: a plain load here
}

// Every supported scalar type, summed into a double: checks how arguments are packed.
extern "C" __global__ void scalars(double* out, bool b, char c, signed char sc, unsigned char uc,
                                   short s, unsigned short us, int i, unsigned int ui, long l,
                                   unsigned long ul, long long ll, unsigned long long ull,
                                   float f, double d, __half h) {
    const double all[] = {(double)b, (double)c, (double)sc, (double)uc, (double)s, (double)us,
                          (double)i, (double)ui, (double)l, (double)ul, (double)ll, (double)ull,
                          (double)f, d, (double)__half2float(h)};
    for (int k = 0; k < 15; ++k) out[k] = all[k];
}

extern "C" {
__global__ void halves(const __half* x, __nv_bfloat16* y, const void* raw, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = __float2bfloat16(__half2float(x[i]));
}
}

extern "C" __global__ void dims(unsigned* out) {
    unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned nt = blockDim.x * blockDim.y * blockDim.z;
    out[b * nt + t] = b * nt + t + 1;
}

extern "C" __global__ void dynamic(float* out) {
    extern __shared__ __align__(16) float smem[];
    smem[threadIdx.x] = threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = smem[blockDim.x - 1 - threadIdx.x];
}

extern "C" __global__ void say(int n) {
    if (threadIdx.x == 0) printf("hello from block %u, n=%d\n", blockIdx.x, n);
}

extern "C" __global__ void macros(int* out) {
#ifdef UNDEFINED_LATER
    out[0] = -1;
#else
    out[0] = VALUE;
#endif
}

struct Pair { int a, b; };
extern "C" __global__ void takes_struct(Pair p, float2* q) {}

#define KERNEL(name) extern "C" __global__ void name(int* out)
KERNEL(generated) { out[0] = 1; }

#ifndef DROP_KEPT
extern "C" __global__ void kept(int* out) { out[0] = 2; }
#endif
"""


@pytest.fixture(scope="module")
def module():
    return RawModule(code=SOURCE, options=("-DVALUE=7", "--std=c++17", "--use_fast_math"),
                     source_name="launch.cu")


def test_kernels_are_found_and_run(module):
    with pytest.raises(ValueError, match=r"\(found: axpy, scalars, halves, dims, dynamic, say, "
                                         r"macros, takes_struct, generated, kept\)"):
        module.get_function("nope")
    axpy = module.get_function("axpy")
    x = np.arange(300, dtype=np.float32)
    y = np.ones(300, dtype=np.float32)
    axpy((3,), (128,), (np.float32(2), x, y, np.int32(300)))
    np.testing.assert_array_equal(y, 1 + 2 * x)


def test_rawkernel_has_the_same_call_shape():
    kernel = RawKernel(SOURCE, "macros", options=("-DVALUE=3",), source_name="launch.cu")
    out = np.zeros(1, np.int32)
    kernel(1, 1, (out,))
    assert out[0] == 3
    assert kernel.code == SOURCE and kernel.options == ("-DVALUE=3",)


def test_every_scalar_type_is_passed_by_value(module):
    out = np.zeros(15, np.float64)
    values = (np.bool_(True), np.int8(-2), np.int8(3), np.uint8(200), np.int16(-300),
              np.uint16(60000), np.int32(-70000), np.uint32(4_000_000_000), np.int64(-2**40),
              np.uint64(2**41), np.int64(5), np.uint64(6), np.float32(0.5), np.float64(0.25),
              np.float16(1.5))
    module.get_function("scalars")(1, 1, (out, *values))
    np.testing.assert_array_equal(out, [float(v) for v in values])


def test_half_and_bfloat16_arrays_and_void_pointers(module):
    x = np.array([1.0, -2.5, 65504.0], np.float16)
    y = np.zeros(3, np.uint16)  # __nv_bfloat16 travels as its bits
    module.get_function("halves")(1, 32, (x, y, np.zeros(5, np.complex64), np.int32(3)))
    back = (y.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(back, [1.0, -2.5, 65536.0])


@pytest.mark.parametrize("grid, block", [
    (1, 1), ((2,), (3,)), ((2, 3), (4, 5)), ((2, 3, 2), (4, 2, 3)), ((1, 1, 5), (1, 1, 64)),
])
def test_builtin_indices_cover_the_grid(module, grid, block):
    g = np.prod(grid)
    b = np.prod(block)
    out = np.zeros(g * b, np.uint32)
    module.get_function("dims")(grid, block, (out,))
    np.testing.assert_array_equal(out, np.arange(1, g * b + 1))


def test_dynamic_shared_memory(module):
    out = np.zeros(64, np.float32)
    module.get_function("dynamic")(1, 64, (out,), shared_mem=64 * 4)
    np.testing.assert_array_equal(out, np.arange(63, -1, -1))


def test_printf_prints_on_the_host(module, capfd):
    module.get_function("say")(2, 4, (np.int32(5),))
    out = capfd.readouterr().out
    assert "hello from block 0, n=5" in out and "hello from block 1, n=5" in out


def test_options_define_and_undefine(module):
    out = np.zeros(1, np.int32)
    module.get_function("macros")(1, 1, (out,))
    assert out[0] == 7
    other = RawModule(code=SOURCE, options=("--define-macro=VALUE=9", "-DUNDEFINED_LATER",
                                            "-UUNDEFINED_LATER"), source_name="launch.cu")
    other.get_function("macros")(1, 1, (out,))
    assert out[0] == 9


@pytest.mark.parametrize("option", ["-lineinfo", "-arch=sm_80", "--gpu-architecture=sm_90",
                                    "--ptxas-options=-v", "-G", "--fmad=false", "-std=c++20"])
def test_nvrtc_only_options_are_ignored(option):
    assert _build.compiler_flags((option,)) == ()


@pytest.mark.parametrize("option", ["-O3", "--maxrregcount=32", "-D", "-rdc=true", "-fopenmp"])
def test_other_options_are_errors(option):
    with pytest.raises(ValueError, match="not supported by the CUDA emulator"):
        RawModule(code=SOURCE, options=(option,))


def test_options_must_be_a_tuple_of_strings():
    with pytest.raises(TypeError, match="options"):
        RawModule(code=SOURCE, options="-DVALUE=1")


@pytest.mark.parametrize("kwargs", [
    {"path": "k.cubin"}, {"name_expressions": ["f<1>"]}, {"backend": "nvcc"}, {"jitify": True},
    {"enable_cooperative_groups": True},
])
def test_unsupported_constructor_arguments(kwargs):
    with pytest.raises(ValueError, match="not supported by the CUDA emulator"):
        RawModule(code=SOURCE, **kwargs)


def test_unknown_kernel_names_the_ones_found(module):
    with pytest.raises(ValueError, match=r"no extern \"C\" __global__ kernel named 'nope'.*axpy"):
        module.get_function("nope")
    with pytest.raises(ValueError, match="not_a_kernel"):
        RawKernel(SOURCE, "not_a_kernel", options=("-DVALUE=1",)).compile()


def test_kernels_removed_by_the_preprocessor_are_not_exported(module):
    assert module.get_function("generated") is module.get_function("generated")
    other = RawModule(code=SOURCE, options=("-DVALUE=1", "-DDROP_KEPT"))
    with pytest.raises(ValueError, match="no extern .* named 'kept'"):
        other.get_function("kept")


def test_compile_errors_name_the_source_line():
    code = 'extern "C" __global__ void k(int* x) {\n    x[0] = undefined_name;\n}\n'
    with pytest.raises(EmulatorCompileError, match=r"broken\.cu:2") as info:
        RawKernel(code, "k", source_name="broken.cu").compile()
    assert "undefined_name" in info.value.stderr


def test_activemask_is_a_compile_error_that_says_why():
    code = 'extern "C" __global__ void k(unsigned* out) { out[0] = __activemask(); }\n'
    with pytest.raises(EmulatorCompileError, match=r"__activemask\(\) is not emulated"):
        RawKernel(code, "k").compile()


def test_file_scope_extern_shared_is_refused():
    code = 'extern __shared__ float smem[];\nextern "C" __global__ void k(float* x) { x[0] = smem[0]; }\n'
    with pytest.raises(ValueError, match=r"scope\.cu:1: extern __shared__ declared at file scope"):
        RawKernel(code, "k", source_name="scope.cu").compile()


def test_exceptions_are_runtime_errors():
    assert issubclass(KernelError, RuntimeError) and issubclass(EmulatorCompileError, RuntimeError)
    assert set(emulator.__all__) >= {"RawKernel", "RawModule", "KernelError"}


# ---------------------------------------------------------------- argument checks

def _axpy_args(**change):
    args = {"a": np.float32(2), "x": np.zeros(8, np.float32), "y": np.zeros(8, np.float32),
            "n": np.int32(8)}
    args.update(change)
    return tuple(args.values())


@pytest.mark.parametrize("change, error, pattern", [
    ({"a": 2.0}, TypeError, (r"argument 0 \(`float a`\): expected a np.float32 scalar, got a "
                            r"Python float \(on a GPU CuPy passes a Python float as a double")),
    ({"a": np.float64(2)}, TypeError, r"argument 0 .*got a NumPy float64 scalar"),
    ({"n": 8}, TypeError, r"argument 3 \(`int n`\): expected a np.int32 scalar, got a Python int"),
    ({"n": np.array(8, np.int32)}, TypeError, r"argument 3 .*got a 0-d array"),
    ({"x": [0.0] * 8}, TypeError, (r"argument 1 \(`const float\* __restrict__ x`\): expected a "
                                  r"NumPy array for a pointer parameter, got list")),
    ({"x": np.zeros(8)}, TypeError, (r"argument 1 .*expected an array of dtype float32 for "
                                    r"float\*, got float64")),
    ({"y": np.zeros(16, np.float32)[::2]}, ValueError, r"argument 2 .*C-contiguous"),
])
def test_argument_checks(module, change, error, pattern):
    with pytest.raises(error, match=pattern):
        module.get_function("axpy")(1, 8, _axpy_args(**change))


def test_non_const_pointers_need_writable_arrays(module):
    axpy = module.get_function("axpy")
    frozen = np.zeros(8, np.float32)
    frozen.flags.writeable = False
    axpy(1, 8, _axpy_args(x=frozen))  # const float*: fine
    with pytest.raises(ValueError, match=r"argument 2 .*non-const pointer.*read-only"):
        axpy(1, 8, _axpy_args(y=frozen))


def test_argument_count_and_container(module):
    axpy = module.get_function("axpy")
    with pytest.raises(TypeError, match=r"takes 4 arguments, got 3"):
        axpy(1, 8, _axpy_args()[:3])
    with pytest.raises(TypeError, match=r"args: expected a tuple"):
        axpy(1, 8, list(_axpy_args()))


def test_unsupported_parameter_types(module):
    with pytest.raises(TypeError, match=r"argument 0 \(`Pair p`\): unsupported parameter type Pair"):
        module.get_function("takes_struct")(1, 1, (np.zeros(2, np.int32), np.zeros(2, np.float32)))


def test_half_parameters_take_float16_and_bfloat16_takes_uint16(module):
    halves = module.get_function("halves")
    with pytest.raises(TypeError, match=r"dtype float16 for __half\*, got float32"):
        halves(1, 1, (np.zeros(1, np.float32), np.zeros(1, np.uint16), np.zeros(1), np.int32(1)))
    with pytest.raises(TypeError, match=r"dtype uint16 for __nv_bfloat16\*, got float16"):
        halves(1, 1, (np.zeros(1, np.float16), np.zeros(1, np.float16), np.zeros(1), np.int32(1)))


@pytest.mark.parametrize("grid, block, error, pattern", [
    (1, 1025, ValueError, r"block: \(1025, 1, 1\) exceeds"),
    (1, (1, 1, 65), ValueError, r"block: .*z <= 64"),
    (1, (32, 32, 2), ValueError, r"block: .*2048 threads; CUDA allows at most 1024"),
    (1, 0, ValueError, r"block: every dimension must be at least 1"),
    ((1, 65536), 1, ValueError, r"grid: .*y, z <= 65535"),
    (2**31, 1, ValueError, r"grid: .*x <= 2\*\*31-1"),
    ((1, 1, 1, 1), 1, TypeError, r"grid: expected an int or a tuple of 1 to 3 ints"),
    (1, 2.0, TypeError, r"block: expected an int"),
    (1, [4], TypeError, r"block: expected an int"),
])
def test_grid_and_block_are_validated(module, grid, block, error, pattern):
    with pytest.raises(error, match=pattern):
        module.get_function("macros")(grid, block, (np.zeros(1, np.int32),))


def test_dynamic_shared_memory_limit_is_an_attribute(module):
    kernel = module.get_function("dynamic")
    assert kernel.max_dynamic_shared_size_bytes == 48 * 1024
    out = np.zeros(64, np.float32)
    with pytest.raises(ValueError, match=r"shared_mem: 65536 bytes exceeds .*max_dynamic_shared_"
                                         r"size_bytes \(49152\); raise that attribute"):
        kernel(1, 64, (out,), shared_mem=64 * 1024)
    kernel.max_dynamic_shared_size_bytes = 227 * 1024
    kernel(1, 64, (out,), shared_mem=227 * 1024)
    with pytest.raises(ValueError, match=r"outside \[0, 232448\]"):
        kernel.max_dynamic_shared_size_bytes = 227 * 1024 + 1
    with pytest.raises(ValueError, match=r"shared_mem: expected at least 0"):
        kernel(1, 64, (out,), shared_mem=-1)


def test_environment_settings_are_checked(module, monkeypatch):
    out = np.zeros(1, np.int32)
    macros = module.get_function("macros")
    for name, value in [("ATTNSPEC_EMULATOR_WORKERS", "zero"), ("ATTNSPEC_EMULATOR_WORKERS", "0"),
                        ("ATTNSPEC_EMULATOR_STACK_KB", "4"), ("ATTNSPEC_EMULATOR_SEED", "x")]:
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(ValueError, match=name):
                macros(1, 1, (out,))


# ---------------------------------------------------------------- the cache

CACHED = 'extern "C" __global__ void k(int* out) { out[0] = VALUE + EXTRA; }\n'


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """An empty cache and memo, a copy of include/ to edit, and a count of g++ runs."""
    monkeypatch.setenv("ATTNSPEC_CACHE_DIR", str(tmp_path / "cache"))
    include = tmp_path / "include"
    shutil.copytree(_build.INCLUDE_DIR, include)
    monkeypatch.setattr(_build, "INCLUDE_DIR", include)
    monkeypatch.setattr(_build, "_loaded", {})
    compiles = []
    real = _build._compile

    def counting(*args, **kwargs):
        compiles.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(_build, "_compile", counting)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "extra.h").write_text("#define EXTRA 10\n")
    return tmp_path, compiles


def _run_cached(options) -> int:
    out = np.zeros(1, np.int32)
    RawKernel('#include "extra.h"\n' + CACHED, "k", options=options)(1, 1, (out,))
    return int(out[0])


def test_cache_hits_changed_flags_and_headers(private_cache):
    tmp, compiles = private_cache
    options = ("-DVALUE=1", f"-I{tmp / 'user'}")
    assert _run_cached(options) == 11 and len(compiles) == 1
    _build.forget_loaded()
    assert _run_cached(options) == 11 and len(compiles) == 1  # from disk, no g++
    assert _run_cached(("-DVALUE=2", f"-I{tmp / 'user'}")) == 12 and len(compiles) == 2
    (tmp / "user" / "extra.h").write_text("#define EXTRA 20\n")  # a user header changed
    assert _run_cached(options) == 21 and len(compiles) == 3
    with open(_build.INCLUDE_DIR / "attnspec_emu.h", "a") as f:
        f.write("\n// an edit\n")
    _build.forget_loaded()
    assert _run_cached(options) == 21 and len(compiles) == 4


def test_cache_files_are_complete_objects(private_cache):
    tmp, _ = private_cache
    _run_cached(("-DVALUE=1", f"-I{tmp / 'user'}"))
    names = sorted(p.name for p in (tmp / "cache" / "emulator").iterdir())
    assert not [n for n in names if n.startswith(".tmp")]
    assert [n.endswith(".so") for n in names].count(True) == 1
