//! The step supervisor: the process a Run step's script runs under (DESIGN §6.1, issue "Run
//! steps see too much"), forked by the [spawner](super::spawner), which hands it one step at
//! a time.
//!
//! A process group alone cannot hold a script: `setsid sleep 1000 &` leaves it, and outlives the
//! step. The supervisor makes itself a *child subreaper*, so every process the script starts,
//! however it detaches, stays among its descendants (an orphan is re-parented to it, not to
//! init). When the script exits, or when the runner asks (a byte on the step's stop pipe:
//! timeout, abort), it kills every descendant, reaps them, and reports the script's own wait
//! status to the runner. With none of the step's processes left, it waits for the runner to
//! let go of the step (it closes the stop pipe), and then for the next step.
//!
//! It takes no next step, and exits, when it is told to stop (`SIGTERM` or `SIGINT`, as the
//! spawner's death sends: its parent-death signal) or when some process of the step could not
//! be killed. The spawner checks it before each step (see `Inheritance` there): a process of
//! the step's user may have stopped it or changed what it hands its scripts.
//!
//! It is single-threaded, allocates nothing per signal and uses no runtime: it polls. It runs
//! as the step's user, and gives the script only the step's environment (cleared by the
//! runner), never triggerd's.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Gid, Pid, Signal, Uid, WaitOptions};

use super::spawner::{exit_now, Script, ScriptFds};

/// How long the supervisor waits at most between looks at what it waits for: the script's
/// end, a stop request and a signal each wake it at once (through a pidfd for the script, the
/// stop pipe and a signal pipe). Without a pidfd it looks for the script's end every
/// [`FIRST_POLL`] at first, twice as long after each look, up to [`POLL`].
const POLL: Duration = Duration::from_millis(20);
const FIRST_POLL: Duration = Duration::from_micros(250);
/// Rounds of kill-and-reap before giving up on a process that keeps forking.
const SWEEP_ROUNDS: usize = 200;
/// How long a supervisor waits for the runner to let go of a step it reported, before it
/// gives up on taking another.
const LET_GO_WITHIN: Duration = Duration::from_secs(10);

/// The supervisor's life in a child the [spawner](super::spawner) forked: takes each step the
/// spawner sends on `socket`, supervises it, and says on `socket` when it is free again.
/// `parent` is the spawner. Each step's stdout and stderr become its own while the step runs.
pub fn serve(parent: Pid, socket: UnixStream) -> ! {
    let ready = get_ready(parent);
    // The user it dropped to for its first step, the only one it runs steps as.
    let mut settled: Option<Option<(u32, u32)>> = None;
    loop {
        let Some((script, fds)) = next_step(&socket, ready.as_ref().ok()) else {
            exit_now(0)
        };
        let step = ready.as_ref().map_err(String::clone).and_then(|ready| {
            become_the_step(parent, &script, &fds, &mut settled)?;
            Ok(ready)
        });
        // A supervisor that could not set up, or become the step's user, reports the step as
        // not started and takes no other step.
        let ready = match step {
            Ok(ready) => ready,
            Err(e) => {
                let _ = rustix::stdio::dup2_stderr(&fds.stderr);
                eprintln!(
                    "[triggerd] could not start {}: {e}",
                    script.program.to_string_lossy()
                );
                if let Some(raw) = wait_status(Ended::Code(126)) {
                    let _ = rustix::io::write(&fds.status, &raw);
                }
                exit_now(0)
            }
        };
        let Some(raw) = wait_status(supervise(ready, &script, &fds.stop)) else {
            exit_now(0)
        };
        // The step's output pipes close here, so the runner reads their end with the status.
        let quiet = rustix::stdio::dup2_stdout(&ready.null).is_ok()
            && rustix::stdio::dup2_stderr(&ready.null).is_ok();
        let ScriptFds {
            stdout,
            stderr,
            status,
            stop,
        } = fds;
        drop((stdout, stderr));
        let _ = rustix::io::write(&status, &raw);
        drop(status);
        let free = quiet && let_go_of_the_step(&stop, ready) && !ready.stopped();
        if !free || rustix::io::write(&socket, b"1") != Ok(1) {
            exit_now(0)
        }
    }
}

