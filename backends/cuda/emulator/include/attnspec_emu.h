// attnspec CUDA emulator: what a CUDA C source needs to compile with g++ and run on the
// CPU with CUDA semantics. The emulator's Python side compiles every kernel source as
//
//     #include "attnspec_emu.h"
//     #line 1 "<source name>"
//     <the source, unchanged but for extern __shared__ declarations>
//     #line 1 "<attnspec-emu-exports>"
//     ATTNSPEC_EMU_EXPORT(kernel) ...          // one per extern "C" __global__ kernel
//     ATTNSPEC_EMU_MANIFEST("...")             // the kernels' names and parameters
//
// Numeric types and functions (vector types, __half, math, atomics) come from
// attnspec_emu_numeric.h; fibers and the scheduler from the two headers below; this one
// maps the CUDA language onto them: qualifiers, builtin variables, barriers and warp
// collectives, assert, and the entry points the Python launcher calls.
#pragma once

#include "attnspec_emu_numeric.h"

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <source_location>
#include <type_traits>
#include <utility>

#include "attnspec_emu_runtime.h"

#define ATTNSPEC_EMULATOR 1

// ------------------------------------------------------------------ qualifiers

// While the Python side looks for kernels in the preprocessed source (g++ -E), __global__
// stays as it is written, so that kernels can be told from other functions.
#ifndef ATTNSPEC_EMU_FIND_KERNELS
#define __global__
#endif
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif
// Constant memory is one plain global shared by every block, initialised where it is
// defined (the host cannot set it: there is no cudaMemcpyToSymbol).
#define __constant__
// Static shared memory is per worker thread, and a worker runs one block at a time: that
// is per block, as on the GPU. `thread_local` at function scope is also static.
#define __shared__ thread_local

// ------------------------------------------------------------------ builtin variables

// Read-only views of the running fiber's indices, with CUDA's types (uint3, dim3).
#define threadIdx (static_cast<const ::uint3&>(::attnspec_emu::fiber()->thread_idx))
#define blockIdx (static_cast<const ::uint3&>(::attnspec_emu::fiber()->worker->block_idx))
#define blockDim (static_cast<const ::dim3&>(::attnspec_emu::fiber()->worker->launch->block))
#define gridDim (static_cast<const ::dim3&>(::attnspec_emu::fiber()->worker->launch->grid))
inline constexpr int warpSize = 32;

namespace attnspec_emu {

// The start of the block's dynamic shared memory (what `extern __shared__ T name[];`
// declarations are rewritten to point at).
inline void* dynamic_shared() { return fiber()->worker->dynamic_shared; }

using Where = std::source_location;

// ------------------------------------------------------------------ block barriers

inline std::uint64_t block_barrier(Op op, int value, const Where& where) {
    Fiber* f = fiber();
    f->op = op;
    f->file = where.file_name();
    f->line = static_cast<int>(where.line());
    f->value = value != 0;
    f->state = State::kAtBlockBarrier;
    ++f->worker->at_block_barrier;
    yield(f);
    return f->result;
}

// ------------------------------------------------------------------ warp collectives

// Checks what CUDA requires of every warp collective's mask at the call: it names the
// caller and only lanes that exist (a partial last warp has fewer than 32).
inline void check_mask(Fiber* f, Op op, unsigned mask, const Where& where) {
    const unsigned lane = f->linear % 32;
    if (!(mask >> lane & 1u))
        fail("invalid collective", where.file_name(), static_cast<int>(where.line()),
             "%s with mask 0x%08x, which does not name the calling lane %u", op_name(op), mask,
             lane);
    const unsigned first = f->linear - lane;
    const unsigned n = f->worker->launch->nthreads;
    const unsigned exists = n - first >= 32 ? 0xffffffffu : (1u << (n - first)) - 1u;
    if (mask & ~exists)
        fail("inactive lane", where.file_name(), static_cast<int>(where.line()),
             "%s with mask 0x%08x names lanes that do not exist: warp %u has only %u threads "
             "(valid lanes 0x%08x)",
             op_name(op), mask, first / 32, n - first, exists);
}

inline std::uint64_t warp_collective(Op op, unsigned mask, std::uint64_t value, long long arg,
                                     int width, const Where& where) {
    Fiber* f = fiber();
    check_mask(f, op, mask, where);
    if (is_shuffle(op) && (width < 1 || width > 32 || (width & (width - 1)) != 0))
        fail("invalid collective", where.file_name(), static_cast<int>(where.line()),
             "%s with width %d; the width must be a power of 2 from 1 to 32", op_name(op), width);
    f->op = op;
    f->file = where.file_name();
    f->line = static_cast<int>(where.line());
    f->mask = mask;
    f->value = value;
    f->arg = arg;
    f->width = width;
    f->state = State::kAtWarpCollective;
    ++f->worker->at_warp;
    yield(f);
    return f->result;
}

// Shuffles move the bits of any trivially copyable value of up to 8 bytes (int, float,
// double, __half2, ...), as CUDA's overloads do for its types.
template <class T>
std::uint64_t bits_of(const T& v) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                  "warp shuffles and matches take values of at most 8 bytes");
    std::uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}

