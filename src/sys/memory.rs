//! Giving freed heap memory back to the system.
//!
//! glibc keeps what a program frees for its next allocations; after a burst of viewers
//! leaves, the server's resident size stays where the burst put it. `malloc_trim` hands
//! the free pages of every arena back (the `libc` crate declares it; nothing safe wraps
//! it). Elsewhere than glibc this does nothing.

/// Return free heap pages to the system; `true` if any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers and only rearranges the allocator's free
    // lists under its own locks; it is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Return free heap pages to the system (not available here: nothing happens).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}
