// Tokenizer kernels: BPE pair counting and batched unigram (SWE) Viterbi segmentation.
//
// Mirrors
//   spec.tokenize.bpe.pair_counts   count(a, b) = Σ_words count(word) · #{i : word[i] = a,
//                                   word[i+1] = b}, overlapping occurrences all counted
//   spec.tokenize.swe.viterbi_ids   best segmentation of a word into pieces of a unigram
//                                   model, unconstrained (sentencepiece's rule) or with at
//                                   most k pieces (the k-hop shortest path), over the flat
//                                   PieceTrie of spec.tokenize.swe.piece_trie (ids; the
//                                   string form spec.tokenize.swe.viterbi is the same DP)
//
// Words are flat: symbols (byte ids, merge ids or code points) of word w are
// sym_P[offsets_W1[w] .. offsets_W1[w+1]), int64 offsets (a batch may exceed 2^31 symbols).
//
// Versions
//   pair_counts_v1  a thread per position p (grid-stride): the word holding p is found by a
//                   binary search of the offsets, and the pair (sym[p], sym[p+1]) — when
//                   p+1 is in the same word — is added with the word's count to a global
//                   hash table: open addressing, linear probing, 64-bit keys a·2^32 + b
//                   claimed with atomicCAS, counts summed with 64-bit atomicAdd and the
//                   pair's first position kept with atomicMin (the launcher orders the
//                   pairs by it: the spec's dict order, first occurrence). Integer sums
//                   and a minimum, so the result does not depend on the atomics' order. The
//                   launcher sizes the table to at least twice the number of pairs (load
//                   factor ≤ 1/2, so a probe sequence always ends at a free slot).
//   segment_v1      a thread per word (grid-stride). Forward relaxation over the word's
//                   lattice: for each start i in ascending order, the trie is walked along
//                   w[i], w[i+1], ... and every piece w[i:j] found offers best[i] + lp to
//                   best[j], taken only when strictly greater. Each best[j] thus sees its
//                   candidates in ascending i, and ties keep the smallest i (the longest
//                   last piece), exactly the spec's backward scan. With MAX_PIECES = k > 0
//                   the same per number of pieces h: best[h][j] from best[h-1][i]; the
//                   answer is the h ≤ k with the largest best[h][n], ties to the smallest h.
//                   A code point that is not itself a piece gets one unknown edge i -> i+1
//                   (id trie.unk_id, score trie.unk_log_prob), even where longer pieces
//                   start at i, as the spec (and sentencepiece) has it.
//                   The lattice (score, start and piece per node) lives in global scratch
//                   the launcher sizes per word.
#include <cuda_runtime.h>

// -------------------------------------------------------------------- pair counting

#define EMPTY_KEY 0xffffffffffffffffull  // symbols are non-negative int32: no key has it

// splitmix64's finaliser: consecutive ids spread over the whole table.
__device__ __forceinline__ unsigned long long mix64(unsigned long long x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

// The word w with offsets[w] <= p < offsets[w+1] (the last such w: empty words before it
// share its offset): upper bound of p among offsets[0..W], minus one.
__device__ __forceinline__ int word_of(const long long* __restrict__ offsets_W1, int W, long long p) {
    int lo = 0, hi = W + 1;  // first index with offsets[index] > p lies in [lo, hi]
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (offsets_W1[mid] <= p) lo = mid + 1; else hi = mid;
    }
    return lo - 1;
}

// Add `count` to the slot of `key`, claiming a free slot on first sight, and lower the
// slot's first position to p. The table capacity Q is a power of two with fewer than Q/2
// keys, so the probe ends.
__device__ __forceinline__ void table_add(unsigned long long* __restrict__ keys_Q,
                                          unsigned long long* __restrict__ values_Q,
                                          unsigned long long* __restrict__ first_Q,
                                          unsigned long long mask, unsigned long long key,
                                          unsigned long long count, unsigned long long p) {
    unsigned long long slot = mix64(key) & mask;
    for (;;) {
        const unsigned long long seen = atomicCAS(&keys_Q[slot], EMPTY_KEY, key);
        if (seen == EMPTY_KEY || seen == key) {
            atomicAdd(&values_Q[slot], count);
            atomicMin(&first_Q[slot], p);
            return;
        }
        slot = (slot + 1) & mask;
    }
}

