// C++ transcriptions of the PTX instructions of attention_tc.cu, for the CPU emulator.
// Each follows the PTX ISA's definition (PTX ISA 9.0), not the kernel's comments:
//   mma.sync.m16n8k16 .f16/.bf16 -> .f32   "Matrix Fragments for mma.m16n8k16 with floating
//                                          point type" (the row/col formulas, verbatim)
//   ldmatrix.sync.m8n8.x4{.trans}.b16      "Warp-level matrix load instruction: ldmatrix"
//   cp.async.cg 16 / commit_group / wait_group   "Data Movement and Conversion Instructions"
// Shared addresses are byte offsets from the start of dynamic shared memory.
#include <cassert>
#include <cstdlib>
#include <cstring>

namespace tc_emu {
thread_local unsigned char* smem;  // the running block's dynamic shared memory (per worker)

// cp.async: this thread's copies not yet performed, each with its group number (the
// number of commit_groups the thread had executed when it issued the copy)
struct PendingCopy {
    unsigned dst;
    const unsigned char* src;
    bool in_range;
    int group;
};
constexpr int kMaxPending = 64;
thread_local PendingCopy pending[THREADS][kMaxPending];
thread_local int n_pending[THREADS];
thread_local int n_committed[THREADS];

// what the lanes of each warp exchange inside one ldmatrix or mma
thread_local unsigned exchange[THREADS / 32][32][6];

// ATTENTION_TC_EMU_CP_ASYNC=immediate: a copy lands when issued (the earliest the hardware
// may complete it); otherwise when a wait_group requires it (the latest).
inline bool immediate() {
    const char* mode = std::getenv("ATTENTION_TC_EMU_CP_ASYNC");
    return mode != nullptr && std::strcmp(mode, "immediate") == 0;
}

// ATTENTION_TC_EMU_SKEW=n: warp w waits n·w extra warp steps in every wait_group (before its
// copies land) and every ldmatrix (before it reads). The emulator advances every warp by one
// collective per scheduler pass, so warps that execute the same collectives stay in
// lockstep, and a missing __syncthreads between one warp's copies and another's reads (or
// one warp's reads and another's refill) would go unseen; skewed, warp 0 runs ahead.
inline int skew() {
    const char* n = std::getenv("ATTENTION_TC_EMU_SKEW");
    return n != nullptr ? std::atoi(n) : 0;
}

inline void perform(const PendingCopy& c) {
    assert(c.dst % 16 == 0 && c.dst + 16 <= 2 * STAGE_BYTES);
    // src-size 0: "the remaining bytes ... are filled with zeros", nothing is read
    if (c.in_range) std::memcpy(smem + c.dst, c.src, 16);
    else std::memset(smem + c.dst, 0, 16);
}

inline unsigned short element(unsigned reg, int i) {  // "Elements (low to high)"
    return static_cast<unsigned short>(i == 0 ? reg & 0xffffu : reg >> 16);
}

inline float to_float(unsigned short bits) {
#if ELEM_BF16
    return __bfloat162float(__ushort_as_bfloat16(bits));
#else
    return __half2float(__ushort_as_half(bits));
#endif
}

inline unsigned short load16(unsigned addr) {
    unsigned short v;
    std::memcpy(&v, smem + addr, 2);
    return v;
}

inline void ldmatrix(unsigned (&r)[4], unsigned addr, bool trans) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    // "Each address corresponds to the start of a matrix row" (16 bytes, naturally aligned);
    // for .x4, threads 8i .. 8i+7 hold the addresses of rows 0 .. 7 of matrix i
    assert(addr % 16 == 0 && addr + 16 <= 2 * STAGE_BYTES);
    for (int i = 0; i < skew() * warp; ++i) __syncwarp();
    exchange[warp][lane][0] = addr;
    __syncwarp();
    const int groupID = lane >> 2, threadID_in_group = lane % 4;
    for (int i = 0; i < 4; ++i) {
        unsigned lo, hi;
        if (!trans) {
            // "Each thread in a warp loads fragments of a row ... A group of four threads
            // loads an entire row": row groupID, elements 2·threadID_in_group and + 1
            lo = load16(exchange[warp][8 * i + groupID][0] + 2 * (2 * threadID_in_group));
            hi = load16(exchange[warp][8 * i + groupID][0] + 2 * (2 * threadID_in_group + 1));
        } else {
            // ".trans indicates that the matrix is loaded in column-major format": the same
            // fragment of the transposed matrix, i.e. rows 2·threadID_in_group and + 1 of
            // column groupID
            lo = load16(exchange[warp][8 * i + 2 * threadID_in_group][0] + 2 * groupID);
            hi = load16(exchange[warp][8 * i + 2 * threadID_in_group + 1][0] + 2 * groupID);
        }
        r[i] = lo | (hi << 16);
    }
    __syncwarp();
}

