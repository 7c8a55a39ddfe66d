// sparse24.cuh: the mma.sp m16n8k32 bf16 fragment layout of a 2:4 matrix, shared by
// sparse24_compress.cu (which writes it) and sparse24_spmm.cu (which reads it). The same layout is
// produced and documented on the CPU by lopper_sparse::Sparse24Fragments (fragments.rs).
//
// W (M, K) is cut into tiles of 16 rows x 32 logical columns (8 groups of 4); M is padded to
// MT = ceil(M/16) tiles and K to KT = ceil(K/32) tiles with zero values (padding code 0b0100:
// positions 0 and 1). Tile (mt, kt) is number tile = mt * KT + kt.
// - values: uint4 vals[tile * 32 + lane]; lane = 4*g + t (g = lane/4, t = lane%4). Its four 32-bit
//   registers are the A operand of mma.sp (two bf16 each, the lower kept column in the low half):
//   reg 0: row g,   group t;     reg 1: row g+8, group t;
//   reg 2: row g,   group t + 4; reg 3: row g+8, group t + 4    (rows and groups within the tile).
// - metadata: uint32 meta[tile * 16 + 2*g + s], s in {0, 1}: bits 0-15 hold row g's groups 4s..4s+3,
//   bits 16-31 row g+8's, 4 bits per group (group j at bits 4j: lower kept index in the low 2 bits).
//   This is the word that lane 4*g + s passes to mma.sp with sparsity selector 0.
// Min SM: 80.
#pragma once
#include <stdint.h>

namespace lopper {
constexpr int S24_TILE_M = 16;
constexpr int S24_TILE_K = 32;
constexpr uint32_t S24_PAD_CODE = 0x4;  // kept positions 0 and 1 of an all-zero group
}  // namespace lopper
