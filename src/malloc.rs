//! glibc malloc settings for training loops.
//!
//! libtorch allocates every activation and gradient of a step with `malloc` and frees it at the
//! end of the step. By default glibc serves blocks above its mmap threshold (128 KiB, raised
//! dynamically up to 32 MiB) with a fresh `mmap` and gives them back with `munmap`, and trims
//! the heap top back to the kernel on `free`: so each step re-faults and the kernel re-zeroes
//! every large tensor's pages. On the `vit` bench config that was 5-7 million minor page faults
//! in 25 steps and about 15 % of the step time (docs/PERFORMANCE.md). Keeping freed memory in
//! the process (no mmap for blocks, no trimming) makes later steps reuse the same pages; the
//! peak stays the step's high-water mark. This is what PyTorch's CPU tuning guide gets from
//! jemalloc/tcmalloc via LD_PRELOAD, without a second allocator.

/// Environment variable that turns the tuning off (`SVIB_MALLOC=default`), e.g. to measure it.
pub const ENV: &str = "SVIB_MALLOC";

/// Applies the settings unless `SVIB_MALLOC=default`; returns whether they were applied.
pub fn tune_for_training() -> bool {
    if std::env::var(ENV).is_ok_and(|v| v == "default") {
        return false;
    }
    keep_freed_memory()
}

/// No mmap-served blocks and no heap trimming (glibc only; a no-op elsewhere).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() -> bool {
    // SAFETY: mallopt only changes allocator parameters; valid for any values.
    unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    #[test]
    fn large_blocks_come_from_the_heap() {
        assert!(super::keep_freed_memory());
        // SAFETY: mallinfo2 only reads allocator statistics.
        let mmapped = || unsafe { libc::mallinfo2() }.hblkhd;
        let before = mmapped();
        // 16 MiB: above glibc's default threshold (so mmap-served without the settings) and
        // small enough for the heap of this test thread's arena (glibc still maps blocks that
        // no thread heap can hold; svib's step runs on the main thread, whose heap grows freely)
        let v = std::hint::black_box(vec![1u8; 16 << 20]);
        // `<=`: other tests in this process may free blocks mapped before the settings took effect
        assert!(mmapped() <= before, "a 16 MiB block was served by mmap");
        drop(v);
    }
}