template <class T>
T from_bits(std::uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

template <class T>
T shuffle(Op op, unsigned mask, T var, long long arg, int width, const Where& where) {
    return from_bits<T>(warp_collective(op, mask, bits_of(var), arg, width, where));
}

}  // namespace attnspec_emu

inline void __syncthreads(const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    attnspec_emu::block_barrier(attnspec_emu::Op::kSyncthreads, 0, w);
}
inline int __syncthreads_count(int pred,
                               const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    using attnspec_emu::Op;
    return static_cast<int>(attnspec_emu::block_barrier(Op::kSyncthreadsCount, pred, w));
}
inline int __syncthreads_and(int pred,
                             const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    using attnspec_emu::Op;
    return static_cast<int>(attnspec_emu::block_barrier(Op::kSyncthreadsAnd, pred, w));
}
inline int __syncthreads_or(int pred,
                            const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    using attnspec_emu::Op;
    return static_cast<int>(attnspec_emu::block_barrier(Op::kSyncthreadsOr, pred, w));
}

inline void __syncwarp(unsigned mask = 0xffffffffu,
                       const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    attnspec_emu::warp_collective(attnspec_emu::Op::kSyncwarp, mask, 0, 0, 0, w);
}

template <class T>
T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,
              const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    return attnspec_emu::shuffle(attnspec_emu::Op::kShfl, mask, var, srcLane, width, w);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    return attnspec_emu::shuffle(attnspec_emu::Op::kShflUp, mask, var, delta, width, w);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    return attnspec_emu::shuffle(attnspec_emu::Op::kShflDown, mask, var, delta, width, w);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                  const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    return attnspec_emu::shuffle(attnspec_emu::Op::kShflXor, mask, var, laneMask, width, w);
}

inline unsigned __ballot_sync(unsigned mask, int pred,
                              const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    return static_cast<unsigned>(
        attnspec_emu::warp_collective(attnspec_emu::Op::kBallot, mask, pred != 0, 0, 0, w));
}
inline int __any_sync(unsigned mask, int pred,
                      const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    return static_cast<int>(
        attnspec_emu::warp_collective(attnspec_emu::Op::kAny, mask, pred != 0, 0, 0, w));
}
inline int __all_sync(unsigned mask, int pred,
                      const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    return static_cast<int>(
        attnspec_emu::warp_collective(attnspec_emu::Op::kAll, mask, pred != 0, 0, 0, w));
}

#define ATTNSPEC_EMU_REDUCE(name, T, op)                                                     \
    inline T name(unsigned mask, T value,                                                    \
                  const attnspec_emu::Where& w = attnspec_emu::Where::current()) {           \
        return static_cast<T>(attnspec_emu::warp_collective(                                 \
            attnspec_emu::Op::op, mask, static_cast<std::uint32_t>(value), 0, 0, w));        \
    }
ATTNSPEC_EMU_REDUCE(__reduce_add_sync, int, kReduceAdd)
ATTNSPEC_EMU_REDUCE(__reduce_add_sync, unsigned, kReduceAdd)
ATTNSPEC_EMU_REDUCE(__reduce_min_sync, int, kReduceMinS)
ATTNSPEC_EMU_REDUCE(__reduce_min_sync, unsigned, kReduceMinU)
ATTNSPEC_EMU_REDUCE(__reduce_max_sync, int, kReduceMaxS)
ATTNSPEC_EMU_REDUCE(__reduce_max_sync, unsigned, kReduceMaxU)
ATTNSPEC_EMU_REDUCE(__reduce_and_sync, unsigned, kReduceAnd)
ATTNSPEC_EMU_REDUCE(__reduce_or_sync, unsigned, kReduceOr)
ATTNSPEC_EMU_REDUCE(__reduce_xor_sync, unsigned, kReduceXor)
#undef ATTNSPEC_EMU_REDUCE

template <class T>
unsigned __match_any_sync(unsigned mask, T value,
                          const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    return static_cast<unsigned>(attnspec_emu::warp_collective(
        attnspec_emu::Op::kMatchAny, mask, attnspec_emu::bits_of(value), 0, 0, w));
}
template <class T>
unsigned __match_all_sync(unsigned mask, T value, int* pred,
                          const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    const std::uint64_t r = attnspec_emu::warp_collective(
        attnspec_emu::Op::kMatchAll, mask, attnspec_emu::bits_of(value), 0, 0, w);
    *pred = static_cast<int>(r >> 32);
    return static_cast<unsigned>(r);
}

// __activemask() is deliberately absent: its value is the set of lanes the hardware happens
// to run together, which the emulator's scheduler does not define. Say so at compile time.
template <class T = void>
unsigned __activemask() {
    static_assert(!std::is_same_v<T, T>,
                  "__activemask() is not emulated: which lanes run together is not defined by "
                  "the emulator's scheduler; pass an explicit mask (e.g. from __ballot_sync)");
    return 0;
}

