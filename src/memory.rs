//! The allocator's side of memory use: glibc's malloc keeps freed pages for reuse, so after a
//! burst (thousands of connections, a load test) the daemon's RSS would stay at its peak.
//! `malloc_trim` hands whole free pages back to the kernel.

/// Returns free heap pages to the system (glibc; nothing elsewhere).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Settings for a small, steady footprint: two malloc arenas instead of eight per core
/// (lightd's threads share them well; more arenas only hold more free memory).
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called once before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