extern "C" __global__ void __launch_bounds__(PAIR_THREADS)
pair_counts_v1(const int* __restrict__ sym_P, const long long* __restrict__ offsets_W1,
               const long long* __restrict__ counts_W, int W, long long P,
               unsigned long long* __restrict__ keys_Q, unsigned long long* __restrict__ values_Q,
               unsigned long long* __restrict__ first_Q, long long Q) {
    const unsigned long long mask = (unsigned long long)Q - 1;
    const long long stride = (long long)gridDim.x * PAIR_THREADS;
    for (long long p = (long long)blockIdx.x * PAIR_THREADS + threadIdx.x; p + 1 < P; p += stride) {
        const int w = word_of(offsets_W1, W, p);
        if (p + 1 >= offsets_W1[w + 1]) continue;  // p is its word's last symbol
        const unsigned long long key =
            (unsigned long long)(unsigned)sym_P[p] << 32 | (unsigned)sym_P[p + 1];
        table_add(keys_Q, values_Q, first_Q, mask, key, (unsigned long long)counts_W[w],
                  (unsigned long long)p);
    }
}

// -------------------------------------------------------------------- segmentation

// The flat PieceTrie of spec.tokenize.swe.piece_trie, as the kernel reads it.
struct Trie {
    const long long* first_edge_N1;  // edges of node n: first_edge[n] .. first_edge[n+1]
    const int* edge_char;            // ascending within a node
    const int* edge_node;
    const int* node_piece_N;         // piece id ending at the node, or -1
    const double* log_prob_V;
};

// The child of `node` along code point c, or -1 (binary search of the node's edges).
__device__ __forceinline__ int trie_child(const Trie& t, int node, int c) {
    long long lo = t.first_edge_N1[node];
    const long long end = t.first_edge_N1[node + 1];
    long long hi = end;
    while (lo < hi) {
        const long long mid = (lo + hi) >> 1;
        if (t.edge_char[mid] < c) lo = mid + 1; else hi = mid;
    }
    return lo < end && t.edge_char[lo] == c ? t.edge_node[lo] : -1;
}

// One lattice: node (h, j) at index h·(n+1) + j of the word's scratch. from < 0 marks a
// node no path has reached yet ("unset", which the spec distinguishes from a score of
// -inf: a first candidate is taken even when it is -inf).
struct Lattice {
    double* best;
    int* from;   // start i of the last piece; the origin (0, 0) holds 0
    int* piece;  // id of the last piece
    long long row;  // n + 1
};

// Offer a path of score src + lp ending with piece `pid` = w[i:j] to node (h, j): taken
// when the node is unset or the score is strictly greater (ties keep the earlier, smaller i).
__device__ __forceinline__ void relax(const Lattice& L, int h, int j, int i, int pid, double cand) {
    const long long at = h * L.row + j;
    if (L.from[at] < 0 || cand > L.best[at]) {
        L.best[at] = cand;
        L.from[at] = i;
        L.piece[at] = pid;
    }
}

// Offer the edge w[i:j] to every layer: unconstrained, the one layer feeds itself; k-hop,
// layer h-1 at i feeds layer h, for h = 1 .. layers.
__device__ __forceinline__ void relax_edge(const Lattice& L, bool hops, int layers, int i, int j,
                                           int pid, double lp) {
    if (!hops) {
        if (L.from[i] >= 0) relax(L, 0, j, i, pid, L.best[i] + lp);
        return;
    }
    // a path of h pieces reaches i only when h <= i: layers beyond are unset there
    const int top = min(layers, i + 1);
    for (int h = 1; h <= top; ++h) {
        const long long at = (h - 1) * L.row + i;
        if (L.from[at] >= 0) relax(L, h, j, i, pid, L.best[at] + lp);
    }
}