/// The wait status the runner reads for a step that `ended`, in the bytes it reads; `None` for
/// one that is not reported: the runner then counts the step as killed, kills its session, and
/// does not hand its working directory on (see `work_dirs`).
fn wait_status(ended: Ended) -> Option<[u8; 4]> {
    let raw = match ended {
        Ended::Code(code) => (code & 0xff) << 8,
        Ended::Signal(signal) => signal & 0x7f,
        Ended::NotSwept => return None,
    };
    Some(raw.to_ne_bytes())
}

/// Waits for the spawner's next step: `None` when the spawner is gone (its socket closed) or
/// this supervisor is told to stop.
fn next_step(socket: &UnixStream, ready: Option<&Ready>) -> Option<(Script, ScriptFds)> {
    if let Some(ready) = ready {
        loop {
            if ready.stopped() {
                return None;
            }
            let mut poll = [
                PollFd::new(socket, PollFlags::IN),
                PollFd::new(&ready.signalled, PollFlags::IN),
            ];
            match rustix::event::poll(&mut poll, None) {
                Ok(_) if !poll[0].revents().is_empty() => break,
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => return None,
            }
        }
    }
    let (request, fds) = super::spawner::read_request(socket).ok()??;
    // A step that came with a stop (a signal between the poll and the read) does not start;
    // the runner sees it end without a status.
    if ready.is_some_and(Ready::stopped) {
        return None;
    }
    match (
        super::spawner::decode(&request),
        super::spawner::script_fds(fds),
    ) {
        (Some(script), Some(fds)) => Some((script, fds)),
        _ => None,
    }
}

/// What a supervisor set up once, for every step.
struct Ready {
    /// Set by `SIGTERM` or `SIGINT`: stop the step and exit.
    stop: Arc<AtomicBool>,
    /// Readable once such a signal came, so that a wait wakes for it.
    signalled: UnixStream,
    /// Its stdout and stderr between steps.
    null: File,
}

impl Ready {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Sets up what every step runs under: the signals that stop it, the parent-death signal, the
/// subreaper, and a session of its own.
fn get_ready(parent: Pid) -> Result<Ready, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let (signalled, on_signal) =
        UnixStream::pair().map_err(|e| format!("supervisor: cannot make a signal pipe: {e}"))?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let on_signal = on_signal
            .try_clone()
            .map_err(|e| format!("supervisor: cannot make a signal pipe: {e}"))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .and_then(|_| signal_hook::low_level::pipe::register(signal, on_signal))
            .map_err(|e| format!("supervisor: cannot handle signal {signal}: {e}"))?;
    }
    watch_the_spawner(parent)?;
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| format!("supervisor: cannot become a subreaper: {e}"))?;
    // A session of its own: no controlling terminal the script could read or write (the
    // server's, when it was started from one). Its id stays this process's group id, which
    // the runner kills as a backstop.
    rustix::process::setsid().map_err(|e| format!("supervisor: cannot start a session: {e}"))?;
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("supervisor: cannot open /dev/null: {e}"))?;
    Ok(Ready {
        stop,
        signalled,
        null,
    })
}

/// Has `SIGTERM` sent when the spawner dies (it dies with triggerd); then checks that it has
/// not died already. Set again after each change of user, which clears it.
fn watch_the_spawner(parent: Pid) -> Result<(), String> {
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
        .map_err(|e| format!("supervisor: cannot watch the server: {e}"))?;
    if rustix::process::getppid() != Some(parent) {
        return Err("supervisor: the server is gone".to_owned());
    }
    Ok(())
}

