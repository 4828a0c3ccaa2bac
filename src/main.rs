//! The `triggerd` binary: the command line lives in [`triggerd::cli`]. Here too: the calls that
//! need `unsafe`, which the library forbids: two to the allocator, and the step spawner's fork.

fn main() -> std::process::ExitCode {
    keep_large_allocations_out_of_the_arenas();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    triggerd::memory::set_trim(|| {
        // SAFETY: malloc_trim takes the arenas' own locks and has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    });
    triggerd::engine::spawner::set_fork(fork);
    triggerd::cli::main()
}

/// `fork(2)`, for the step spawner only (see `triggerd::engine::spawner`).
fn fork() -> std::io::Result<Option<rustix::process::Pid>> {
    // SAFETY: the spawner, the one caller, is single-threaded: the child, a copy of its one
    // thread, holds no lock another thread held, and may allocate.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(rustix::process::Pid::from_raw(pid)),
    }
}

/// glibc's malloc raises its mmap threshold (up to 32 MiB) after the first large free, so
/// argon2's 19 MiB per key verification then came from the threads' arenas and stayed there:
/// 351 MiB resident after 23 key checks on a server that started at 19 MiB (20 MiB with this).
/// A fixed threshold (which also fixes the trim threshold) maps every allocation of 1 MiB or
/// more on its own and unmaps it when it is freed.
fn keep_large_allocations_out_of_the_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}
