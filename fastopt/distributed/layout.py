"""Which rank owns which elements of a list of parameters.

The parameters are cut into the blocks of fastopt's global-norm reduction (``BLOCK``
elements, starting afresh at every parameter); the blocks, in parameter order, are
dealt to the P ranks in P contiguous runs of about equal bytes, so every rank holds
1/P of the optimizer state to within one block. Because a rank's shard is made of
whole reduction blocks, each rank can compute its blocks' norm terms exactly as a
single process would, and the terms put side by side in rank order are the single
process's terms in its order.
"""
import numpy as np

from fastopt._kernels.vecops import BLOCK_SIZE

__all__ = ["ShardLayout", "BLOCK_SIZE"]

ALIGN = 64      # bytes: every piece of a packed buffer starts on a cache line


class ShardLayout:
    """The shards of parameters of ``sizes`` elements (and ``itemsizes`` bytes each)
    over ``nranks`` ranks.

    ``pieces[r]`` is rank r's list of ``(k, a, b)``: elements ``a:b`` of parameter k
    (flattened), in parameter order. ``packed(r)`` gives each piece's byte offset in a
    buffer that holds rank r's pieces one after another (64-byte aligned) and that
    buffer's size."""

    def __init__(self, sizes, itemsizes, nranks, block=BLOCK_SIZE):
        sizes, itemsizes = [int(s) for s in sizes], [int(i) for i in itemsizes]
        if len(sizes) != len(itemsizes):
            raise ValueError("sizes and itemsizes differ in length")
        if nranks < 1:
            raise ValueError(f"nranks must be >= 1, got {nranks}")
        self.sizes, self.itemsizes, self.nranks, self.block = sizes, itemsizes, int(nranks), int(block)
        blocks = [(k, a, min(a + block, n)) for k, n in enumerate(sizes) for a in range(0, n, block)]
        total = sum((b - a) * itemsizes[k] for k, a, b in blocks)
        self.total_bytes = total
        pieces = [[] for _ in range(nranks)]
        done = 0
        for k, a, b in blocks:
            # the rank whose share [r·total/P, (r+1)·total/P) holds the block's first byte
            r = min(nranks - 1, done * nranks // total) if total else 0
            done += (b - a) * itemsizes[k]
            run = pieces[r]
            if run and run[-1][0] == k and run[-1][2] == a:
                run[-1] = (k, run[-1][1], b)
            else:
                run.append((k, a, b))
        self.pieces = pieces

    def owner_bytes(self, r):
        """Bytes of parameters (= of each state buffer) rank r owns."""
        return sum((b - a) * self.itemsizes[k] for k, a, b in self.pieces[r])

    def packed(self, r):
        """``(offsets, size)``: the byte offset of each of rank r's pieces in a packed
        buffer, and the buffer's size."""
        offsets, at = [], 0
        for k, a, b in self.pieces[r]:
            offsets.append(at)
            at += -(-((b - a) * self.itemsizes[k]) // ALIGN) * ALIGN
        return offsets, at

    def nblocks(self, r):
        """Reduction blocks in rank r's shard."""
        return sum(-(-(b - a) // self.block) for k, a, b in self.pieces[r])

    def describe(self):
        """A JSON-able description (checkpoints record it)."""
        return {"sizes": self.sizes, "itemsizes": self.itemsizes, "nranks": self.nranks, "block": self.block,
                "pieces": [[list(p) for p in run] for run in self.pieces]}


def packed_view(buf, offset, n, dtype):
    """``n`` elements of ``dtype`` at byte ``offset`` of the uint8 array ``buf``."""
    dtype = np.dtype(dtype)
    return buf[offset:offset + n * dtype.itemsize].view(dtype)