// __ldg loads through the GPU's read-only data cache; here a load is a load.
template <class T>
inline T __ldg(const T* p) {
    return *p;
}

// ------------------------------------------------------------------ assert and trap

// glibc's assert() calls __assert_fail; defining it here (hidden, so only this module's
// calls bind to it) turns a failed assert in a kernel into a KernelError instead of
// aborting the Python process, whatever the order the source includes <assert.h> in.
extern "C" [[noreturn]] void __assert_fail(const char* assertion, const char* file,
                                           unsigned int line, const char*) noexcept {
    if (attnspec_emu::fiber() == nullptr) __builtin_trap();  // not in a kernel
    attnspec_emu::fail("assertion failed", file, static_cast<int>(line), "assert(%s) failed",
                       assertion);
}

[[noreturn]] inline void __trap(const attnspec_emu::Where& w = attnspec_emu::Where::current()) {
    attnspec_emu::fail("trap", w.file_name(), static_cast<int>(w.line()), "__trap() called");
}

// ------------------------------------------------------------------ exports

namespace attnspec_emu {

// Calls kernel K with arguments unpacked from `args` (one pointer per parameter, to a
// value of the parameter's type), as cuLaunchKernel does.
template <class... A, std::size_t... I>
void call_unpacked(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cvref_t<A>*>(args[I])...);
}

template <class... A>
constexpr std::size_t arity(void (*)(A...)) {
    return sizeof...(A);
}

template <auto K>
void invoke(void** args) {
    call_unpacked(K, args, std::make_index_sequence<arity(K)>{});
}

// The compiler's spelling of T, cut out of __PRETTY_FUNCTION__ ("... [with T = float]").
template <class T>
void append_type_name(char*& out, const char* end) {
    const char* s = std::strstr(__PRETTY_FUNCTION__, "T = ") + 4;
    for (; *s && *s != ']' && *s != ';' && out < end; ++s) *out++ = *s;
}

inline void append(char*& out, const char* end, const char* s) {
    for (; *s && out < end; ++s) *out++ = *s;
}

// One entry per parameter, separated by ';': "pointer|const|type" for pointers (type is
// the pointee's, cv-stripped) and "scalar||type" otherwise, e.g.
// "pointer|const|float;pointer||__half;scalar||int".
template <class A>
void describe(char*& out, const char* end, bool first) {
    using P = std::remove_cvref_t<A>;
    if (!first) append(out, end, ";");
    if constexpr (std::is_pointer_v<P>) {
        using Pointee = std::remove_pointer_t<P>;
        append(out, end, std::is_const_v<Pointee> ? "pointer|const|" : "pointer||");
        append_type_name<std::remove_cv_t<Pointee>>(out, end);
    } else {
        append(out, end, "scalar||");
        append_type_name<P>(out, end);
    }
}

struct SignatureText {
    char text[8192];
};

template <class... A>
SignatureText describe_all() {
    SignatureText s{};
    char* out = s.text;
    const char* end = s.text + sizeof s.text - 1;
    bool first = true;
    ((describe<A>(out, end, first), first = false), ...);
    if (out == s.text) *out++ = '-';  // no parameters
    *out = 0;
    return s;
}

template <class... A>
const char* signature(void (*)(A...)) {
    static const SignatureText s = describe_all<A...>();  // initialised once, thread-safely
    return s.text;
}

}  // namespace attnspec_emu

// The kernel is named from the global namespace (where extern "C" kernels live), so that
// a kernel called like one of the wrapper's own names is still the one exported.
#define ATTNSPEC_EMU_EXPORT(name)                                                            \
    extern "C" __attribute__((visibility("default"))) const char*                            \
    attnspec_emu_signature__##name() {                                                       \
        return ::attnspec_emu::signature(&::name);                                           \
    }                                                                                        \
    extern "C" __attribute__((visibility("default"))) int attnspec_emu_launch__##name(       \
        const unsigned* attnspec_emu_dims, unsigned long long attnspec_emu_shared_mem,       \
        unsigned long long attnspec_emu_seed, int attnspec_emu_seeded,                       \
        int attnspec_emu_workers, unsigned long long attnspec_emu_stack_bytes,               \
        void** attnspec_emu_args, ::attnspec_emu::ErrorInfo* attnspec_emu_error) {           \
        return ::attnspec_emu::launch(&::attnspec_emu::invoke<&::name>, attnspec_emu_dims,   \
                                      attnspec_emu_shared_mem, attnspec_emu_seed,            \
                                      attnspec_emu_seeded, attnspec_emu_workers,             \
                                      attnspec_emu_stack_bytes, attnspec_emu_args,           \
                                      attnspec_emu_error);                                   \
    }

// The module's own description, written by the Python side: JSON of [kernel name,
// [parameter declarations as written]] pairs.
#define ATTNSPEC_EMU_MANIFEST(json)                                                          \
    extern "C" __attribute__((visibility("default"))) const char* attnspec_emu_manifest() { \
        return json;                                                                         \
    }
