//! The `triggerd` binary: the command line lives in [`triggerd::cli`]. Here too: the calls that
//! need `unsafe`, which the library forbids: the allocator's, and the step spawner's fork.

/// mimalloc: the process's CPU per no-match webhook went from 44–45 µs to 34–36 µs (glibc's
/// arenas handled the HTTP workers' and the writer's frees of each other's allocations through
/// their bins and locks). Its threads keep what they free until they collect it:
/// `triggerd::memory` has each thread collect its heap now and then.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keep_large_allocations_out_of_the_arenas();
    triggerd::memory::set_thread_trim(collect_this_threads_heap);
    triggerd::memory::set_trim(|| {
        // SAFETY: malloc_trim takes the arenas' own locks and has no preconditions.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        unsafe {
            libc::malloc_trim(0);
        }
        // This thread's own heap is nearly empty; forced, the collection also purges what every
        // thread has handed back to mimalloc's shared arenas.
        collect_this_threads_heap();
    });
    triggerd::engine::spawner::set_fork(fork);
    triggerd::engine::spawner::set_exit(exit_at_once);
    triggerd::engine::spawner::set_scheduling(scheduling);
    triggerd::cli::main()
}

/// Hands what the calling thread freed back to mimalloc's arenas, and purges them.
fn collect_this_threads_heap() {
    // SAFETY: mi_collect only touches the calling thread's heap and mimalloc's own thread-safe
    // structures; it has no preconditions.
    unsafe { libmimalloc_sys::mi_collect(true) }
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

/// `_exit(2)`, for the step supervisors (see `triggerd::engine::spawner::set_exit`).
fn exit_at_once(code: i32) -> ! {
    // SAFETY: `_exit` ends the process; it has no preconditions.
    unsafe { libc::_exit(code) }
}

/// A process's scheduling policy and I/O priority, for the step spawner (see
/// `triggerd::engine::spawner::set_scheduling`).
fn scheduling(pid: i32) -> (i32, i32) {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    // SAFETY: both calls only read a process's scheduling attributes.
    unsafe {
        (
            libc::sched_getscheduler(pid),
            libc::syscall(
                libc::SYS_ioprio_get,
                IOPRIO_WHO_PROCESS,
                libc::c_long::from(pid),
            ) as i32,
        )
    }
}

/// For what still comes from glibc's malloc (SQLite's): it raises its mmap threshold (up to
/// 32 MiB) after the first large free, so large blocks then came from the threads' arenas and
/// stayed there (351 MiB resident after 23 argon2 key checks, when Rust's allocations came from
/// it too). A fixed threshold (which also fixes the trim threshold) maps every allocation of
/// 1 MiB or more on its own and unmaps it when it is freed.
fn keep_large_allocations_out_of_the_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}
