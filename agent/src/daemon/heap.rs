//! The C heap (glibc's malloc) of a long-running agent: what it keeps after a burst.
//!
//! A pass over 10,000 specs allocates and frees megabytes (the desired set, the plan, the
//! status list), and a scrape of `/metrics` or a big status response more. glibc raises its
//! mmap threshold each time such a block is freed (up to 32 MiB), after which blocks that size
//! come from the heap, and it hands memory back only from the heap's top: the agent's resident
//! memory ratcheted up to its busiest moment. Two measured remedies (`bench/run --only specs`,
//! BENCHMARKS.md): a fixed threshold, so that large blocks stay mmapped and go back to the
//! kernel when freed; and `malloc_trim` once the loop has gone quiet, which gives back the free
//! pages inside the heap too.
//!
//! And one arena: glibc gives each thread that allocates while another holds the lock an arena
//! of its own (up to eight a core), and the agent's threads take turns (the loop, the spec job
//! on a blocking thread, the API's workers), so the specs read on one thread and kept by
//! another left each arena holding its own free pieces. The agent allocates at a rate no lock
//! contention shows in; one heap keeps its free space in one place, where the trim finds it.

use std::time::Duration;

/// How long the loop must have been quiet before the heap is trimmed: past a burst of spec
/// changes, not inside it (a trim walks the whole heap).
pub const TRIM_AFTER: Duration = Duration::from_secs(1);

/// Blocks from this size up are mmapped (glibc's own starting value, kept fixed).
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Every thread allocates from the one main arena.
const ARENAS: i32 = 1;

/// Fixes the mmap threshold and the arenas; called once when the agent starts, before it
/// starts a thread (a thread that has an arena keeps it).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and changes only malloc's parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Gives the heap's free pages back to the kernel.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a size and only releases memory malloc holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
