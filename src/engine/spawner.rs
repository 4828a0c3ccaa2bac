//! The step spawner: `triggerd step-spawner`, one small, single-threaded child the server
//! starts once. It keeps a pool of step [supervisors](super::supervise), forked from itself,
//! each running one Run step at a time as the step's user, and hands each step to one that
//! waits, or to a new one.
//!
//! Forking the server itself for each step copied its page tables (tens of MiB of mappings,
//! tokio's threads, SQLite's cache) and made every thread fault on its next write. Then
//! `exec`ing this 150 MB binary again, to supervise, cost its relocations and page faults: 60 %
//! of all CPU time, most of it in the kernel, at 250 one-step pipelines per second. A fork of
//! this small process cost a fraction of that, and needed no `exec`; a supervisor kept for the
//! next step costs no fork at all (a third of all CPU time went to forking, starting and
//! ending one supervisor per step, at 1,000 one-step pipelines of Run `true` per second).
//!
//! The server and the spawner talk over a Unix stream socket (the spawner's stdin). A request
//! is a length, then [`Script`] fields, with the step's four pipe ends attached (`SCM_RIGHTS`):
//! its stdout, its stderr, a status pipe on which the supervisor writes the script's wait
//! status once it has killed every process of the step, and a stop pipe on which the server
//! asks it to stop the step (a byte) and, by closing it, lets it take the next step. The
//! answer is the supervisor's pid (or an errno). The spawner passes the request on, unchanged,
//! over the supervisor's own socket; the supervisor says there (a byte) when it is free again,
//! and exits when it closes.
//!
//! The spawner ends when its socket closes, as it does when the server dies, and each
//! supervisor is told (`SIGTERM`) when the spawner dies: a `kill -9` of the server still ends
//! every step's processes.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::process::{Pid, PidfdFlags};

/// The largest request accepted: a step's command and env are bounded far below this.
const MAX_REQUEST: usize = 16 * 1024 * 1024;

/// How long the spawner may take to read a request or to answer one.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What `fork` returned: `None` in the child, the child's pid in the parent.
pub type ForkFn = fn() -> io::Result<Option<Pid>>;

static FORK: OnceLock<ForkFn> = OnceLock::new();

/// Registers `fork`, which this crate cannot call (it has no unsafe code): the binary does,
/// for the spawner only, which is single-threaded when it forks.
pub fn set_fork(fork: ForkFn) {
    let _ = FORK.set(fork);
}

/// `_exit(2)`: ends the process without running what `exit` runs first.
pub type ExitFn = fn(i32) -> !;

static EXIT: OnceLock<ExitFn> = OnceLock::new();

/// Registers `_exit`, for the supervisors. `exit` runs the libraries' exit handlers, and
/// mimalloc's walks and frees every heap page: in a supervisor, a forked copy of the spawner,
/// each page it touches is copied first (2.4 % of all CPU time with one-step pipelines of Run
/// `true`). A supervisor has nothing to flush: it writes only with unbuffered writes.
pub fn set_exit(exit: ExitFn) {
    let _ = EXIT.set(exit);
}

/// What rustix has no call for: a process's scheduling policy (`sched_getscheduler`) and I/O
/// priority (`ioprio_get`), by pid.
pub type SchedulingFn = fn(i32) -> (i32, i32);

static SCHEDULING: OnceLock<SchedulingFn> = OnceLock::new();

/// Registers what reads a process's scheduling policy and I/O priority: a process of a step's
/// user can change both in its supervisor, and every later script would inherit them.
pub fn set_scheduling(scheduling: SchedulingFn) {
    let _ = SCHEDULING.set(scheduling);
}

/// Ends a supervisor with `code`, through `_exit` when the binary registered it.
pub(super) fn exit_now(code: i32) -> ! {
    match EXIT.get() {
        Some(exit) => exit(code),
        None => std::process::exit(code),
    }
}

/// One script to start under a supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The interpreter (looked up on the `PATH` of `env`).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// The script's whole environment.
    pub env: Vec<(OsString, OsString)>,
    /// Its working directory.
    pub work_dir: PathBuf,
    /// The user and group it runs as (the supervisor too), when not the server's.
    pub user: Option<(u32, u32)>,
}