extern "C" __global__ void __launch_bounds__(SEG_THREADS)
segment_v1(const int* __restrict__ cps_P, const long long* __restrict__ offsets_W1, int W,
           const long long* __restrict__ first_edge_N1, const int* __restrict__ edge_char,
           const int* __restrict__ edge_node, const int* __restrict__ node_piece_N,
           const double* __restrict__ log_prob_V, int max_len, int unk_id, double unk_log_prob,
           int max_pieces, const long long* __restrict__ scratch_W1, double* __restrict__ best_S,
           int* __restrict__ from_S, int* __restrict__ piece_S, double* __restrict__ score_W,
           int* __restrict__ n_pieces_W, int* __restrict__ pieces_P) {
    const Trie t{first_edge_N1, edge_char, edge_node, node_piece_N, log_prob_V};
    const bool hops = max_pieces > 0;
    for (int w = blockIdx.x * SEG_THREADS + threadIdx.x; w < W; w += gridDim.x * SEG_THREADS) {
        const int* word = cps_P + offsets_W1[w];
        const int n = (int)(offsets_W1[w + 1] - offsets_W1[w]);
        int* out = pieces_P + offsets_W1[w];
        if (n == 0) {  // the spec: ([], 0.0), with or without max_pieces
            score_W[w] = 0.0;
            n_pieces_W[w] = 0;
            continue;
        }
        const int layers = hops ? min(max_pieces, n) : 1;  // more than n pieces never fit
        const long long base = scratch_W1[w];
        const Lattice L{best_S + base, from_S + base, piece_S + base, (long long)n + 1};
        const long long nodes = (long long)(hops ? layers + 1 : 1) * L.row;
        for (long long x = 0; x < nodes; ++x) L.from[x] = -1;
        L.best[0] = 0.0;
        L.from[0] = 0;  // the origin

        // the push sweep: i ascending, so every node sees its candidates in ascending i
        for (int i = 0; i < n; ++i) {
            int node = 0;
            bool covered = false;  // is w[i] alone a piece?
            const int last = min(n, i + max_len);
            for (int j = i + 1; j <= last; ++j) {
                node = trie_child(t, node, word[j - 1]);
                if (node < 0) break;
                const int pid = t.node_piece_N[node];
                if (pid < 0) continue;
                if (j == i + 1) covered = true;
                relax_edge(L, hops, layers, i, j, pid, t.log_prob_V[pid]);
            }
            // an uncovered character: one unknown piece i -> i+1 (targets only i+1, where
            // no other edge from i lands, so its place among i's edges does not matter)
            if (!covered) relax_edge(L, hops, layers, i, i + 1, unk_id, unk_log_prob);
        }

        // the answer's layer: unconstrained the only one; k-hop the h with the largest
        // best[h][n], ties to the smallest h
        int h = 0;
        if (hops) {
            for (int g = 1; g <= layers; ++g) {
                const long long at = g * L.row + n;
                if (L.from[at] >= 0 && (h == 0 || L.best[at] > L.best[h * L.row + n])) h = g;
            }
            if (h == 0) {  // no segmentation into at most k pieces: ([], -inf)
                score_W[w] = -__longlong_as_double(0x7ff0000000000000ll);  // -inf
                n_pieces_W[w] = 0;
                continue;
            }
        }
        score_W[w] = L.best[h * L.row + n];
        // back-pointers from (h, n), pieces written last to first, then reversed
        int count = 0;
        for (int j = n; j > 0; ++count) {
            const long long at = h * L.row + j;
            out[count] = L.piece[at];
            j = L.from[at];
            if (hops) --h;
        }
        for (int a = 0, b = count - 1; a < b; ++a, --b) {
            const int tmp = out[a];
            out[a] = out[b];
            out[b] = tmp;
        }
        n_pieces_W[w] = count;
    }
}