/// Points stdout and stderr at the step's pipes and, for the first step, drops to the step's
/// user (supplementary groups first, then the group, then the user, each for real, effective
/// and saved ids). A later step must be for the same user.
fn become_the_step(
    parent: Pid,
    script: &Script,
    fds: &ScriptFds,
    settled: &mut Option<Option<(u32, u32)>>,
) -> Result<(), String> {
    rustix::stdio::dup2_stdout(&fds.stdout).map_err(|e| e.to_string())?;
    rustix::stdio::dup2_stderr(&fds.stderr).map_err(|e| e.to_string())?;
    if let Some(user) = settled {
        return match *user == script.user {
            true => Ok(()),
            false => Err("the supervisor runs as another user".to_owned()),
        };
    }
    if let Some((uid, gid)) = script.user {
        let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
        let drop_to = || -> std::io::Result<()> {
            rustix::thread::set_thread_groups(&[])?;
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            rustix::thread::set_thread_res_uid(uid, uid, uid)?;
            // The kernel makes a process that changed its ids non-dumpable already; said here
            // so that the script (the same user) can never read what this copy of the
            // spawner's memory still holds, other steps' requests included.
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
            Ok(())
        };
        drop_to().map_err(|e| e.to_string())?;
        watch_the_spawner(parent)?;
    }
    *settled = Some(script.user);
    Ok(())
}

/// Waits until the runner has let go of the step it was told the end of (it closes its end of
/// the stop pipe): until then it may still kill this process's session, as it does when the
/// report came too late. False when it does not within [`LET_GO_WITHIN`], or a signal says
/// to stop.
fn let_go_of_the_step(stop: &OwnedFd, ready: &Ready) -> bool {
    let deadline = std::time::Instant::now() + LET_GO_WITHIN;
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || ready.stopped() {
            return false;
        }
        let mut poll = [
            PollFd::new(stop, PollFlags::IN),
            PollFd::new(&ready.signalled, PollFlags::IN),
        ];
        match rustix::event::poll(&mut poll, Some(&timespec(left))) {
            Ok(_) if !poll[0].revents().is_empty() => {}
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
        // Stop requests that came too late are read past.
        match rustix::io::read(stop, &mut buf) {
            Ok(0) => return true,
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: d.subsec_nanos().into(),
    }
}

/// Runs one step: starts its script, waits for its end or a stop request, and kills whatever
/// of the step is left.
fn supervise(ready: &Ready, script: &Script, stop: &OwnedFd) -> Ended {
    let child = match start_script(script) {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "[triggerd] could not start {}: {e}",
                script.program.to_string_lossy()
            );
            return Ended::Code(127);
        }
    };
    let main = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    // Readable once the script has ended (not yet reaped, so its pid is still its own).
    let exited = main.and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    let mut ended = None;
    let mut wait = FIRST_POLL;
    while ended.is_none() && !ready.stopped() {
        ended = reap(main);
        if ended.is_some() {
            break;
        }
        let mut poll = vec![
            PollFd::new(stop, PollFlags::IN),
            PollFd::new(&ready.signalled, PollFlags::IN),
        ];
        poll.extend(exited.iter().map(|pidfd| PollFd::new(pidfd, PollFlags::IN)));
        let timeout = if exited.is_some() { POLL } else { wait };
        let _ = rustix::event::poll(&mut poll, Some(&timespec(timeout)));
        if !poll[0].revents().is_empty() {
            // Asked to stop (a byte), or the runner is gone (the end).
            break;
        }
        wait = (wait * 2).min(POLL);
    }
    // Every descendant is a child or below one (orphans come to this subreaper), so with the
    // script reaped and no child left there is nothing to look for in /proc.
    if (ended.is_none() || !no_children_left()) && !kill_descendants() {
        eprintln!("[triggerd] supervisor: the step's processes could not all be killed");
        return Ended::NotSwept;
    }
    if ended.is_none() {
        ended = reap(main);
    }
    ended.unwrap_or(Ended::Code(128 + signal_hook::consts::SIGTERM))
}