/// The step's ends of its pipes, handed to the supervisor.
pub struct ScriptFds {
    /// The script's stdout.
    pub stdout: OwnedFd,
    /// The script's stderr (the supervisor's too).
    pub stderr: OwnedFd,
    /// Where the supervisor writes the script's wait status (4 bytes, native order).
    pub status: OwnedFd,
    /// Where the supervisor is asked to stop the step (any byte), and let go of it (the end).
    pub stop: OwnedFd,
}

impl ScriptFds {
    fn all(&self) -> [rustix::fd::BorrowedFd<'_>; 4] {
        [
            self.stdout.as_fd(),
            self.stderr.as_fd(),
            self.status.as_fd(),
            self.stop.as_fd(),
        ]
    }
}

/// The supervisor a step went to.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid: also its session and process group.
    pub pid: Pid,
}

/// The server's handle on its spawner. A spawner that died (it never should, but an operator
/// or the OOM killer may kill it) is started again for the next step.
#[derive(Debug)]
pub struct Spawner {
    binary: PathBuf,
    /// How far below this process's priority the spawner, and so every step, runs.
    nice: i32,
    /// How many supervisors may wait for a step: as many as steps may run at once.
    keep: usize,
    connection: Mutex<Option<Connection>>,
}

/// A running spawner.
#[derive(Debug)]
struct Connection {
    socket: UnixStream,
    // Reaped by tokio once the spawner exits, which it does when `socket` closes.
    _process: tokio::process::Child,
}

impl Spawner {
    /// Starts `binary step-spawner` with a cleared environment, to keep up to `keep`
    /// supervisors waiting for the next step.
    pub fn start(binary: &Path, nice: i32, keep: usize) -> io::Result<Self> {
        let connection = Connection::start(binary, nice, keep)?;
        Ok(Self {
            binary: binary.to_path_buf(),
            nice,
            keep,
            connection: Mutex::new(Some(connection)),
        })
    }

    /// Starts `script` under a supervisor (off the async threads: the spawner answers in
    /// well under a millisecond, but it blocks).
    pub async fn spawn(self: &Arc<Self>, script: Script, fds: ScriptFds) -> io::Result<Spawned> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.spawn_blocking(&script, &fds))
            .await
            .map_err(io::Error::other)?
    }

    fn spawn_blocking(&self, script: &Script, fds: &ScriptFds) -> io::Result<Spawned> {
        let request = encode(script)?;
        let mut connection = self
            .connection
            .lock()
            .map_err(|_| io::Error::other("the spawner's lock was poisoned"))?;
        for attempt in 0..2 {
            let c = match connection.as_mut() {
                Some(c) if attempt == 0 => c,
                _ => connection.insert(Connection::start(&self.binary, self.nice, self.keep)?),
            };
            // Not sent: the spawner is gone (or stuck), and a new one gets the request. Sent
            // but not answered: the step may have started, so it is not started again. Only
            // a broken connection is given up: a spawner refusing one request (an errno
            // answer) goes on serving, and the steps it supervises go on running.
            if let Err(e) = c.send(&request, fds) {
                tracing::warn!(error = %e, "the Run steps' spawner is gone; starting another");
                continue;
            }
            return match c.answer() {
                Ok(answer) => answer,
                Err(e) => {
                    *connection = None;
                    Err(e)
                }
            };
        }
        Err(io::Error::other(
            "the Run steps' spawner died at once, twice",
        ))
    }
}

