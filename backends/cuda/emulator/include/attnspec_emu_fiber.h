// Fibers for the CUDA emulator: a context switch and stacks with guard pages.
//
// Every CUDA thread of a block runs as a fiber on the worker thread that runs the block.
// A fiber gives up the processor only at a barrier or warp collective, so switching is
// cooperative and needs no locks: only what the SysV x86-64 ABI says a called function
// must preserve is saved (rbx, rbp, r12-r15, rsp, and the MXCSR and x87 control words);
// everything else is already saved by the caller of the switch, as for any call. That
// makes a switch about a dozen instructions. Elsewhere (or with -DATTNSPEC_EMU_UCONTEXT)
// the portable ucontext switch is used, which is about ten times slower because
// swapcontext also saves the signal mask with a system call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__) && !defined(ATTNSPEC_EMU_UCONTEXT)
#define ATTNSPEC_EMU_ASM_SWITCH 1
#else
#define ATTNSPEC_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

namespace attnspec_emu {

using FiberEntry = void (*)(void*);

#if ATTNSPEC_EMU_ASM_SWITCH

// A suspended context is just its stack pointer: the switch pushed everything else.
struct Context {
    void* sp;
};

extern "C" {
// Saves the caller's context into *save_sp and resumes the one saved at next_sp.
__attribute__((visibility("hidden"))) void attnspec_emu_switch(void** save_sp, void* next_sp);
// First code a new fiber runs: calls entry (r13) with its argument (r12); never returns.
__attribute__((visibility("hidden"))) void attnspec_emu_fiber_start();
}

// The frame attnspec_emu_switch pops, from its saved stack pointer upwards:
// [MXCSR:4 FCW:2 pad:2] r15 r14 r13 r12 rbx rbp return-address.
// It resumes with `pop; jmp` rather than `ret`: a `ret` would be predicted by the return
// stack buffer to go back to this call site, but it lands where the *other* fiber called
// the switch, a misprediction on every switch whenever a kernel has two barrier sites
// (measured: 1.5 against 0.66 µs per 64-thread barrier). The indirect jump is predicted
// from its history instead, and fibers of one pass mostly resume at the same site.
asm(R"(
    .text
    .p2align 4
    .globl attnspec_emu_switch
    .hidden attnspec_emu_switch
    .type attnspec_emu_switch, @function
attnspec_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    popq %rax
    jmpq *%rax
    .size attnspec_emu_switch, .-attnspec_emu_switch

    .p2align 4
    .globl attnspec_emu_fiber_start
    .hidden attnspec_emu_fiber_start
    .type attnspec_emu_fiber_start, @function
attnspec_emu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size attnspec_emu_fiber_start, .-attnspec_emu_fiber_start
)");

inline void switch_context(Context* from, Context* to) { attnspec_emu_switch(&from->sp, to->sp); }

// Lays out a frame at the top of [stack, stack + size) that attnspec_emu_switch resumes
// into attnspec_emu_fiber_start, with the caller's floating-point control words.
inline void init_context(Context* ctx, char* stack, std::size_t size, FiberEntry entry, void* arg) {
    auto top = reinterpret_cast<std::uintptr_t>(stack + size) & ~std::uintptr_t{15};
    // The return address sits at top - 8, so after `ret` rsp == top is 16-byte aligned
    // at the trampoline's call, as the ABI requires.
    auto* frame = reinterpret_cast<std::uint64_t*>(top - 64);
    std::uint32_t mxcsr;
    std::uint16_t fcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fcw));
    frame[0] = std::uint64_t{mxcsr} | (std::uint64_t{fcw} << 32);
    frame[1] = 0;                                           // r15
    frame[2] = 0;                                           // r14
    frame[3] = reinterpret_cast<std::uint64_t>(entry);      // r13
    frame[4] = reinterpret_cast<std::uint64_t>(arg);        // r12
    frame[5] = 0;                                           // rbx
    frame[6] = 0;                                           // rbp
    frame[7] = reinterpret_cast<std::uint64_t>(&attnspec_emu_fiber_start);
    ctx->sp = frame;
}

#else  // ucontext fallback

struct Context {
    ucontext_t uc;
};

inline void switch_context(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }

// makecontext passes int arguments only, so the entry and its argument travel as halves.
inline void ucontext_trampoline(unsigned e_hi, unsigned e_lo, unsigned a_hi, unsigned a_lo) {
    auto join = [](unsigned hi, unsigned lo) {
        return (static_cast<std::uintptr_t>(hi) << 16 << 16) | lo;
    };
    reinterpret_cast<FiberEntry>(join(e_hi, e_lo))(reinterpret_cast<void*>(join(a_hi, a_lo)));
    __builtin_trap();  // an entry never returns: it switches away for good
}

inline void init_context(Context* ctx, char* stack, std::size_t size, FiberEntry entry, void* arg) {
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = stack;
    ctx->uc.uc_stack.ss_size = size;
    ctx->uc.uc_link = nullptr;
    auto e = reinterpret_cast<std::uintptr_t>(entry);
    auto a = reinterpret_cast<std::uintptr_t>(arg);
    makecontext(&ctx->uc, reinterpret_cast<void (*)()>(&ucontext_trampoline), 4,
                static_cast<unsigned>(e >> 16 >> 16), static_cast<unsigned>(e),
                static_cast<unsigned>(a >> 16 >> 16), static_cast<unsigned>(a));
}

#endif

// Fiber stacks of one worker: `count` slots of `stack_bytes` each, every slot preceded
// by an inaccessible guard page so that an overflow faults instead of silently writing
// into the neighbour's stack. Reserved without backing memory (MAP_NORESERVE): a fiber
// only costs the pages it touches.
struct StackArena {
    char* base = nullptr;
    std::size_t mapped = 0;
    std::size_t slot = 0;        // guard page + stack
    std::size_t stack_bytes = 0;
    unsigned count = 0;

    char* stack(unsigned i) const { return base + i * slot + (slot - stack_bytes); }

    // True when p lies in one of the guard pages (where an overflowing stack faults).
    bool is_guard(const char* p) const {
        if (base == nullptr || p < base || p >= base + mapped) return false;
        return static_cast<std::size_t>(p - base) % slot < slot - stack_bytes;
    }

    // True when the arena holds at least `n` stacks of `bytes` (rounded up to pages).
    bool reserve(unsigned n, std::size_t bytes) {
        const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        bytes = (bytes + page - 1) / page * page;
        if (n <= count && bytes == stack_bytes) return true;
        release();
        const std::size_t total = n * (bytes + page);
        const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
        void* p = mmap(nullptr, total, PROT_NONE, flags, -1, 0);
        if (p == MAP_FAILED) return false;
        base = static_cast<char*>(p);
        mapped = total;
        slot = bytes + page;
        stack_bytes = bytes;
        count = n;
        for (unsigned i = 0; i < n; ++i) {
            if (mprotect(stack(i), bytes, PROT_READ | PROT_WRITE) != 0) {
                release();
                return false;
            }
        }
        return true;
    }

    void release() {
        if (base != nullptr) munmap(base, mapped);
        base = nullptr;
        mapped = slot = stack_bytes = 0;
        count = 0;
    }
};

}  // namespace attnspec_emu