/// The program as `execvp` would find it on the script's `PATH` (the first executable file), or
/// as given when that lookup is not plain (a relative `PATH` entry, or nothing found): std then
/// looks it up itself, as it also does when the file found cannot be executed.
///
/// Given a path, std starts the script with `posix_spawn`, a `vfork` that shares this
/// process's memory until the `exec`. Given a bare name and a `PATH` of the script's own, it
/// `fork`s: it copies this process's page tables and faults on every page either side writes
/// before the `exec`, a tenth of all CPU time with one-step pipelines of Run `true`.
fn program_path(program: &OsStr, env: &[(OsString, OsString)]) -> PathBuf {
    if program.as_bytes().contains(&b'/') {
        return program.into();
    }
    let path = env
        .iter()
        .rev()
        .find(|(key, _)| key == "PATH")
        .map_or(OsStr::new(""), |(_, value)| value.as_os_str());
    for dir in std::env::split_paths(path) {
        if !dir.is_absolute() {
            break;
        }
        let candidate = dir.join(program);
        if rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_ok()
            && candidate.is_file()
        {
            return candidate;
        }
    }
    program.into()
}

/// Starts the script: the program [`program_path`] finds, or, when that file cannot be
/// executed where `execvp` would go on (to the next directory of `PATH`, or to `/bin/sh` for a
/// file without `#!`), the bare name, which std looks up as `execvp` does.
fn start_script(script: &Script) -> std::io::Result<std::process::Child> {
    use rustix::io::Errno;
    let start = |program: &OsStr| {
        Command::new(program)
            .args(&script.args)
            .env_clear()
            .envs(script.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&script.work_dir)
            .spawn()
    };
    let found = program_path(&script.program, &script.env);
    match start(found.as_os_str()) {
        Err(e)
            if found.as_os_str() != script.program
                && matches!(
                    e.raw_os_error().map(Errno::from_raw_os_error),
                    Some(Errno::NOENT | Errno::NOEXEC | Errno::ACCESS | Errno::NOTDIR)
                ) =>
        {
            start(&script.program)
        }
        started => started,
    }
}

/// How the script ended.
#[derive(Debug, Clone, Copy)]
enum Ended {
    Code(i32),
    Signal(i32),
    /// Some process the step started is still alive after every round of killing.
    NotSwept,
}

/// Reaps every child that has ended (orphans included); returns the script's end if it was
/// among them.
fn reap(main: Option<Pid>) -> Option<Ended> {
    let mut ended = None;
    // `wait`, not `waitpid(None)`: that one only sees children in this process group, and a
    // script's children may have left it.
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
        if Some(pid) == main {
            ended = status
                .exit_status()
                .map(Ended::Code)
                .or_else(|| status.terminating_signal().map(Ended::Signal));
        }
    }
    ended
}

/// Whether this process has no child at all, running or ended (every ended one is reaped).
/// For a subreaper that means no descendant either: the topmost live process below it would
/// be its child.
fn no_children_left() -> bool {
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some(_)) => {}
            Err(rustix::io::Errno::CHILD) => return true,
            Ok(None) | Err(_) => return false,
        }
    }
}

/// Kills every descendant with `SIGKILL` and reaps them, round after round, until no child
/// is left (a process forking as it is killed is caught in a later round). False when some
/// are still alive after the last round, or cannot be listed: a `/proc` it cannot read (this
/// process out of descriptors, which a process of its user can arrange with `prlimit`) is
/// never taken for "none left".
fn kill_descendants() -> bool {
    for _ in 0..SWEEP_ROUNDS {
        if no_children_left() {
            return true;
        }
        let Some(all) = descendants(rustix::process::getpid()) else {
            return false;
        };
        for pid in all {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    no_children_left()
}

/// Every live process below `root`, read from `/proc`; `None` when it cannot be read.
fn descendants(root: Pid) -> Option<Vec<Pid>> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()? {
        let entry = entry.ok()?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = vec![root.as_raw_pid()];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(c) {
                queue.push(c);
                found.extend(Pid::from_raw(c));
            }
        }
    }
    Some(found)
}

/// The parent pid of `pid` from `/proc/PID/stat` (the field after the state, which follows the
/// command name in parentheses; the name may itself hold spaces and parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

