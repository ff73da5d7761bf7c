# glibc's malloc for a process that reads batches (decision 0209). By default a block of 128 KiB or more is its own
# mmap, and the threshold then moves up and down with what is freed; free memory at the top of the heap beyond twice
# that threshold goes back to the kernel. A batch's frames (pcapy-ng's bytes of ~0.7 MB, and its callback's buffer)
# are such blocks, made and freed every batch: they came back as fresh pages, zeroed by the kernel at the first
# touch (22,000 of a no-hit replay's 27,500 page faults). Fixed thresholds keep them in the heap.

cdef extern from *:
    """
    #if defined(__GLIBC__)
    #include <malloc.h>
    static int truesource_malloc_keep(int trim_threshold, int mmap_threshold) {
        return mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1 && mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1;
    }
    #else
    static int truesource_malloc_keep(int trim_threshold, int mmap_threshold) { return 0; }
    #endif
    """
    int truesource_malloc_keep(int trim_threshold, int mmap_threshold)


def keep_freed_memory(int trim_threshold, int mmap_threshold):
    """Blocks below `mmap_threshold` bytes come from the heap, and up to `trim_threshold` bytes freed at its top
    stay there for the next batch. True when set (glibc), False where the C library has no mallopt."""
    return truesource_malloc_keep(trim_threshold, mmap_threshold) == 1
