//! The step spawner: `triggerd step-spawner`, one small, single-threaded child the server
//! starts once. For each Run step it forks a [supervisor](super::supervise) of its own, which
//! drops to the step's user and starts the script.
//!
//! Forking the server itself for each step copied its page tables (tens of MiB of mappings,
//! tokio's threads, SQLite's cache) and made every thread fault on its next write. Then
//! `exec`ing this 150 MB binary again, to supervise, cost its relocations and page faults: 60 %
//! of all CPU time, most of it in the kernel, at 250 one-step pipelines per second. A fork of
//! this small process costs a fraction of that, and the supervisor needs no `exec`.
//!
//! The server and the spawner talk over a Unix stream socket (the spawner's stdin). A request
//! is a length, then [`Script`] fields, with the step's three pipe ends attached (`SCM_RIGHTS`):
//! its stdout, its stderr, and a status pipe on which the supervisor writes the script's wait
//! status before it exits. The answer is the supervisor's pid (or an errno) with a pidfd
//! attached, through which the server signals it even after the spawner has reaped it.
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
}

/// A supervisor the spawner started.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid: also its session and process group once it has called `setsid`.
    pub pid: Pid,
    /// A pidfd for it: it is not the server's child, so its pid may be another process's
    /// once the spawner has reaped it.
    pub pidfd: OwnedFd,
}

/// The server's handle on its spawner. A spawner that died (it never should, but an operator
/// or the OOM killer may kill it) is started again for the next step.
#[derive(Debug)]
pub struct Spawner {
    binary: PathBuf,
    /// How far below this process's priority the spawner, and so every step, runs.
    nice: i32,
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
    /// Starts `binary step-spawner` with a cleared environment.
    pub fn start(binary: &Path, nice: i32) -> io::Result<Self> {
        let connection = Connection::start(binary, nice)?;
        Ok(Self {
            binary: binary.to_path_buf(),
            nice,
            connection: Mutex::new(Some(connection)),
        })
    }

    /// Starts `script` under a new supervisor (off the async threads: the spawner answers in
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
                _ => connection.insert(Connection::start(&self.binary, self.nice)?),
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
    fn start(binary: &Path, nice: i32) -> io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        // A spawner that does not answer (stopped, say) is given up, not waited for forever.
        ours.set_read_timeout(Some(ANSWER_WITHIN))?;
        ours.set_write_timeout(Some(ANSWER_WITHIN))?;
        let process = tokio::process::Command::new(binary)
            .arg("step-spawner")
            .arg("--parent")
            .arg(std::process::id().to_string())
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
        let header = u32::try_from(request.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request too large"))?
            .to_ne_bytes();
        send_with_fds(
            &self.socket,
            &header,
            &[fds.stdout.as_fd(), fds.stderr.as_fd(), fds.status.as_fd()],
        )?;
        self.socket.write_all(request)
    }

    /// The spawner's answer (the outer error: the connection broke; the inner one: the
    /// spawner could not start the supervisor, and says why).
    fn answer(&mut self) -> io::Result<io::Result<Spawned>> {
        let mut answer = [0u8; 5];
        let (n, mut pidfds) = recv_with_fds(&self.socket, &mut answer, 1)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.socket.read_exact(&mut answer[n..])?;
        let value = i32::from_ne_bytes([answer[1], answer[2], answer[3], answer[4]]);
        if answer[0] != 0 {
            return Ok(Err(io::Error::from_raw_os_error(value)));
        }
        let pid = Pid::from_raw(value)
            .ok_or_else(|| io::Error::other("the spawner answered an invalid pid"))?;
        let pidfd = pidfds
            .pop()
            .ok_or_else(|| io::Error::other("the spawner answered no pidfd"))?;
        Ok(Ok(Spawned { pid, pidfd }))
    }
}

/// Sends `bytes` (all at once, or an error) with `fds` attached.
fn send_with_fds(
    socket: &UnixStream,
    bytes: &[u8],
    fds: &[rustix::fd::BorrowedFd<'_>],
) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors to pass"));
    }
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
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
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
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

fn decode(bytes: &[u8]) -> Option<Script> {
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
/// is the server's pid: if it is already gone, nothing is served.
pub fn run(parent: u32) -> ! {
    let code = match serve(parent) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("[triggerd] step-spawner: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn serve(parent: u32) -> io::Result<()> {
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
    let mut running = 0usize;
    loop {
        // Ended supervisors are reaped before each request, and every 50 ms while any runs.
        while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
            running = running.saturating_sub(1);
        }
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        let mut poll = [rustix::event::PollFd::new(
            &socket,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut poll, (running > 0).then_some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let mut header = [0u8; 4];
        let (n, fds) = recv_with_fds(&socket, &mut header, 3)?;
        if n == 0 {
            return Ok(());
        }
        (&socket).read_exact(&mut header[n..])?;
        let len = u32::from_ne_bytes(header) as usize;
        if len > MAX_REQUEST {
            return Err(io::Error::other("a request over the size limit"));
        }
        let mut body = vec![0u8; len];
        (&socket).read_exact(&mut body)?;
        let answer = match (decode(&body), <[OwnedFd; 3]>::try_from(fds)) {
            (Some(script), Ok([stdout, stderr, status])) => match fork() {
                Ok(None) => {
                    drop(socket);
                    super::supervise::run_forked(
                        me,
                        &script,
                        ScriptFds {
                            stdout,
                            stderr,
                            status,
                        },
                    )
                }
                Ok(Some(pid)) => {
                    running += 1;
                    // Not reaped yet, so the pid is still the child's.
                    rustix::process::pidfd_open(pid, PidfdFlags::empty())
                        .map(|pidfd| (pid, pidfd))
                        .inspect_err(|_| {
                            let _ =
                                rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                        })
                        .map_err(io::Error::from)
                }
                // Out of processes, say: this step does not start; the spawner goes on.
                Err(e) => Err(e),
            },
            _ => Err(io::Error::from(rustix::io::Errno::INVAL)),
        };
        match answer {
            Ok((pid, pidfd)) => send_with_fds(
                &socket,
                &answer_bytes(0, pid.as_raw_pid()),
                &[pidfd.as_fd()],
            )?,
            Err(e) => {
                let errno = e
                    .raw_os_error()
                    .unwrap_or(rustix::io::Errno::IO.raw_os_error());
                send_with_fds(&socket, &answer_bytes(1, errno), &[])?
            }
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