impl Connection {
    /// Starts a spawner `nice` steps below this process's priority: every step it starts
    /// inherits it.
    fn start(binary: &Path, nice: i32, keep: usize) -> io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        // A spawner that does not answer (stopped, say) is given up, not waited for forever.
        ours.set_read_timeout(Some(ANSWER_WITHIN))?;
        ours.set_write_timeout(Some(ANSWER_WITHIN))?;
        let process = tokio::process::Command::new(binary)
            .arg("step-spawner")
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--keep")
            .arg(keep.to_string())
            .env_clear()
            // Out of the server's process group: Ctrl-C on the server's terminal is for the
            // server, which then gives running steps their grace period.
            .process_group(0)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        // Set before the first request, so no step starts at another priority.
        if let Some(pid) = process.id().and_then(|id| Pid::from_raw(id as i32)) {
            if let Err(e) = super::lower_priority(pid, nice) {
                tracing::warn!(error = %e, "could not lower the priority of the Run steps' spawner");
            }
        }
        Ok(Self {
            socket: ours,
            _process: process,
        })
    }

    fn send(&mut self, request: &[u8], fds: &ScriptFds) -> io::Result<()> {
        send_request(&self.socket, request, &fds.all(), SendFlags::empty())
    }

    /// The spawner's answer (the outer error: the connection broke; the inner one: the
    /// spawner could not start the supervisor, and says why).
    fn answer(&mut self) -> io::Result<io::Result<Spawned>> {
        let mut answer = [0u8; 5];
        self.socket.read_exact(&mut answer)?;
        let value = i32::from_ne_bytes([answer[1], answer[2], answer[3], answer[4]]);
        if answer[0] != 0 {
            return Ok(Err(io::Error::from_raw_os_error(value)));
        }
        let pid = Pid::from_raw(value)
            .ok_or_else(|| io::Error::other("the spawner answered an invalid pid"))?;
        Ok(Ok(Spawned { pid }))
    }
}

/// Sends one request: its length and `fds` at once, then its bytes.
fn send_request(
    socket: &UnixStream,
    request: &[u8],
    fds: &[rustix::fd::BorrowedFd<'_>],
    flags: SendFlags,
) -> io::Result<()> {
    let header = u32::try_from(request.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request too large"))?
        .to_ne_bytes();
    send_with_fds(socket, &header, fds, flags)?;
    let mut sent = 0;
    while sent < request.len() {
        match rustix::net::send(socket, &request[sent..], flags | SendFlags::NOSIGNAL) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads one request that [`send_request`] sent: its bytes and descriptors, or `None` at the
/// end of the stream.
pub(super) fn read_request(socket: &UnixStream) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut header = [0u8; 4];
    let (n, fds) = recv_with_fds(socket, &mut header, FDS)?;
    if n == 0 {
        return Ok(None);
    }
    let mut socket = socket;
    socket.read_exact(&mut header[n..])?;
    let len = u32::from_ne_bytes(header) as usize;
    if len > MAX_REQUEST {
        return Err(io::Error::other("a request over the size limit"));
    }
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body)?;
    Ok(Some((body, fds)))
}

/// The descriptors a request carries: [`ScriptFds`].
const FDS: usize = 4;

/// A request's descriptors as [`ScriptFds`], if they are all there.
pub(super) fn script_fds(fds: Vec<OwnedFd>) -> Option<ScriptFds> {
    let [stdout, stderr, status, stop] = <[OwnedFd; FDS]>::try_from(fds).ok()?;
    Some(ScriptFds {
        stdout,
        stderr,
        status,
        stop,
    })
}

/// Sends `bytes` (all at once, or an error) with `fds` attached.
fn send_with_fds(
    socket: &UnixStream,
    bytes: &[u8],
    fds: &[rustix::fd::BorrowedFd<'_>],
    flags: SendFlags,
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors to pass"));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        flags | SendFlags::NOSIGNAL,
    )?;
    if sent == bytes.len() {
        Ok(())
    } else {
        // A few bytes on an empty socket are never sent in part.
        Err(io::Error::other("a short write to the spawner's socket"))
    }
}

/// Receives up to `buf.len()` bytes and at most `max_fds` descriptors (close-on-exec); 0 bytes
/// is the end of the stream.
fn recv_with_fds(
    socket: &UnixStream,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if fds.len() > max_fds {
        return Err(io::Error::other("too many descriptors received"));
    }
    Ok((msg.bytes, fds))
}

/// The request's payload: NUL-terminated fields: the working directory, the uid and gid (empty
/// for none), the program, the argument count, the arguments, then `KEY=VALUE` for each
/// variable. A field holding a NUL (a payload value can: JSON's `\u0000`), or a variable name
/// holding `=`, would read back as other fields, so it is refused, as `exec` would refuse it.
fn encode(script: &Script) -> io::Result<Vec<u8>> {
    fn field(out: &mut Vec<u8>, bytes: &[u8], what: &str) -> io::Result<()> {
        if bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} holds a NUL byte"),
            ));
        }
        out.extend_from_slice(bytes);
        out.push(0);
        Ok(())
    }
    let mut out = Vec::new();
    field(
        &mut out,
        script.work_dir.as_os_str().as_bytes(),
        "the working directory",
    )?;
    let (uid, gid) = script
        .user
        .map(|(u, g)| (u.to_string(), g.to_string()))
        .unwrap_or_default();
    field(&mut out, uid.as_bytes(), "the uid")?;
    field(&mut out, gid.as_bytes(), "the gid")?;
    field(&mut out, script.program.as_bytes(), "the program")?;
    field(
        &mut out,
        script.args.len().to_string().as_bytes(),
        "the argument count",
    )?;
    for arg in &script.args {
        field(&mut out, arg.as_bytes(), "the command")?;
    }
    for (key, value) in &script.env {
        if key.is_empty() || key.as_bytes().contains(&b'=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the variable name {key:?} is empty or holds '='"),
            ));
        }
        let mut pair = key.as_bytes().to_vec();
        pair.push(b'=');
        pair.extend_from_slice(value.as_bytes());
        field(
            &mut out,
            &pair,
            &format!("the variable {}", key.to_string_lossy()),
        )?;
    }
    if out.len() > MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the command and its variables exceed 16 MiB",
        ));
    }
    Ok(out)
}