inline void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int i = 0; i < 4; ++i) exchange[warp][lane][i] = a[i];
    exchange[warp][lane][4] = b0;
    exchange[warp][lane][5] = b1;
    __syncwarp();
    // the whole A (16x16) and B (16x8) from every lane's fragments, by the ISA's formulas
    float A[16][16], B[16][8];
    for (int L = 0; L < 32; ++L) {
        const int groupID = L >> 2, threadID_in_group = L % 4;
        for (int i = 0; i < 8; ++i) {  // a0 .. a7: two per .f16x2/.bf16x2 register
            const int row = (i < 2 || (4 <= i && i < 6)) ? groupID : groupID + 8;
            const int col = i < 4 ? threadID_in_group * 2 + (i & 0x1)
                                  : threadID_in_group * 2 + (i & 0x1) + 8;
            A[row][col] = to_float(element(exchange[warp][L][i / 2], i % 2));
        }
        for (int i = 0; i < 4; ++i) {  // b0 .. b3
            const int row = i < 2 ? threadID_in_group * 2 + (i & 0x1)
                                  : threadID_in_group * 2 + (i & 0x1) + 8;
            const int col = groupID;
            B[row][col] = to_float(element(exchange[warp][L][4 + i / 2], i % 2));
        }
    }
    __syncwarp();
    const int groupID = lane >> 2, threadID_in_group = lane % 4;
    for (int i = 0; i < 4; ++i) {  // c0 .. c3 / d0 .. d3
        const int row = i < 2 ? groupID : groupID + 8;
        const int col = threadID_in_group * 2 + (i & 0x1);
        float acc = d[i];
        // products of 16-bit values are exact in float; the sum rounds to nearest in k
        // order (the ISA leaves the accumulation's rounding open; attention_tc.bf16_model
        // assumes truncation, so the bf16 bound is exercised with an accumulation other
        // than its own)
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
        d[i] = acc;
    }
}
}  // namespace tc_emu

// The kernel calls smem_addr once per thread, on its dynamic shared memory, before any
// cp.async: the moment to reset this thread's cp.async state (a worker reuses it per block).
__device__ __forceinline__ unsigned smem_addr(const void* p) {
    tc_emu::smem = static_cast<unsigned char*>(const_cast<void*>(p));
    tc_emu::n_pending[threadIdx.x] = 0;
    tc_emu::n_committed[threadIdx.x] = 0;
    return 0u;
}

__device__ __forceinline__ void cp_async_16(unsigned dst, const void* src, bool in_range) {
    const int t = threadIdx.x;
    const tc_emu::PendingCopy c{dst, static_cast<const unsigned char*>(src), in_range,
                                tc_emu::n_committed[t]};
    if (tc_emu::immediate()) {
        tc_emu::perform(c);
        return;
    }
    assert(tc_emu::n_pending[t] < tc_emu::kMaxPending);
    tc_emu::pending[t][tc_emu::n_pending[t]++] = c;
}

__device__ __forceinline__ void cp_async_commit() { ++tc_emu::n_committed[threadIdx.x]; }

// "wait till only N or fewer of the most recent cp.async-groups are pending and all the
// prior cp.async-groups committed by the executing thread are complete"
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    const int t = threadIdx.x;
    for (int i = 0; i < tc_emu::skew() * (t / 32); ++i) __syncwarp();
    int kept = 0;
    for (int i = 0; i < tc_emu::n_pending[t]; ++i) {
        const tc_emu::PendingCopy c = tc_emu::pending[t][i];
        if (c.group < tc_emu::n_committed[t] - N) tc_emu::perform(c);
        else tc_emu::pending[t][kept++] = c;
    }
    tc_emu::n_pending[t] = kept;
}

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
    tc_emu::ldmatrix(r, addr, false);
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
    tc_emu::ldmatrix(r, addr, true);
}
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                          unsigned b1) {
    tc_emu::mma(d, a, b0, b1);
}