fn parse_ppid(stat: &str) -> Option<i32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?;
    if state == "X" {
        return None;
    }
    // A zombie too ("Z"): a process whose main thread has ended shows as one while its other
    // threads run, and a real zombie takes the signal harmlessly.
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_after_a_name_with_spaces_and_parentheses() {
        assert_eq!(parse_ppid("123 (sh) S 45 123 123 0"), Some(45));
        assert_eq!(parse_ppid("123 (a (b) c) R 46 1 1"), Some(46));
        assert_eq!(parse_ppid("123 (sleep) Z 45 1 1"), Some(45));
        assert_eq!(parse_ppid("123 (sleep) X 45 1 1"), None);
        assert_eq!(parse_ppid("garbage"), None);
    }

    /// A directory holding `first` and `second`, not under /tmp, which may be mounted noexec
    /// (access(X_OK) then fails for every file).
    fn two_path_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&target).unwrap();
        let dir = tempfile::TempDir::new_in(target).unwrap();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        for d in [&first, &second] {
            std::fs::create_dir(d).unwrap();
        }
        (dir, first, second)
    }

    fn make(path: &std::path::Path, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn path_env(dirs: &[&PathBuf]) -> Vec<(OsString, OsString)> {
        vec![("PATH".into(), std::env::join_paths(dirs).unwrap())]
    }

    #[test]
    fn the_program_is_looked_up_on_the_scripts_path_as_execvp_would() {
        let (_dir, first, second) = two_path_dirs();
        make(&first.join("tool"), "#!/bin/sh\n", 0o644); // not executable: skipped
        std::fs::create_dir(first.join("sub")).unwrap(); // a directory: skipped
        make(&second.join("tool"), "#!/bin/sh\n", 0o755);
        make(&second.join("sub"), "#!/bin/sh\n", 0o755);
        let env = |path: String| vec![("PATH".into(), OsString::from(path))];
        let both = format!("{}:{}", first.display(), second.display());

        assert_eq!(
            program_path("tool".as_ref(), &env(both.clone())),
            second.join("tool")
        );
        assert_eq!(
            program_path("sub".as_ref(), &env(both.clone())),
            second.join("sub")
        );
        // A relative entry before any match: std's own lookup decides, as before.
        let relative = format!("bin:{}", second.display());
        assert_eq!(
            program_path("tool".as_ref(), &env(relative)),
            PathBuf::from("tool")
        );
        assert_eq!(
            program_path("missing".as_ref(), &env(both)),
            PathBuf::from("missing")
        );
        assert_eq!(program_path("tool".as_ref(), &[]), PathBuf::from("tool"));
        assert_eq!(
            program_path("/bin/sh".as_ref(), &env(second.display().to_string())),
            PathBuf::from("/bin/sh")
        );
    }

    #[test]
    fn a_found_file_that_cannot_be_executed_is_left_to_execvps_own_lookup() {
        let (_dir, first, second) = two_path_dirs();
        let exit_code = |program: &str, dirs: &[&PathBuf]| {
            let script = Script {
                program: program.into(),
                args: Vec::new(),
                env: path_env(dirs),
                work_dir: first.clone(),
                user: None,
            };
            start_script(&script).map(|mut child| child.wait().unwrap().code())
        };
        // No `#!`: `exec` refuses it (ENOEXEC); execvp runs it with /bin/sh.
        make(&first.join("plain"), "exit 7\n", 0o755);
        assert_eq!(exit_code("plain", &[&first]).unwrap(), Some(7));
        // A missing interpreter (ENOENT): execvp goes on to the next directory.
        make(&first.join("tool"), "#!/nonexistent/interpreter\n", 0o755);
        make(&second.join("tool"), "#!/bin/sh\nexit 3\n", 0o755);
        assert_eq!(exit_code("tool", &[&first, &second]).unwrap(), Some(3));
        // Nothing that runs anywhere: the error, as before.
        assert!(exit_code("tool", &[&first]).is_err());
    }

    #[test]
    fn a_child_this_process_starts_is_among_its_descendants_until_reaped() {
        // Other tests start children of this process too, so only this one is looked for.
        let me = rustix::process::getpid();
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(descendants(me)
            .unwrap()
            .iter()
            .any(|p| p.as_raw_pid() == pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!descendants(me)
            .unwrap()
            .iter()
            .any(|p| p.as_raw_pid() == pid));
    }
}