pub(super) fn decode(bytes: &[u8]) -> Option<Script> {
    let body = bytes.strip_suffix(&[0])?;
    let mut fields = body.split(|&b| b == 0);
    let work_dir = PathBuf::from(OsString::from_vec(fields.next()?.to_vec()));
    let number = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<u32>().ok();
    let (uid, gid) = (fields.next()?, fields.next()?);
    let user = match (uid.is_empty(), gid.is_empty()) {
        (true, true) => None,
        (false, false) => Some((number(uid)?, number(gid)?)),
        _ => return None,
    };
    let program = OsString::from_vec(fields.next()?.to_vec());
    let argc = number(fields.next()?)? as usize;
    let args = (0..argc)
        .map(|_| fields.next().map(|a| OsString::from_vec(a.to_vec())))
        .collect::<Option<Vec<_>>>()?;
    let env = fields
        .map(|pair| {
            let at = pair.iter().position(|&b| b == b'=')?;
            Some((
                OsString::from_vec(pair[..at].to_vec()),
                OsString::from_vec(pair[at + 1..].to_vec()),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Script {
        program,
        args,
        env,
        work_dir,
        user,
    })
}

/// `triggerd step-spawner`: serves the server on stdin until it closes, then exits. `parent`
/// is the server's pid: if it is already gone, nothing is served. Up to `keep` supervisors
/// wait for the next step.
pub fn run(parent: u32, keep: usize) -> ! {
    let code = match serve(parent, keep) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("[triggerd] step-spawner: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// The supervisors the spawner forked and has not reaped. Only these are its children, and it
/// reaps each through its pidfd: while a supervisor is here its pid is its own, so what the
/// spawner reads or sends by pid reaches it and no other process.
struct Pool {
    /// Waiting for a step; the one that waited least is taken first.
    idle: Vec<Supervisor>,
    /// Running a step. Each says on its socket when it is free (a byte), or exits (the end).
    busy: Vec<Supervisor>,
    /// Told to go (killed, or their socket closed): reaped once they have exited.
    leaving: Vec<OwnedFd>,
    /// How many may wait.
    keep: usize,
    /// What every supervisor must still hand its scripts: what a new one starts with (read
    /// at the first step, once the server has set the spawner's priority).
    inheritance: Option<Inheritance>,
    /// Whether the spawner said that it cannot read supervisors' `/proc` entries.
    unreadable_said: bool,
}

/// A supervisor, seen from the spawner.
struct Supervisor {
    pid: Pid,
    /// What it is signalled and reaped through.
    pidfd: OwnedFd,
    /// The user it runs as, and runs steps as: once dropped to it, it cannot change.
    user: Option<(u32, u32)>,
    socket: UnixStream,
}

impl Pool {
    /// Hands `request` to a waiting supervisor of the step's user; `None` when none took it.
    /// A process of that user may have stopped one (`SIGSTOP`: it would hold the step until
    /// its timeout), so each is continued first; or changed what it hands its scripts, so
    /// each is checked, and one that changed is killed.
    fn hand_to_idle(
        &mut self,
        user: Option<(u32, u32)>,
        request: &[u8],
        fds: &ScriptFds,
    ) -> Option<Pid> {
        while let Some(at) = self.idle.iter().rposition(|s| s.user == user) {
            let supervisor = self.idle.remove(at);
            let _ = rustix::process::pidfd_send_signal(
                &supervisor.pidfd,
                rustix::process::Signal::CONT,
            );
            if !self.unchanged(supervisor.pid) {
                self.retire(supervisor);
                continue;
            }
            if let Some(pid) = self.hand_to(supervisor, request, fds, SendFlags::DONTWAIT) {
                return Some(pid);
            }
        }
        None
    }

    /// Whether the supervisor `pid` would hand its script what a new one would. What a new one
    /// starts with is read again when they differ: the server lowers the spawner's priority
    /// after starting it, and an operator may change its limits or CPUs.
    fn unchanged(&mut self, pid: Pid) -> bool {
        let Some(theirs) = Inheritance::of(pid) else {
            if !self.unreadable_said {
                self.unreadable_said = true;
                eprintln!(
                    "[triggerd] step-spawner: cannot read a supervisor's /proc entries; each \
                     Run step gets a new supervisor"
                );
            }
            return false;
        };
        if self.inheritance.as_ref() == Some(&theirs) {
            return true;
        }
        self.inheritance = Inheritance::of_a_new_supervisor();
        self.inheritance.as_ref() == Some(&theirs)
    }

    /// Sends `request` to `supervisor`, which is then busy. One that does not take it (it died
    /// while it waited, or stopped reading) is killed: it may hold the step's descriptors,
    /// which must close for the server to see the step end. A waiting one is sent to without
    /// waiting (`flags`): a process of its user may have stopped it again, and the spawner
    /// must not wait for it. A request larger than its socket's buffer is sent in parts as it
    /// reads them, and goes to a new supervisor when it has not read the last part yet.
    fn hand_to(
        &mut self,
        supervisor: Supervisor,
        request: &[u8],
        fds: &ScriptFds,
        flags: SendFlags,
    ) -> Option<Pid> {
        match send_request(&supervisor.socket, request, &fds.all(), flags) {
            Ok(()) => {
                let pid = supervisor.pid;
                self.busy.push(supervisor);
                Some(pid)
            }
            Err(_) => {
                self.retire(supervisor);
                None
            }
        }
    }

    /// Kills `supervisor`, to be reaped once it has exited.
    fn retire(&mut self, supervisor: Supervisor) {
        let _ =
            rustix::process::pidfd_send_signal(&supervisor.pidfd, rustix::process::Signal::KILL);
        self.leaving.push(supervisor.pidfd);
    }

    /// The busy supervisor at `at` said something: it is free (kept, if fewer than `keep` wait;
    /// otherwise its socket closes and it exits) or gone.
    fn heard_from_busy(&mut self, at: usize) {
        let supervisor = self.busy.swap_remove(at);
        let mut byte = [0u8; 64];
        let free = matches!((&supervisor.socket).read(&mut byte), Ok(n) if n > 0);
        if free && self.idle.len() < self.keep {
            self.idle.push(supervisor);
        } else {
            self.retire(supervisor);
        }
    }

    /// The idle supervisor at `at` said something: a waiting one says nothing, so it is gone
    /// (killed, say), or is not to be trusted with a step.
    fn heard_from_idle(&mut self, at: usize) {
        let supervisor = self.idle.remove(at);
        self.retire(supervisor);
    }

    /// Reaps the supervisors that have exited.
    fn reap(&mut self) {
        self.leaving.retain(|pidfd| {
            matches!(
                rustix::process::waitid(
                    rustix::process::WaitId::PidFd(pidfd.as_fd()),
                    rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
                ),
                Ok(None)
            )
        });
    }
}

/// What a process of a supervisor's user can change in it (`prlimit`, `setpriority`,
/// `sched_setaffinity`, `sched_setscheduler`, `ioprio_set`, its session's autogroup `nice`,
/// its cgroup where the user may write one), and every later script would inherit.
#[derive(Debug, PartialEq, Eq)]
struct Inheritance {
    limits: String,
    nice: i32,
    cpus: Vec<usize>,
    /// The scheduling policy and I/O priority (any priority of no class is one: the kernel
    /// reads it from `nice`).
    scheduling: Option<(i32, i32)>,
    /// The `nice` of its session's autogroup (0 where the kernel has none).
    autogroup: String,
    cgroup: String,
}

impl Inheritance {
    /// `pid`'s, or `None` when it cannot be read (it is gone, or `/proc` hides it).
    fn of(pid: Pid) -> Option<Self> {
        let proc = PathBuf::from(format!("/proc/{}", pid.as_raw_pid()));
        let read = |name: &str| std::fs::read_to_string(proc.join(name)).ok();
        let set = rustix::thread::sched_getaffinity(Some(pid)).ok()?;
        Some(Self {
            limits: read("limits")?,
            nice: rustix::process::getpriority_process(Some(pid)).ok()?,
            cpus: (0..rustix::thread::CpuSet::MAX_CPU)
                .filter(|&cpu| set.is_set(cpu))
                .collect(),
            scheduling: SCHEDULING.get().map(|read| {
                let (policy, io) = read(pid.as_raw_pid());
                const CLASS_SHIFT: i32 = 13;
                (policy, if io >> CLASS_SHIFT == 0 { 0 } else { io })
            }),
            autogroup: read("autogroup")
                .and_then(|a| {
                    a.split_once(" nice ")
                        .map(|(_, nice)| nice.trim().to_owned())
                })
                .unwrap_or_else(|| "0".to_owned()),
            cgroup: read("cgroup")?,
        })
    }

    /// What a supervisor forked from this process starts with: the same, in an autogroup of
    /// its own (it starts a session), whose `nice` is 0.
    fn of_a_new_supervisor() -> Option<Self> {
        Self::of(rustix::process::getpid()).map(|own| Self {
            autogroup: "0".to_owned(),
            ..own
        })
    }
}

fn serve(parent: u32, keep: usize) -> io::Result<()> {
    let Some(&fork) = FORK.get() else {
        return Err(io::Error::other("this build cannot fork"));
    };
    // It ends when its socket does: when the server closes it, or dies. (Not by a parent-death
    // signal: that would come when the server's thread that started it ends.)
    if rustix::process::getppid().map(Pid::as_raw_pid) != i32::try_from(parent).ok() {
        return Ok(());
    }
    // Its memory holds nothing secret, but a script of the server's own user must not take it
    // over to start processes the server would signal.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let socket = UnixStream::from(rustix::io::dup(rustix::stdio::stdin())?);
    // Its stdin is now the socket's only copy; the supervisors get /dev/null.
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    let me = rustix::process::getpid();
    let mut pool = Pool {
        idle: Vec::new(),
        busy: Vec::new(),
        leaving: Vec::new(),
        keep,
        inheritance: None,
        unreadable_said: false,
    };
    loop {
        pool.reap();
        // Every second while any supervisor is yet to be reaped.
        let timeout = rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        let readable = {
            let mut poll: Vec<_> = std::iter::once(&socket)
                .chain(pool.busy.iter().map(|s| &s.socket))
                .chain(pool.idle.iter().map(|s| &s.socket))
                .map(|s| rustix::event::PollFd::new(s, rustix::event::PollFlags::IN))
                .collect();
            let timeout = (!pool.leaving.is_empty()).then_some(&timeout);
            match rustix::event::poll(&mut poll, timeout) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            poll.iter()
                .map(|p| !p.revents().is_empty())
                .collect::<Vec<_>>()
        };
        // The idle ones first, then the busy ones, each from the last, so that each index
        // still points at its supervisor (a busy one that is free joins the idle ones).
        let busy = pool.busy.len();
        for at in (0..pool.idle.len()).rev() {
            if readable[1 + busy + at] {
                pool.heard_from_idle(at);
            }
        }
        for at in (0..busy).rev() {
            if readable[1 + at] {
                pool.heard_from_busy(at);
            }
        }
        if !readable[0] {
            continue;
        }
        let Some((request, fds)) = read_request(&socket)? else {
            return Ok(());
        };
        let answer = match (decode(&request), script_fds(fds)) {
            (Some(script), Some(fds)) => match pool.hand_to_idle(script.user, &request, &fds) {
                Some(pid) => Ok(pid),
                None => match fork_supervisor(fork, script.user) {
                    Ok(Forked::Child(socket_of_its_own)) => {
                        // The child holds no one else's descriptors: not the server's socket,
                        // nor another supervisor's, nor this step's (it gets them again with
                        // the request).
                        drop((socket, pool, fds));
                        super::supervise::serve(me, socket_of_its_own)
                    }
                    Ok(Forked::Parent(supervisor)) => pool
                        .hand_to(supervisor, &request, &fds, SendFlags::empty())
                        .ok_or_else(|| io::Error::from(rustix::io::Errno::AGAIN)),
                    // Out of processes, say: this step does not start; the spawner goes on.
                    Err(e) => Err(e),
                },
            },
            _ => Err(io::Error::from(rustix::io::Errno::INVAL)),
        };
        let answer = match answer {
            Ok(pid) => answer_bytes(0, pid.as_raw_pid()),
            Err(e) => answer_bytes(
                1,
                e.raw_os_error()
                    .unwrap_or(rustix::io::Errno::IO.raw_os_error()),
            ),
        };
        (&socket).write_all(&answer)?;
    }
}

/// Which side of [`fork_supervisor`]'s fork this is.
enum Forked {
    /// The spawner, with the new supervisor.
    Parent(Supervisor),
    /// The new supervisor, with its end of the spawner's socket.
    Child(UnixStream),
}

/// Forks a supervisor for steps of `user`, with a socket to it.
fn fork_supervisor(fork: ForkFn, user: Option<(u32, u32)>) -> io::Result<Forked> {
    let (ours, theirs) = UnixStream::pair()?;
    // A supervisor that does not read its request is given up.
    ours.set_write_timeout(Some(ANSWER_WITHIN))?;
    let Some(pid) = fork()? else {
        drop(ours);
        return Ok(Forked::Child(theirs));
    };
    // Not reaped yet, so the pid is still the child's.
    match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(pidfd) => Ok(Forked::Parent(Supervisor {
            pid,
            pidfd,
            user,
            socket: ours,
        })),
        Err(e) => {
            // Not reaped yet: the pid is still the child's, killed and reaped here.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
            Err(e.into())
        }
    }
}

fn answer_bytes(kind: u8, value: i32) -> [u8; 5] {
    let v = value.to_ne_bytes();
    [kind, v[0], v[1], v[2], v[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(user: Option<(u32, u32)>) -> Script {
        Script {
            program: "sh".into(),
            args: vec![
                "-c".into(),
                "echo \"$A\" = b; true".into(),
                String::new().into(),
            ],
            env: vec![
                ("A".into(), "x=y".into()),
                ("EMPTY".into(), "".into()),
                ("UTF".into(), OsString::from_vec(vec![0xff, b'z'])),
            ],
            work_dir: "/tmp/w d".into(),
            user,
        }
    }

    #[test]
    fn a_request_decodes_to_the_script_it_encodes() {
        for user in [None, Some((1000, 1001))] {
            let s = script(user);
            assert_eq!(decode(&encode(&s).unwrap()), Some(s));
        }
    }

    #[test]
    fn a_nul_or_a_name_with_an_equals_sign_is_refused_not_read_back_as_more_variables() {
        let mut s = script(None);
        s.env = vec![("REF".into(), "x\0BASH_ENV=/tmp/evil".into())];
        let err = encode(&s).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("the variable REF holds a NUL"),
            "{err}"
        );
        s.env = vec![("A=B".into(), "c".into())];
        assert_eq!(encode(&s).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let mut s = script(None);
        s.args = vec!["-c".into(), "echo\0rm".into()];
        assert_eq!(encode(&s).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_malformed_request_decodes_to_nothing() {
        let good = encode(&script(None)).unwrap();
        assert_eq!(decode(&good[..good.len() - 1]), None, "no final NUL");
        assert_eq!(
            decode(b"/w\x001\x00\x00sh\x000\x00"),
            None,
            "a uid without a gid"
        );
        assert_eq!(
            decode(b"/w\x00\x00\x00sh\x003\x00-c\x00"),
            None,
            "missing arguments"
        );
        assert_eq!(
            decode(b"/w\x00\x00\x00sh\x000\x00NOEQUALS\x00"),
            None,
            "a bad variable"
        );
        assert_eq!(decode(b""), None);
    }
}
