// The emulator's scheduler: blocks on worker threads, CUDA threads as fibers,
// barriers and warp collectives as points where fibers wait for each other.
//
// One block runs at a time per worker. The scheduler runs the block in passes: each
// runnable fiber runs until it waits (at a barrier or collective) or exits, and passes
// control directly to the next fiber of the pass; the last one returns to the
// scheduler. Between passes the scheduler completes what can complete (a block barrier
// when every live thread waits at it, a warp collective when every lane named in its
// mask waits at it) and makes those fibers runnable again; when nothing can complete it
// names the error. Errors are recorded in the launch (first one wins) and stop it.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <pthread.h>
#include <signal.h>

#include "attnspec_emu_fiber.h"

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

namespace attnspec_emu {

enum class State : unsigned char { kRunnable, kAtBlockBarrier, kAtWarpCollective, kExited };

// Every barrier and collective; the first four are block-wide, the rest warp-wide.
enum class Op : unsigned char {
    kSyncthreads, kSyncthreadsCount, kSyncthreadsAnd, kSyncthreadsOr,
    kSyncwarp, kShfl, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll,
    kReduceAdd, kReduceMinS, kReduceMinU, kReduceMaxS, kReduceMaxU,
    kReduceAnd, kReduceOr, kReduceXor, kMatchAny, kMatchAll,
};

inline const char* op_name(Op op) {
    static const char* const names[] = {
        "__syncthreads", "__syncthreads_count", "__syncthreads_and", "__syncthreads_or",
        "__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
        "__ballot_sync", "__any_sync", "__all_sync",
        "__reduce_add_sync", "__reduce_min_sync", "__reduce_min_sync", "__reduce_max_sync",
        "__reduce_max_sync", "__reduce_and_sync", "__reduce_or_sync", "__reduce_xor_sync",
        "__match_any_sync", "__match_all_sync",
    };
    return names[static_cast<int>(op)];
}

inline bool is_shuffle(Op op) { return op >= Op::kShfl && op <= Op::kShflXor; }

// What Python reads back after a failed launch (mirrored by a ctypes Structure).
struct ErrorInfo {
    char kind[64];
    char file[512];
    int line;
    unsigned block[3];
    unsigned thread[3];
    char detail[2048];
};

struct Worker;

struct Fiber {
    Context ctx;
    uint3 thread_idx;
    unsigned linear;     // x + y·Dx + z·Dx·Dy; lane = linear % 32, warp = linear / 32
    Worker* worker;
    State state;
    Op op;               // while waiting: the barrier or collective, where it was called
    int line;
    const char* file;
    unsigned mask;       // warp collectives: the participating lanes
    int width;           // shuffles: segment width
    long long arg;       // shuffles: source lane, delta or lane mask
    std::uint64_t value;   // the thread's operand (bits of a value, or a predicate)
    std::uint64_t result;  // what the collective returns to this thread
};

struct Launch {
    void (*invoke)(void**);
    void** args;
    dim3 grid, block;
    unsigned long long nblocks;
    unsigned nthreads;
    std::size_t shared_mem;
    std::size_t stack_bytes;
    bool seeded;
    std::uint64_t seed;
    unsigned long long* order;    // block order when seeded, else null (identity)
    unsigned long long next;      // next position in the block order (atomic)
    int failed;                   // set once by the first error (atomic)
    ErrorInfo* error;
};

struct Worker {
    Context scheduler;
    Launch* launch = nullptr;
    Worker* next_free = nullptr;
    Fiber* fibers = nullptr;
    unsigned* runlist = nullptr;
    unsigned capacity = 0;
    StackArena stacks;
    unsigned char* dynamic_shared = nullptr;
    std::size_t dynamic_capacity = 0;
    uint3 block_idx;
    unsigned run_len = 0, run_pos = 0;
    unsigned live = 0;              // fibers not exited
    unsigned at_block_barrier = 0;  // fibers waiting at a block barrier
    unsigned at_warp = 0;           // fibers waiting at a warp collective
    bool aborted = false;           // a fiber reported an error during this pass
    char* altstack = nullptr;       // where the SIGSEGV handler runs (see on_segv)
    std::size_t altstack_bytes = 0;
    std::uint64_t rng = 0;
};

// The fiber running on this worker thread. Kernel code reaches every builtin through it;
// a fiber never migrates between threads (its stack belongs to one worker), so the TLS
// address the compiler computes once per function stays right across switches.
static thread_local Fiber* current_fiber = nullptr;

inline Fiber* fiber() { return current_fiber; }

// ------------------------------------------------------------------ errors

inline bool claim_failure(Launch* launch) {
    int expected = 0;
    return __atomic_compare_exchange_n(&launch->failed, &expected, 1, false, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

// Records the launch's error unless another one was recorded first.
inline void record(Launch* launch, const char* kind, const char* file, int line, uint3 block,
                   uint3 thread, const char* fmt, va_list ap) {
    if (!claim_failure(launch)) return;
    ErrorInfo* e = launch->error;
    std::snprintf(e->kind, sizeof e->kind, "%s", kind);
    std::snprintf(e->file, sizeof e->file, "%s", file ? file : "");
    e->line = line;
    e->block[0] = block.x, e->block[1] = block.y, e->block[2] = block.z;
    e->thread[0] = thread.x, e->thread[1] = thread.y, e->thread[2] = thread.z;
    std::vsnprintf(e->detail, sizeof e->detail, fmt, ap);
}

__attribute__((format(printf, 7, 8))) inline void report(
        Launch* launch, const char* kind, const char* file, int line, uint3 block, uint3 thread,
        const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    record(launch, kind, file, line, block, thread, fmt, ap);
    va_end(ap);
}

// Called on a fiber: record the error and return to the scheduler for good. The fiber's
// stack is abandoned and reused by the next block, so destructors of its frames never run.
[[noreturn]] __attribute__((format(printf, 4, 5))) inline void fail(
        const char* kind, const char* file, int line, const char* fmt, ...) {
    Fiber* f = current_fiber;
    Worker* w = f->worker;
    va_list ap;
    va_start(ap, fmt);
    record(w->launch, kind, file, line, w->block_idx, f->thread_idx, fmt, ap);
    va_end(ap);
    w->aborted = true;
    current_fiber = nullptr;
    switch_context(&f->ctx, &w->scheduler);
    __builtin_unreachable();
}

// ------------------------------------------------------------------ stack overflow
//
// A fiber that overflows its stack touches the guard page below it (g++'s
// -fstack-clash-protection probes every page of a large frame, so no frame jumps over
// the guard into a neighbour's stack). The SIGSEGV handler, which runs on the worker's
// alternate signal stack, turns that fault into a KernelError: it records the error and
// switches to the worker's scheduler for good, abandoning the fiber as fail() does
// (SA_NODEFER leaves SIGSEGV unblocked after that jump). Any other fault is not ours:
// the handler reinstalls the previous action and returns, so the fault repeats and
// reaches the previous handler (Python's faulthandler, or the default core dump).

inline pthread_mutex_t segv_lock = PTHREAD_MUTEX_INITIALIZER;
inline int segv_users = 0;  // launches running now; the handler is installed while > 0
inline struct sigaction previous_segv;

inline void on_segv(int, siginfo_t* info, void*) {
    Fiber* f = current_fiber;
    if (f != nullptr && f->worker->stacks.is_guard(static_cast<const char*>(info->si_addr))) {
        Worker* w = f->worker;
        report(w->launch, "stack overflow", nullptr, 0, w->block_idx, f->thread_idx,
               "thread (%u,%u,%u) of block (%u,%u,%u) overflowed its %zu KiB stack (large "
               "local arrays or deep recursion); set ATTNSPEC_EMULATOR_STACK_KB higher",
               f->thread_idx.x, f->thread_idx.y, f->thread_idx.z, w->block_idx.x,
               w->block_idx.y, w->block_idx.z, w->stacks.stack_bytes / 1024);
        w->aborted = true;
        current_fiber = nullptr;
        Context abandoned;  // the handler's frame is never resumed
        switch_context(&abandoned, &w->scheduler);
    }
    sigaction(SIGSEGV, &previous_segv, nullptr);
}

inline void install_segv_handler() {
    pthread_mutex_lock(&segv_lock);
    if (segv_users++ == 0) {
        struct sigaction action {};
        action.sa_sigaction = &on_segv;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&action.sa_mask);
        sigaction(SIGSEGV, &action, &previous_segv);
    }
    pthread_mutex_unlock(&segv_lock);
}

inline void remove_segv_handler() {
    pthread_mutex_lock(&segv_lock);
    if (--segv_users == 0) sigaction(SIGSEGV, &previous_segv, nullptr);
    pthread_mutex_unlock(&segv_lock);
}

// ------------------------------------------------------------------ scheduling

// Passes the processor to the next fiber of this pass, or back to the scheduler.
inline void yield(Fiber* f) {
    Worker* w = f->worker;
    if (w->run_pos < w->run_len) {
        Fiber* next = &w->fibers[w->runlist[w->run_pos++]];
        current_fiber = next;
        switch_context(&f->ctx, &next->ctx);
    } else {
        current_fiber = nullptr;
        switch_context(&f->ctx, &w->scheduler);
    }
}

inline void fiber_main(void* arg) {
    auto* f = static_cast<Fiber*>(arg);
    Worker* w = f->worker;
    w->launch->invoke(w->launch->args);
    f->state = State::kExited;
    --w->live;
    yield(f);
    __builtin_unreachable();  // an exited fiber is never resumed
}

inline std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

template <class T>
void shuffle(T* items, unsigned long long n, std::uint64_t& rng) {
    for (unsigned long long i = n; i > 1; --i) {
        unsigned long long j = splitmix64(rng) % i;
        T t = items[i - 1];
        items[i - 1] = items[j];
        items[j] = t;
    }
}

inline uint3 unflatten(unsigned long long i, dim3 d) {
    return uint3{static_cast<unsigned>(i % d.x), static_cast<unsigned>(i / d.x % d.y),
                 static_cast<unsigned>(i / d.x / d.y)};
}

inline bool same_site(const Fiber& a, const Fiber& b) {
    return a.op == b.op && a.line == b.line &&
           (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

// Completes a block barrier once every live thread waits at one. Returns false after
// reporting an error (exited threads, or threads at different barriers).
inline bool complete_block_barrier(Worker* w) {
    Launch* L = w->launch;
    Fiber* F = w->fibers;
    const Fiber* first = nullptr;
    unsigned exited = 0, first_exited = 0;
    std::uint64_t count = 0;
    for (unsigned i = 0; i < L->nthreads; ++i) {
        const Fiber& f = F[i];
        if (f.state == State::kExited) {
            if (exited++ == 0) first_exited = i;
            continue;
        }
        if (first == nullptr) {
            first = &f;
        } else if (!same_site(*first, f)) {
            report(L, "different barriers", first->file, first->line, w->block_idx,
                   first->thread_idx,
                   "%s waits here while thread (%u,%u,%u) waits at %s at %s:%d; every thread "
                   "of the block must reach the same barrier",
                   op_name(first->op), f.thread_idx.x, f.thread_idx.y, f.thread_idx.z,
                   op_name(f.op), f.file, f.line);
            return false;
        }
        count += f.value;
    }
    if (exited > 0) {
        uint3 t = F[first_exited].thread_idx;
        report(L, "barrier divergence", first->file, first->line, w->block_idx, first->thread_idx,
               "%u of %u threads wait at %s but %u have exited (the first: thread (%u,%u,%u)); "
               "every thread of the block must reach it",
               w->live, L->nthreads, op_name(first->op), exited, t.x, t.y, t.z);
        return false;
    }
    std::uint64_t result = 0;
    switch (first->op) {
        case Op::kSyncthreadsCount: result = count; break;
        case Op::kSyncthreadsAnd: result = count == w->live; break;
        case Op::kSyncthreadsOr: result = count != 0; break;
        default: break;
    }
    for (unsigned i = 0; i < L->nthreads; ++i) {
        if (F[i].state == State::kAtBlockBarrier) {
            F[i].result = result;
            F[i].state = State::kRunnable;
        }
    }
    w->at_block_barrier = 0;
    return true;
}

// The lane a shuffle reads for the thread in `lane`, or `lane` itself where CUDA returns
// the caller's own value (a source outside the caller's segment of `width` lanes).
inline unsigned shuffle_source(const Fiber& f, unsigned lane) {
    const long long width = f.width;
    const long long start = lane & ~static_cast<unsigned>(width - 1);
    const long long end = start + width - 1;
    const unsigned arg = static_cast<unsigned>(f.arg);  // CUDA's operands are 32-bit
    long long src = lane;
    switch (f.op) {
        case Op::kShfl: src = start + (arg & (width - 1)); break;
        case Op::kShflUp: src = lane - static_cast<long long>(arg); break;
        case Op::kShflDown: src = lane + static_cast<long long>(arg); break;
        case Op::kShflXor: src = lane ^ arg; break;
        default: break;
    }
    // Up may not leave the segment downwards; down and xor not upwards (xor may read an
    // earlier segment). The index form always stays inside.
    if (f.op == Op::kShflUp ? src < start : src > end) src = lane;
    return static_cast<unsigned>(src);
}

// Completes the warp collective `f` waits at if every lane of its mask waits at the same
// collective (call site) with the same mask; otherwise leaves it waiting. Returns false
// after reporting an error (a shuffle reading a lane outside the mask).
inline bool complete_warp_collective(Worker* w, Fiber& f) {
    Fiber* group = w->fibers + (f.linear & ~31u);
    const unsigned mask = f.mask;
    for (unsigned lanes = mask; lanes; lanes &= lanes - 1) {
        const Fiber& g = group[__builtin_ctz(lanes)];
        if (g.state != State::kAtWarpCollective || g.mask != mask || !same_site(f, g)) return true;
    }
    std::uint64_t vote = 0, all_equal = 1;
    std::uint64_t acc = 0;
    const std::uint64_t first = group[__builtin_ctz(mask)].value;
    switch (f.op) {
        case Op::kReduceMinS: case Op::kReduceMinU: case Op::kReduceMaxS: case Op::kReduceMaxU:
            acc = first;
            break;
        case Op::kReduceAnd: acc = 0xffffffffu; break;
        default: break;
    }
    for (unsigned lanes = mask; lanes; lanes &= lanes - 1) {
        const unsigned lane = __builtin_ctz(lanes);
        const std::uint64_t v = group[lane].value;
        const auto vu = static_cast<std::uint32_t>(v);
        const auto vs = static_cast<std::int32_t>(vu);
        vote |= std::uint64_t{v != 0} << lane;
        all_equal &= v == first;
        switch (f.op) {
            case Op::kReduceAdd: acc = static_cast<std::uint32_t>(acc + vu); break;
            case Op::kReduceMinS: if (vs < static_cast<std::int32_t>(acc)) acc = vu; break;
            case Op::kReduceMinU: if (vu < static_cast<std::uint32_t>(acc)) acc = vu; break;
            case Op::kReduceMaxS: if (vs > static_cast<std::int32_t>(acc)) acc = vu; break;
            case Op::kReduceMaxU: if (vu > static_cast<std::uint32_t>(acc)) acc = vu; break;
            case Op::kReduceAnd: acc &= vu; break;
            case Op::kReduceOr: acc |= vu; break;
            case Op::kReduceXor: acc ^= vu; break;
            default: break;
        }
    }
    // Results go to `result` and operands stay in `value`, so every lane reads what the
    // others passed in, as lanes in lockstep do.
    if (is_shuffle(f.op)) {
        for (unsigned lanes = mask; lanes; lanes &= lanes - 1) {
            const unsigned lane = __builtin_ctz(lanes);
            Fiber& g = group[lane];
            const unsigned src = shuffle_source(g, lane);
            if (src != lane && !(src < 32 && (mask >> src & 1u))) {
                report(w->launch, "inactive lane", g.file, g.line, w->block_idx, g.thread_idx,
                       "%s reads lane %u, which is not in the mask 0x%08x (this is lane %u of "
                       "warp %u; operand %lld, width %d)",
                       op_name(g.op), src, mask, lane, g.linear / 32, g.arg, g.width);
                return false;
            }
            g.result = group[src].value;
        }
    }
    for (unsigned lanes = mask; lanes; lanes &= lanes - 1) {
        const unsigned lane = __builtin_ctz(lanes);
        Fiber& g = group[lane];
        switch (f.op) {
            case Op::kBallot: g.result = vote; break;
            case Op::kAny: g.result = vote != 0; break;
            case Op::kAll: g.result = vote == mask; break;
            case Op::kMatchAny: {
                std::uint64_t same = 0;
                for (unsigned others = mask; others; others &= others - 1) {
                    const unsigned o = __builtin_ctz(others);
                    same |= std::uint64_t{group[o].value == g.value} << o;
                }
                g.result = same;
                break;
            }
            case Op::kMatchAll: g.result = all_equal ? (mask | (std::uint64_t{1} << 32)) : 0; break;
            default:
                if (!is_shuffle(f.op)) g.result = acc;
                break;
        }
        g.state = State::kRunnable;
    }
    w->at_warp -= __builtin_popcount(mask);
    return true;
}

// Called when every live fiber waits and nothing can complete: names what is wrong with
// the first stuck warp collective (block-barrier errors were named before).
inline void report_stuck(Worker* w) {
    Launch* L = w->launch;
    for (unsigned i = 0; i < L->nthreads; ++i) {
        const Fiber& f = w->fibers[i];
        if (f.state != State::kAtWarpCollective) continue;
        const Fiber* group = w->fibers + (f.linear & ~31u);
        for (unsigned lanes = f.mask; lanes; lanes &= lanes - 1) {
            const unsigned lane = __builtin_ctz(lanes);
            const Fiber& g = group[lane];
            const uint3 t = g.thread_idx;
            if (g.state == State::kExited) {
                report(L, "inactive lane", f.file, f.line, w->block_idx, f.thread_idx,
                       "%s with mask 0x%08x waits for lane %u (thread (%u,%u,%u)), which has "
                       "exited",
                       op_name(f.op), f.mask, lane, t.x, t.y, t.z);
                return;
            }
            if (g.state == State::kAtBlockBarrier) {
                report(L, "deadlock", f.file, f.line, w->block_idx, f.thread_idx,
                       "%s with mask 0x%08x waits for lane %u (thread (%u,%u,%u)), which waits "
                       "at %s at %s:%d for this thread",
                       op_name(f.op), f.mask, lane, t.x, t.y, t.z, op_name(g.op), g.file, g.line);
                return;
            }
            if (g.state == State::kAtWarpCollective && (g.mask != f.mask || !same_site(f, g))) {
                report(L, "collective mismatch", f.file, f.line, w->block_idx, f.thread_idx,
                       "%s with mask 0x%08x, but lane %u (thread (%u,%u,%u)) named in the mask "
                       "waits at %s with mask 0x%08x at %s:%d; all lanes of a mask must call "
                       "the same collective with the same mask",
                       op_name(f.op), f.mask, lane, t.x, t.y, t.z, op_name(g.op), g.mask,
                       g.file, g.line);
                return;
            }
        }
    }
    report(L, "deadlock", nullptr, 0, w->block_idx, uint3{0, 0, 0},
           "every live thread of the block waits and no barrier or collective can complete");
}

// Between passes: complete what can complete and list the fibers to run next. Returns
// false when the block is finished (live == 0) or an error was reported.
inline bool plan_next_pass(Worker* w) {
    Launch* L = w->launch;
    if (w->live == 0) return false;
    if (w->at_block_barrier == w->live) {
        if (!complete_block_barrier(w)) return false;
    } else if (w->at_warp > 0) {
        for (unsigned i = 0; i < L->nthreads; ++i) {
            Fiber& f = w->fibers[i];
            if (f.state == State::kAtWarpCollective && !complete_warp_collective(w, f))
                return false;
        }
    }
    unsigned n = 0;
    for (unsigned i = 0; i < L->nthreads; ++i)
        if (w->fibers[i].state == State::kRunnable) w->runlist[n++] = i;
    if (n == 0) {
        report_stuck(w);
        return false;
    }
    if (L->seeded) shuffle(w->runlist, n, w->rng);
    w->run_len = n;
    return true;
}

inline void run_block(Worker* w, unsigned long long linear_block) {
    Launch* L = w->launch;
    const unsigned n = L->nthreads;
    w->block_idx = unflatten(linear_block, L->grid);
    // Dynamic shared memory starts as 0xFF bytes: NaN in every float type, so reading
    // before writing shows up in the results.
    std::memset(w->dynamic_shared, 0xFF, L->shared_mem);
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = w->fibers[i];
        f.thread_idx = unflatten(i, L->block);
        f.linear = i;
        f.worker = w;
        f.state = State::kRunnable;
        f.value = 0;
        // Stack tops are staggered by a cache line per fiber: at one page offset, every
        // fiber's saved registers and innermost frame would compete for the same L1 sets
        // (measured: about 15% of a 64-thread barrier).
        const std::size_t stagger = (i % 64) * 64;
        init_context(&f.ctx, w->stacks.stack(i), w->stacks.stack_bytes - stagger, &fiber_main, &f);
        w->runlist[i] = i;
    }
    w->live = n;
    w->at_block_barrier = w->at_warp = 0;
    w->aborted = false;
    w->run_len = n;
    if (L->seeded) {
        w->rng = L->seed ^ (linear_block * 0xd1b54a32d192ed03ull);
        shuffle(w->runlist, n, w->rng);
    }
    do {
        w->run_pos = 1;
        current_fiber = &w->fibers[w->runlist[0]];
        switch_context(&w->scheduler, &current_fiber->ctx);
        if (w->aborted) return;
    } while (plan_next_pass(w));
}

// ------------------------------------------------------------------ workers

// Worker state (fiber records, stacks, the dynamic shared buffer) outlives launches and
// is reused; a launch takes one per worker thread from this pool.
inline pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
inline Worker* pool = nullptr;

inline Worker* take_worker() {
    pthread_mutex_lock(&pool_lock);
    Worker* w = pool;
    if (w != nullptr) pool = w->next_free;
    pthread_mutex_unlock(&pool_lock);
    return w != nullptr ? w : new Worker();
}

inline void return_worker(Worker* w) {
    pthread_mutex_lock(&pool_lock);
    w->next_free = pool;
    pool = w;
    pthread_mutex_unlock(&pool_lock);
}

// Sizes the worker for the launch; false (and an error) when memory is refused.
inline bool prepare_worker(Worker* w, Launch* L) {
    w->launch = L;
    if (w->capacity < L->nthreads) {
        delete[] w->fibers;
        delete[] w->runlist;
        w->fibers = new Fiber[L->nthreads];
        w->runlist = new unsigned[L->nthreads];
        w->capacity = L->nthreads;
    }
    if (!w->stacks.reserve(L->nthreads, L->stack_bytes)) {
        report(L, "out of memory", nullptr, 0, uint3{0, 0, 0}, uint3{0, 0, 0},
               "could not map %u fiber stacks of %zu bytes", L->nthreads, L->stack_bytes);
        return false;
    }
    if (w->altstack == nullptr) {
        const long minimum = sysconf(_SC_SIGSTKSZ);
        w->altstack_bytes = minimum > 65536 ? static_cast<std::size_t>(minimum) : 65536;
        w->altstack = static_cast<char*>(std::malloc(w->altstack_bytes));
        if (w->altstack == nullptr) {
            report(L, "out of memory", nullptr, 0, uint3{0, 0, 0}, uint3{0, 0, 0},
                   "could not allocate a signal stack of %zu bytes", w->altstack_bytes);
            return false;
        }
    }
    if (w->dynamic_capacity < L->shared_mem || w->dynamic_shared == nullptr) {
        std::free(w->dynamic_shared);
        std::size_t bytes = (L->shared_mem + 127) / 128 * 128;
        if (bytes == 0) bytes = 128;
        w->dynamic_shared = static_cast<unsigned char*>(std::aligned_alloc(128, bytes));
        w->dynamic_capacity = w->dynamic_shared ? bytes : 0;
        if (w->dynamic_shared == nullptr) {
            report(L, "out of memory", nullptr, 0, uint3{0, 0, 0}, uint3{0, 0, 0},
                   "could not allocate %zu bytes of dynamic shared memory", L->shared_mem);
            return false;
        }
    }
    return true;
}

inline void* run_worker(void* arg) {
    auto* L = static_cast<Launch*>(arg);
    Worker* w = take_worker();
    if (prepare_worker(w, L)) {
        // The overflow handler needs a stack of its own; the thread's previous one (the
        // calling thread may have Python's faulthandler's) comes back afterwards.
        stack_t alt{}, previous_alt{};
        alt.ss_sp = w->altstack;
        alt.ss_size = w->altstack_bytes;
        sigaltstack(&alt, &previous_alt);
        while (!__atomic_load_n(&L->failed, __ATOMIC_ACQUIRE)) {
            unsigned long long i = __atomic_fetch_add(&L->next, 1, __ATOMIC_RELAXED);
            if (i >= L->nblocks) break;
            run_block(w, L->order ? L->order[i] : i);
        }
        sigaltstack(&previous_alt, nullptr);
    }
    w->launch = nullptr;
    return_worker(w);
    return nullptr;
}

// Runs a whole grid; returns 0, or 1 with `error` filled in. The calling thread is one
// of the workers.
inline int launch(void (*invoke)(void**), const unsigned* dims, unsigned long long shared_mem,
                  unsigned long long seed, int seeded, int workers,
                  unsigned long long stack_bytes, void** args, ErrorInfo* error) {
    Launch L{};
    L.invoke = invoke;
    L.args = args;
    L.grid = dim3(dims[0], dims[1], dims[2]);
    L.block = dim3(dims[3], dims[4], dims[5]);
    L.nblocks = 1ull * dims[0] * dims[1] * dims[2];
    L.nthreads = dims[3] * dims[4] * dims[5];
    L.shared_mem = shared_mem;
    L.stack_bytes = stack_bytes;
    L.seeded = seeded != 0;
    L.seed = seed;
    L.error = error;
    if (L.seeded) {
        L.order = static_cast<unsigned long long*>(std::malloc(L.nblocks * sizeof *L.order));
        if (L.order == nullptr) {
            report(&L, "out of memory", nullptr, 0, uint3{0, 0, 0}, uint3{0, 0, 0},
                   "could not allocate the block order of %llu blocks", L.nblocks);
            return 1;
        }
        for (unsigned long long i = 0; i < L.nblocks; ++i) L.order[i] = i;
        std::uint64_t rng = seed;
        shuffle(L.order, L.nblocks, rng);
    }
    // Workers: as asked, but never more than blocks (nor than kMaxThreads besides the
    // caller). A thread that cannot be started only means fewer workers.
    constexpr unsigned kMaxThreads = 255;
    unsigned long long n = static_cast<unsigned long long>(workers < 1 ? 1 : workers);
    if (n > L.nblocks) n = L.nblocks;
    if (n > kMaxThreads + 1) n = kMaxThreads + 1;
    pthread_t threads[kMaxThreads];
    unsigned started = 0;
    install_segv_handler();
    for (unsigned long long t = 1; t < n; ++t) {
        if (pthread_create(&threads[started], nullptr, &run_worker, &L) == 0) ++started;
    }
    run_worker(&L);
    for (unsigned t = 0; t < started; ++t) pthread_join(threads[t], nullptr);
    remove_segv_handler();
    std::free(L.order);
    std::fflush(stdout);  // kernel printf output appears before Python prints again
    return L.failed ? 1 : 0;
}

}  // namespace attnspec_emu
