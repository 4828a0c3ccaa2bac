//! Runs one `Run` step (DESIGN §6.1) as a real child process: `sh -c <command>` in its own
//! process group, with a cleared environment, stdout+stderr captured into one bounded log (tail
//! kept), and `KEY=VALUE` outputs read back from the file named by `TRIGGERD_OUTPUT`.
//!
//! Timeout, abort and even a normal exit end with `SIGKILL` to the whole group, so no background
//! job a script started outlives its step. The group also keeps terminal signals (Ctrl-C on the
//! server) away from the script: stopping it is the engine's job, through the abort token.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::OFlags;
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::spawner::{Script, ScriptFds, Spawner};
use crate::domain::pipeline::{format_duration, Shell};

/// The parent's variables a script may expect to find; everything else (the server's secrets
/// such as `TRIGGERD_ROOT_KEY` included) is cleared.
const INHERITED_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER"];

/// How long to keep reading stdout/stderr once the group is dead: a process that left the group
/// (`setsid`) may hold the pipes open forever, and must not hold the step with them.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// How long a supervisor asked to stop may take to kill the step's processes and exit.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(5);

/// At most this much of the output file is read.
pub const MAX_OUTPUT_FILE_BYTES: usize = 64 * 1024;

/// At most this many distinct output keys are kept.
pub const MAX_OUTPUTS: usize = 100;

/// Skipped output lines are named one by one up to this count, then summed up.
const MAX_NOTED_LINES: usize = 10;

/// Prefix of the lines the runner itself adds to the log.
const NOTE: &str = "[triggerd]";

/// Everything one Run step needs; the engine has already resolved every expression.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The interpreter; its program name is [`Shell::as_str`].
    pub shell: Shell,
    /// The script text, passed as the single argument after `-c`; never interpolated.
    pub command: String,
    /// The resolved step env plus the engine's `TRIGGERD_*` variables, passed verbatim.
    pub env: Vec<(String, String)>,
    /// The child's working directory; must exist.
    pub work_dir: PathBuf,
    /// Exposed as `TRIGGERD_OUTPUT` and parsed after the exit. Whatever is at that name is
    /// removed before the start; the script creates the file when it has outputs to give.
    pub output_file: PathBuf,
    /// Wall-clock limit from spawn to exit.
    pub timeout: Duration,
    /// Bound on the captured stdout+stderr bytes; the tail is kept. The runner's own lines
    /// (how much was dropped, skipped output lines) come on top.
    pub max_log_bytes: usize,
    /// Where output also goes as it arrives, for the live log; `None` keeps only the stored log.
    pub live: Option<LiveSink>,
    /// The spawner that starts the script under a supervisor (see [`super::supervise`]);
    /// `None` runs it directly, held by its process group only.
    pub spawner: Option<Arc<Spawner>>,
    /// The user the script runs as, when not the server's own. The working directory and the
    /// output file are given to it; `HOME` is the working directory and `USER` its name.
    pub user: Option<super::run_user::RunUser>,
}

/// Output as it arrives: which stream, and the bytes read.
#[derive(Debug)]
pub struct Chunk {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The bytes, as read (not split into lines).
    pub bytes: Vec<u8>,
}

/// The sending half of the live log: never blocks the runner. When the reader falls behind,
/// chunks are dropped and counted (the stored log still has them).
#[derive(Debug, Clone)]
pub struct LiveSink {
    tx: tokio::sync::mpsc::Sender<Chunk>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The receiving half of the live log.
#[derive(Debug)]
pub struct LiveSource {
    /// Chunks in arrival order; ends when the runner is done.
    pub rx: tokio::sync::mpsc::Receiver<Chunk>,
    /// Bytes dropped because the reader fell behind.
    pub dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LiveSink {
    /// A sink and its source, holding at most `capacity` chunks in between.
    pub fn channel(capacity: usize) -> (LiveSink, LiveSource) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let dropped = std::sync::Arc::default();
        (
            LiveSink {
                tx,
                dropped: std::sync::Arc::clone(&dropped),
            },
            LiveSource { rx, dropped },
        )
    }

    fn send(&self, stream: &'static str, bytes: &[u8]) {
        let chunk = Chunk {
            stream,
            bytes: bytes.to_vec(),
        };
        if self.tx.try_send(chunk).is_err() {
            self.dropped
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// How a Run step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Exit code 0.
    Succeeded,
    /// A nonzero exit code, or death by a signal the runner did not send.
    Failed {
        /// The exit code, when the script exited.
        exit_code: Option<i32>,
        /// The signal number, when the script was killed.
        signal: Option<i32>,
    },
    /// The timeout passed; the group was killed.
    TimedOut,
    /// The abort token was cancelled; the group was killed (or never started).
    Aborted,
    /// The shell could not be started (or the output file's name not cleared).
    SpawnFailed,
}

/// The outcome of [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// How it ended.
    pub status: RunStatus,
    /// stdout+stderr in arrival order (lossy UTF-8), bounded, then the runner's notes.
    pub log: String,
    /// `KEY=VALUE` lines of the output file; read whatever the status, once the process ran.
    pub outputs: BTreeMap<String, String>,
    /// One human line: `exit code 3`, `timed out after 1s`, `aborted`, `could not start sh: ...`.
    pub message: String,
    /// Whether every process the step started is known to be gone: none was started, or its
    /// supervisor reported the script's end, which it does after killing them all. A process
    /// that a script detached, and then killed its own supervisor, may outlive the step.
    pub swept: bool,
}

impl RunResult {
    fn without_process(status: RunStatus, message: String) -> Self {
        Self {
            status,
            log: String::new(),
            outputs: BTreeMap::new(),
            message,
            swept: true,
        }
    }
}

/// Runs `req.command` with `req.shell` until it exits, `req.timeout` passes or `abort` is
/// cancelled, whichever comes first. Never panics; every failure is a [`RunStatus`].
///
/// Dropping the returned future kills the process group too.
pub async fn run(req: RunRequest, abort: CancellationToken) -> RunResult {
    let shell = req.shell.as_str();
    if abort.is_cancelled() {
        return RunResult::without_process(RunStatus::Aborted, "aborted".to_owned());
    }
    if let Err(e) = clear_output_file(&req.output_file) {
        return RunResult::without_process(
            RunStatus::SpawnFailed,
            format!(
                "could not clear the output file {}: {e}",
                req.output_file.display()
            ),
        );
    }

    let started = match &req.spawner {
        Some(spawner) => start_supervised(spawner, &req).await,
        None => start_direct(&req),
    };
    let Started {
        mut process,
        stdout,
        stderr,
        mut group,
    } = match started {
        Ok(started) => started,
        Err(e) => {
            return RunResult::without_process(
                RunStatus::SpawnFailed,
                format!("could not start {shell}: {e}"),
            )
        }
    };

    let mut log = TailBuffer::new(req.max_log_bytes);
    let (ending, swept) = {
        let drain = drain(stdout, stderr, &mut log, req.live.as_ref());
        tokio::pin!(drain);
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let mut drained = false;
        let ending = loop {
            tokio::select! {
                biased;
                status = process.wait() => break Ending::Exited(status),
                () = &mut deadline => break Ending::TimedOut,
                () = abort.cancelled() => break Ending::Aborted,
                () = &mut drain, if !drained => drained = true,
            }
        };
        if group.stop.is_some() {
            // The supervisor killed everything the script started before it reported. On a
            // timeout or abort it is told to, and given a moment; the group is the fallback.
            if !matches!(ending, Ending::Exited(_)) {
                group.stop_supervisor();
                if tokio::time::timeout(SUPERVISOR_GRACE, process.wait())
                    .await
                    .is_err()
                {
                    group.kill();
                    let _ = process.wait().await;
                }
            }
            // A backstop in case the supervisor itself was killed (by the script, which may
            // run as the same user): its group, which is also its session, gets SIGKILL. The
            // number cannot have been reused while any member of the group is alive. A
            // supervisor that reported the script's end has killed everything below it, and
            // takes the next step once let go of this one: nothing is sent then.
            if process.reported() {
                group.leader = None;
            } else {
                group.kill();
            }
            group.let_go();
        } else {
            // Also after a normal exit, so no background job survives. The main child is
            // reaped at most just before this; its pid cannot have been reused as a group id
            // meanwhile while any member of its group is alive (Linux keeps the number taken),
            // and if none is, there is nothing left to kill.
            if !group.kill() {
                process.start_kill();
            }
            if !matches!(ending, Ending::Exited(_)) {
                // SIGKILL cannot be caught: this returns as soon as the kernel has killed it.
                let _ = process.wait().await;
            }
        }
        if !drained {
            let _ = tokio::time::timeout(DRAIN_GRACE, &mut drain).await;
        }
        (ending, process.reported())
    };

    let (status, message) = match ending {
        Ending::Exited(Ok(status)) => classify(status),
        Ending::Exited(Err(e)) => (
            RunStatus::Failed {
                exit_code: None,
                signal: None,
            },
            format!("could not wait for {shell}: {e}"),
        ),
        Ending::TimedOut => (
            RunStatus::TimedOut,
            format!("timed out after {}", format_duration(req.timeout)),
        ),
        Ending::Aborted => (RunStatus::Aborted, "aborted".to_owned()),
    };

    let (outputs, notes) = read_outputs(&req.output_file).await;
    let mut log = log.into_string();
    if !notes.is_empty() && !log.is_empty() && !log.ends_with('\n') {
        log.push('\n');
    }
    for note in notes {
        log.push_str(NOTE);
        log.push(' ');
        log.push_str(&note);
        log.push('\n');
    }
    RunResult {
        status,
        log,
        outputs,
        message,
        swept,
    }
}

/// A started script: its process, its output pipes, and what kills it.
struct Started {
    process: Process,
    stdout: Option<Output>,
    stderr: Option<Output>,
    group: GroupKiller,
}

/// The read end of stdout or stderr.
type Output = Box<dyn AsyncRead + Send + Unpin>;

/// The script's process: a direct child, or a supervisor the spawner forked (not this
/// process's child), which reports the script's wait status on a pipe once it has killed every
/// process of the step.
enum Process {
    Direct(Child),
    Supervised {
        status: pipe::Receiver,
        read: Vec<u8>,
    },
}

impl Process {
    /// Waits for the end; cancel-safe, like [`Child::wait`].
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Self::Direct(child) => child.wait().await,
            Self::Supervised { status, read } => {
                let mut buf = [0u8; 4];
                while read.len() < buf.len() {
                    match status.read(&mut buf[..4 - read.len()]).await? {
                        // Gone without a word: the supervisor was killed (by the group
                        // backstop, or by the script, which runs as the same user).
                        0 => return Ok(ExitStatus::from_raw(Signal::KILL.as_raw())),
                        n => read.extend_from_slice(&buf[..n]),
                    }
                }
                let raw = i32::from_ne_bytes([read[0], read[1], read[2], read[3]]);
                Ok(ExitStatus::from_raw(raw))
            }
        }
    }

    /// A supervisor that wrote the script's whole wait status (it had killed every process of
    /// the step first).
    fn reported(&self) -> bool {
        matches!(self, Self::Supervised { read, .. } if read.len() == 4)
    }

    /// Sends `SIGKILL` to a direct child (a supervisor is stopped through its group).
    fn start_kill(&mut self) {
        if let Self::Direct(child) = self {
            let _ = child.start_kill();
        }
    }
}

/// The script's whole environment: a few of the server's variables, then the step's, then
/// `TRIGGERD_OUTPUT`, last so the step's env cannot point the runner at another file.
fn script_env(req: &RunRequest) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut set = |key: &OsStr, value: &OsStr| {
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value.to_owned()));
    };
    for name in INHERITED_ENV {
        if let Some(value) = std::env::var_os(name) {
            set(name.as_ref(), &value);
        }
    }
    if let Some(user) = &req.user {
        set("HOME".as_ref(), req.work_dir.as_os_str());
        set("USER".as_ref(), user.name.as_ref());
    }
    for (key, value) in &req.env {
        set(key.as_ref(), value.as_ref());
    }
    set("TRIGGERD_OUTPUT".as_ref(), req.output_file.as_os_str());
    env
}

/// Starts the script under a supervisor the spawner forks: it runs as the step's user (the
/// supervisor too, so no process of the server's user ever gets the step's environment, such
/// as `LD_PRELOAD`, and it can still kill what the script started), in a session of its own.
async fn start_supervised(spawner: &Arc<Spawner>, req: &RunRequest) -> io::Result<Started> {
    let (stdout, stdout_w) = step_pipe()?;
    let (stderr, stderr_w) = step_pipe()?;
    let (status, status_w) = step_pipe()?;
    let (stop_r, stop_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let fds = ScriptFds {
        stdout: stdout_w,
        stderr: stderr_w,
        status: status_w,
        stop: stop_r,
    };
    let script = Script {
        program: req.shell.as_str().into(),
        args: vec!["-c".into(), req.command.clone().into()],
        env: script_env(req),
        work_dir: req.work_dir.clone(),
        user: req.user.as_ref().map(|u| (u.uid, u.gid)),
    };
    // The supervisor's ends are closed here once sent: it (and the script) hold the only
    // copies, so each pipe ends when they are gone.
    let spawned = spawner.spawn(script, fds).await?;
    Ok(Started {
        process: Process::Supervised {
            status,
            read: Vec::new(),
        },
        stdout: Some(Box::new(stdout)),
        stderr: Some(Box::new(stderr)),
        group: GroupKiller {
            leader: Some(spawned.pid),
            stop: Some(stop_w),
        },
    })
}

/// A pipe: the runner's read end, and a blocking write end for the supervisor.
fn step_pipe() -> io::Result<(pipe::Receiver, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((pipe::Receiver::from_owned_fd(read)?, write))
}

/// Starts the script as a direct child in a process group of its own, killed as one.
fn start_direct(req: &RunRequest) -> io::Result<Started> {
    let mut command = Command::new(req.shell.as_str());
    if let Some(user) = &req.user {
        command.uid(user.uid).gid(user.gid);
    }
    command
        .arg("-c")
        .arg(&req.command)
        .current_dir(&req.work_dir)
        .env_clear()
        .envs(script_env(req))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn()?;
    // With `process_group(0)` the group id is the child's pid.
    let leader = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    Ok(Started {
        stdout: child.stdout.take().map(|o| Box::new(o) as Output),
        stderr: child.stderr.take().map(|e| Box::new(e) as Output),
        process: Process::Direct(child),
        group: GroupKiller { leader, stop: None },
    })
}

/// Removes whatever an earlier attempt left at the output file's name, so that only this
/// attempt's outputs are read. The file is not created here: a script with outputs creates it
/// (`>>` does), as its own user, and most scripts have none. On a file system that avoids
/// reusing freed inodes (ext4 without a journal), each inode created and removed per execution
/// cost the engine more than a fork: a third of them went with this file.
fn clear_output_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        done => done,
    }
}

/// Why the wait for the child stopped.
enum Ending {
    Exited(io::Result<ExitStatus>),
    TimedOut,
    Aborted,
}

/// Ends the child's processes, once: explicitly, or on drop if the future running the step is
/// dropped midway. A supervisor is asked (on the step's stop pipe), so that it can kill what
/// left the group; an unsupervised script's group gets `SIGKILL`.
struct GroupKiller {
    /// The script's (or the supervisor's) pid, which is its process group's id; `None` once
    /// killed.
    leader: Option<Pid>,
    /// For a supervisor: this end of the step's stop pipe, until the step is let go of.
    stop: Option<OwnedFd>,
}

impl GroupKiller {
    /// Asks the supervisor to kill the step's processes and report (a byte on the stop pipe,
    /// which it reads only while this step runs: a supervisor runs one step after another).
    fn stop_supervisor(&self) {
        if let Some(stop) = &self.stop {
            let _ = rustix::io::write(stop, b"s");
        }
    }

    /// Closes the stop pipe: the supervisor, once it has reported, may take the next step, so
    /// its session is not killed from here any more.
    fn let_go(&mut self) {
        self.leader = None;
        self.stop = None;
    }

    /// Kills the group; false when there was no group id to kill.
    fn kill(&mut self) -> bool {
        match self.leader.take() {
            Some(pgid) => {
                // ESRCH (everyone already gone) is the good case; nothing else can be done
                // about the rest.
                let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
                true
            }
            None => false,
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.stop_supervisor();
        } else {
            self.kill();
        }
    }
}

fn classify(status: ExitStatus) -> (RunStatus, String) {
    match (status.code(), status.signal()) {
        (Some(0), _) => (RunStatus::Succeeded, "exit code 0".to_owned()),
        (Some(code), _) => (
            RunStatus::Failed {
                exit_code: Some(code),
                signal: None,
            },
            format!("exit code {code}"),
        ),
        (None, Some(signal)) => (
            RunStatus::Failed {
                exit_code: None,
                signal: Some(signal),
            },
            match signal_name(signal) {
                Some(name) => format!("killed by signal {signal} ({name})"),
                None => format!("killed by signal {signal}"),
            },
        ),
        (None, None) => (
            RunStatus::Failed {
                exit_code: None,
                signal: None,
            },
            format!("ended abnormally ({status})"),
        ),
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Log capture

/// Reads both pipes until both reach end of file, appending chunks in arrival order.
async fn drain(
    mut stdout: Option<Output>,
    mut stderr: Option<Output>,
    log: &mut TailBuffer,
    live: Option<&LiveSink>,
) {
    let mut out_buf = [0u8; 8192];
    let mut err_buf = [0u8; 8192];
    let mut push = |stream: &'static str, bytes: &[u8]| {
        log.push(bytes);
        if let Some(live) = live {
            live.send(stream, bytes);
        }
    };
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Some(n) => push("stdout", &out_buf[..n]),
                None => stdout = None,
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Some(n) => push("stderr", &err_buf[..n]),
                None => stderr = None,
            },
        }
    }
}

/// One read; `None` at end of file or on error, pending forever once the pipe is closed.
async fn read_some<R: AsyncRead + Unpin>(reader: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match reader {
        Some(reader) => match reader.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// The last `limit` bytes pushed, and how many came before them.
struct TailBuffer {
    bytes: VecDeque<u8>,
    limit: usize,
    dropped: u64,
}

impl TailBuffer {
    fn new(limit: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            limit,
            dropped: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let chunk = if chunk.len() > self.limit {
            let cut = chunk.len() - self.limit;
            self.dropped += cut as u64;
            &chunk[cut..]
        } else {
            chunk
        };
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.dropped += overflow as u64;
        self.bytes.extend(chunk);
    }

    /// The kept bytes as lossy UTF-8, after a line saying how many were dropped, if any.
    fn into_string(self) -> String {
        let bytes = Vec::from(self.bytes);
        let mut dropped = self.dropped;
        let mut start = 0;
        if dropped > 0 {
            // Don't start on the remains of a character cut in two.
            while start < bytes.len().min(3) && bytes[start] & 0xC0 == 0x80 {
                start += 1;
            }
            dropped += start as u64;
        }
        let mut log = String::new();
        if dropped > 0 {
            log.push_str(&format!(
                "{NOTE} log truncated: the first {dropped} bytes were dropped\n"
            ));
        }
        log.push_str(&String::from_utf8_lossy(&bytes[start..]));
        log
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs

/// Reads and parses the output file; also returns notes for the log.
async fn read_outputs(path: &Path) -> (BTreeMap<String, String>, Vec<String>) {
    match read_capped(path).await {
        Ok(Some((bytes, truncated))) => parse_outputs(&bytes, truncated),
        // The script removed it: it has no outputs to give.
        Ok(None) => (BTreeMap::new(), Vec::new()),
        Err(e) => (
            BTreeMap::new(),
            vec![format!("could not read the output file: {e}")],
        ),
    }
}

/// Up to [`MAX_OUTPUT_FILE_BYTES`] of the file and whether there was more; `None` if it is gone.
///
/// The script may have replaced the file: a symlink is refused, a FIFO cannot block the open
/// (non-blocking) and anything but a regular file is refused.
async fn read_capped(path: &Path) -> io::Result<Option<(Vec<u8>, bool)>> {
    let flags = (OFlags::NONBLOCK | OFlags::NOFOLLOW).bits() as i32;
    let file = match tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .await
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata().await?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "it is not a regular file",
        ));
    }
    if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
        // A hard link to another file: the server would read that file for the script.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "it is a hard link to another file",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_OUTPUT_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await?;
    let truncated = bytes.len() > MAX_OUTPUT_FILE_BYTES;
    bytes.truncate(MAX_OUTPUT_FILE_BYTES);
    Ok(Some((bytes, truncated)))
}

/// Parses `KEY=VALUE` lines (split at the first `=`), skipping blank lines and `#` comments.
/// Invalid lines are skipped and named in the notes, by number and never by value.
fn parse_outputs(bytes: &[u8], truncated: bool) -> (BTreeMap<String, String>, Vec<String>) {
    let mut notes = Vec::new();
    let mut bytes = bytes;
    if truncated {
        notes.push(format!(
            "the output file is larger than {} KiB; only its first {} KiB were read",
            MAX_OUTPUT_FILE_BYTES / 1024,
            MAX_OUTPUT_FILE_BYTES / 1024
        ));
        // The last line was cut: drop it rather than keep half a value.
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes = &bytes[..end];
    }
    let text = String::from_utf8_lossy(bytes);

    let mut outputs = BTreeMap::new();
    let mut invalid = 0usize;
    let mut over_cap = 0usize;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            invalid += 1;
            if invalid <= MAX_NOTED_LINES {
                notes.push(format!(
                    "output file line {number} skipped: no `=` (expected KEY=VALUE)"
                ));
            }
            continue;
        };
        if !is_identifier(key) {
            invalid += 1;
            if invalid <= MAX_NOTED_LINES {
                notes.push(format!(
                    "output file line {number} skipped: `{}` is not a valid name",
                    shorten(key)
                ));
            }
            continue;
        }
        if outputs.len() >= MAX_OUTPUTS && !outputs.contains_key(key) {
            over_cap += 1;
            continue;
        }
        outputs.insert(key.to_owned(), value.to_owned());
    }
    if invalid > MAX_NOTED_LINES {
        notes.push(format!(
            "{} more invalid output file lines skipped",
            invalid - MAX_NOTED_LINES
        ));
    }
    if over_cap > 0 {
        notes.push(format!(
            "more than {MAX_OUTPUTS} outputs: {over_cap} lines with further keys ignored"
        ));
    }
    (outputs, notes)
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// At most 40 characters of a key, for a note.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rustix::io::Errno;
    use tempfile::TempDir;

    use super::*;

    fn request(dir: &TempDir, command: &str) -> RunRequest {
        RunRequest {
            shell: Shell::Sh,
            command: command.to_owned(),
            env: Vec::new(),
            work_dir: dir.path().to_path_buf(),
            output_file: dir.path().join("output"),
            timeout: Duration::from_secs(10),
            max_log_bytes: 1 << 20,
            live: None,
            spawner: None,
            user: None,
        }
    }

    async fn run_sh(dir: &TempDir, command: &str) -> RunResult {
        run(request(dir, command), CancellationToken::new()).await
    }

    /// Waits, up to a deadline, until a file holds one full line, and parses it as a pid.
    async fn wait_for_pid(path: &Path) -> Pid {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Some(line) = text.strip_suffix('\n') {
                    let raw: i32 = line.trim().parse().expect("a pid");
                    return Pid::from_raw(raw).expect("a positive pid");
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} never written",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Gone, or a zombie (killed, waiting for whoever inherited it to reap it).
    fn is_dead(pid: Pid) -> bool {
        match rustix::process::test_kill_process(pid) {
            Err(Errno::SRCH) => true,
            _ => std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_pid()))
                .ok()
                .and_then(|stat| {
                    let after_name = &stat[stat.rfind(')')? + 1..];
                    after_name.split_whitespace().next().map(|s| s == "Z")
                })
                .unwrap_or(true),
        }
    }

    async fn wait_until_dead(pid: Pid) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if is_dead(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        is_dead(pid)
    }

    #[tokio::test]
    async fn exit_zero_succeeds() {
        let dir = TempDir::new().unwrap();

        let result = run_sh(&dir, "true").await;

        assert_eq!(result.status, RunStatus::Succeeded);
        assert_eq!(result.message, "exit code 0");
    }

    #[tokio::test]
    async fn nonzero_exit_fails_with_its_code() {
        let dir = TempDir::new().unwrap();

        let result = run_sh(&dir, "exit 3").await;

        assert_eq!(
            result.status,
            RunStatus::Failed {
                exit_code: Some(3),
                signal: None
            }
        );
        assert_eq!(result.message, "exit code 3");
    }

    #[tokio::test]
    async fn death_by_signal_fails_with_the_signal() {
        let dir = TempDir::new().unwrap();

        let result = run_sh(&dir, "kill -TERM $$").await;

        assert_eq!(
            result.status,
            RunStatus::Failed {
                exit_code: None,
                signal: Some(15)
            }
        );
        assert_eq!(result.message, "killed by signal 15 (SIGTERM)");
    }

    #[tokio::test]
    async fn bash_is_used_when_asked_for() {
        let dir = TempDir::new().unwrap();
        let mut req = request(&dir, r#"printf '%s' "${BASH_VERSION:+bash}""#);
        req.shell = Shell::Bash;

        let result = run(req, CancellationToken::new()).await;

        assert_eq!(result.status, RunStatus::Succeeded, "{}", result.log);
        assert_eq!(result.log, "bash");
    }

    #[tokio::test]
    async fn stdout_and_stderr_are_captured_in_arrival_order() {
        let dir = TempDir::new().unwrap();

        let result = run_sh(
            &dir,
            "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three",
        )
        .await;

        assert_eq!(result.status, RunStatus::Succeeded);
        assert_eq!(result.log, "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn work_dir_is_the_current_directory() {
        let dir = TempDir::new().unwrap();

        let result = run_sh(&dir, "pwd -P").await;

        let expected = dir.path().canonicalize().unwrap();
        assert_eq!(result.log.trim_end(), expected.to_str().unwrap());
    }

    #[tokio::test]
    async fn env_values_reach_the_script_literally_and_never_execute() {
        let dir = TempDir::new().unwrap();
        let marker = dir.path().join("pwned");
        let keep = dir.path().join("keep");
        std::fs::create_dir(&keep).unwrap();
        let evil = format!(
            "$(touch {m}); rm -rf {k}; `touch {m}` && touch {m} | touch {m} \"'\\",
            m = marker.display(),
            k = keep.display()
        );
        let mut req = request(
            &dir,
            r#"printf '%s' "$EVIL"; printf 'EVIL=%s\n' "$EVIL" >> "$TRIGGERD_OUTPUT""#,
        );
        req.env = vec![("EVIL".to_owned(), evil.clone())];

        let result = run(req, CancellationToken::new()).await;

        assert_eq!(result.status, RunStatus::Succeeded, "{}", result.log);
        assert_eq!(result.log, evil);
        assert_eq!(result.outputs.get("EVIL"), Some(&evil));
        assert!(!marker.exists(), "the injected command ran");
        assert!(keep.exists(), "the injected rm ran");
    }

    #[tokio::test]
    async fn the_parent_environment_is_not_inherited() {
        let dir = TempDir::new().unwrap();
        let mut req = request(&dir, "env");
        req.env = vec![("STEP_VAR".to_owned(), "1".to_owned())];

        let result = run(req, CancellationToken::new()).await;

        assert_eq!(result.status, RunStatus::Succeeded, "{}", result.log);
        let names: Vec<&str> = result
            .log
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        // cargo sets these for the test process; the child must not see them.
        assert!(!names.contains(&"CARGO_PKG_NAME"), "{names:?}");
        assert!(!names.contains(&"CARGO"), "{names:?}");
        assert!(names.contains(&"STEP_VAR"), "{names:?}");
        assert!(names.contains(&"TRIGGERD_OUTPUT"), "{names:?}");
        // Besides the allowlist and the request, only what the shell itself sets.
        let shell_own = ["PWD", "OLDPWD", "SHLVL", "_"];
        for name in &names {
            assert!(
                INHERITED_ENV.contains(name)
                    || shell_own.contains(name)
                    || ["STEP_VAR", "TRIGGERD_OUTPUT"].contains(name),
                "{name} leaked into the child"
            );
        }
    }

    #[tokio::test]
    async fn the_step_env_cannot_redirect_the_output_file() {
        let dir = TempDir::new().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        let mut req = request(&dir, r#"echo "KEY=v" >> "$TRIGGERD_OUTPUT""#);
        req.env = vec![(
            "TRIGGERD_OUTPUT".to_owned(),
            elsewhere.to_str().unwrap().to_owned(),
        )];

        let result = run(req, CancellationToken::new()).await;

        assert_eq!(result.outputs.get("KEY").map(String::as_str), Some("v"));
        assert!(!elsewhere.exists());
    }

    #[tokio::test]
    async fn outputs_are_parsed_and_bad_lines_are_noted_in_the_log() {
        let dir = TempDir::new().unwrap();
        let script = r#"
            echo working
            {
              echo '# a comment'
              echo ''
              echo 'IMAGE=registry/app:1.2'
              echo 'URL=https://x/?a=b&c=d'
              echo '1BAD=x'
              echo 'just some text'
              printf 'WINDOWS=crlf\r\n'
              echo '_under_score9='
            } > "$TRIGGERD_OUTPUT"
        "#;

        let result = run_sh(&dir, script).await;

        assert_eq!(result.status, RunStatus::Succeeded, "{}", result.log);
        let expected: BTreeMap<String, String> = [
            ("IMAGE", "registry/app:1.2"),
            ("URL", "https://x/?a=b&c=d"),
            ("WINDOWS", "crlf"),
            ("_under_score9", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(result.outputs, expected);
        assert!(result.log.starts_with("working\n"), "{}", result.log);
        assert!(
            result
                .log
                .contains("line 5 skipped: `1BAD` is not a valid name"),
            "{}",
            result.log
        );
        assert!(
            result.log.contains("line 6 skipped: no `=`"),
            "{}",
            result.log
        );
        assert!(!result.log.contains("just some text"), "{}", result.log);
    }

    #[test]
    fn outputs_are_capped_at_100_keys() {
        let text: String = (0..150).map(|i| format!("K{i}=v\n")).collect();

        let (outputs, notes) = parse_outputs(text.as_bytes(), false);

        assert_eq!(outputs.len(), MAX_OUTPUTS);
        assert!(outputs.contains_key("K99") && !outputs.contains_key("K100"));
        assert_eq!(
            notes,
            ["more than 100 outputs: 50 lines with further keys ignored"]
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_even_at_the_cap() {
        let mut text: String = (0..100).map(|i| format!("K{i}=v\n")).collect();
        text.push_str("K0=last\n");

        let (outputs, notes) = parse_outputs(text.as_bytes(), false);

        assert_eq!(outputs["K0"], "last");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn only_ten_invalid_lines_are_named() {
        let text = "bad line\n".repeat(25);

        let (outputs, notes) = parse_outputs(text.as_bytes(), false);

        assert!(outputs.is_empty());
        assert_eq!(notes.len(), MAX_NOTED_LINES + 1);
        assert_eq!(
            notes[MAX_NOTED_LINES],
            "15 more invalid output file lines skipped"
        );
    }

    #[tokio::test]
    async fn a_huge_output_file_is_read_only_up_to_64_kib() {
        let dir = TempDir::new().unwrap();
        // 7 000 lines of 10 bytes; the line cut at 64 KiB is dropped, not half-kept.
        let script = r#"
            i=0
            while [ $i -lt 7000 ]; do echo "A=0123456"; i=$((i+1)); done > "$TRIGGERD_OUTPUT"
            printf 'LATE=1\n' >> "$TRIGGERD_OUTPUT"
        "#;

        let result = run_sh(&dir, script).await;

        assert_eq!(result.status, RunStatus::Succeeded, "{}", result.log);
        assert_eq!(result.outputs.len(), 1);
        assert_eq!(result.outputs["A"], "0123456");
        assert!(result.log.contains("larger than 64 KiB"), "{}", result.log);
    }

    #[tokio::test]
    async fn an_output_file_replaced_by_a_fifo_does_not_hang_the_run() {
        let dir = TempDir::new().unwrap();

        let started = Instant::now();
        let result = run_sh(&dir, r#"mkfifo "$TRIGGERD_OUTPUT""#).await;

        assert_eq!(result.status, RunStatus::Succeeded, "{}", result.log);
        assert!(result.outputs.is_empty());
        assert!(result.log.contains("not a regular file"), "{}", result.log);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn the_log_keeps_the_tail_and_says_how_much_was_dropped() {
        let dir = TempDir::new().unwrap();
        let mut req = request(&dir, "head -c 100000 /dev/zero | tr '\\0' a; echo END");
        req.max_log_bytes = 1000;

        let result = run(req, CancellationToken::new()).await;

        assert_eq!(result.status, RunStatus::Succeeded);
        let (first, rest) = result.log.split_once('\n').unwrap();
        assert_eq!(
            first,
            "[triggerd] log truncated: the first 99004 bytes were dropped"
        );
        assert_eq!(rest.len(), 1000);
        assert!(rest.ends_with("aaaEND\n"), "{rest}");
    }

    #[test]
    fn a_cut_character_at_the_start_of_the_tail_is_dropped_too() {
        let mut buffer = TailBuffer::new(3);
        buffer.push("xé".as_bytes()); // 3 bytes
        buffer.push(b"ab"); // keeps the last byte of é, then "ab"

        assert_eq!(
            buffer.into_string(),
            "[triggerd] log truncated: the first 3 bytes were dropped\nab"
        );
    }

    #[test]
    fn a_zero_byte_log_bound_keeps_nothing_and_counts_everything() {
        let mut buffer = TailBuffer::new(0);
        buffer.push(b"abc");

        assert_eq!(
            buffer.into_string(),
            "[triggerd] log truncated: the first 3 bytes were dropped\n"
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group_grandchildren_included() {
        let dir = TempDir::new().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let mut req = request(
            &dir,
            "sleep 30 & echo $! > grandchild.pid; echo started; sleep 30",
        );
        req.timeout = Duration::from_secs(1);

        let started = Instant::now();
        let result = run(req, CancellationToken::new()).await;

        assert_eq!(result.status, RunStatus::TimedOut);
        assert_eq!(result.message, "timed out after 1s");
        assert_eq!(result.log, "started\n");
        assert!(started.elapsed() < Duration::from_secs(10));
        let grandchild = wait_for_pid(&pid_file).await;
        assert!(wait_until_dead(grandchild).await, "grandchild survived");
    }

    #[tokio::test]
    async fn abort_kills_the_whole_group_grandchildren_included() {
        let dir = TempDir::new().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let req = request(&dir, "sleep 30 & echo $! > grandchild.pid; sleep 30");
        let abort = CancellationToken::new();
        let canceller = {
            let abort = abort.clone();
            let pid_file = pid_file.clone();
            tokio::spawn(async move {
                let pid = wait_for_pid(&pid_file).await;
                abort.cancel();
                pid
            })
        };

        let started = Instant::now();
        let result = run(req, abort).await;

        assert_eq!(result.status, RunStatus::Aborted);
        assert_eq!(result.message, "aborted");
        assert!(started.elapsed() < Duration::from_secs(10));
        let grandchild = canceller.await.unwrap();
        assert!(wait_until_dead(grandchild).await, "grandchild survived");
    }

    #[tokio::test]
    async fn an_already_cancelled_token_starts_nothing() {
        let dir = TempDir::new().unwrap();
        let marker = dir.path().join("ran");
        let abort = CancellationToken::new();
        abort.cancel();

        let result = run(request(&dir, "touch ran"), abort).await;

        assert_eq!(result.status, RunStatus::Aborted);
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn a_background_job_does_not_outlive_a_successful_step() {
        let dir = TempDir::new().unwrap();
        let pid_file = dir.path().join("grandchild.pid");

        let started = Instant::now();
        let result = run_sh(&dir, "sleep 30 & echo $! > grandchild.pid; echo done").await;

        assert_eq!(result.status, RunStatus::Succeeded);
        assert_eq!(result.log, "done\n");
        assert!(started.elapsed() < Duration::from_secs(5));
        let grandchild = wait_for_pid(&pid_file).await;
        assert!(wait_until_dead(grandchild).await, "background job survived");
    }

    #[tokio::test]
    async fn a_process_that_left_the_group_cannot_hold_the_step_open() {
        let dir = TempDir::new().unwrap();
        let pid_file = dir.path().join("escaped.pid");

        let started = Instant::now();
        let result = run_sh(&dir, "setsid sleep 30 & echo $! > escaped.pid; echo done").await;

        let escaped = wait_for_pid(&pid_file).await;
        let _ = rustix::process::kill_process(escaped, Signal::KILL);
        assert_eq!(result.status, RunStatus::Succeeded);
        assert_eq!(result.log, "done\n");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_missing_work_dir_is_a_spawn_failure() {
        let dir = TempDir::new().unwrap();
        let mut req = request(&dir, "true");
        req.work_dir = dir.path().join("missing");

        let result = run(req, CancellationToken::new()).await;

        assert_eq!(result.status, RunStatus::SpawnFailed);
        assert!(
            result.message.starts_with("could not start sh: "),
            "{}",
            result.message
        );
    }

    #[tokio::test]
    async fn an_output_file_name_that_cannot_be_cleared_is_a_spawn_failure() {
        let dir = TempDir::new().unwrap();
        let req = request(&dir, "touch started");
        std::fs::create_dir_all(req.output_file.join("inside")).unwrap();

        let result = run(req, CancellationToken::new()).await;

        assert_eq!(result.status, RunStatus::SpawnFailed);
        assert!(
            result
                .message
                .starts_with("could not clear the output file"),
            "{}",
            result.message
        );
        assert!(!dir.path().join("started").exists(), "the script ran");
    }

    #[tokio::test]
    async fn an_earlier_attempts_output_file_is_not_read_and_none_is_created() {
        let dir = TempDir::new().unwrap();
        let req = request(
            &dir,
            r#"if test -e "$TRIGGERD_OUTPUT"; then echo present; fi"#,
        );
        let output_file = req.output_file.clone();
        std::fs::write(&output_file, "STALE=1\n").unwrap();

        let result = run(req, CancellationToken::new()).await;

        assert_eq!(result.status, RunStatus::Succeeded, "{}", result.message);
        assert!(result.outputs.is_empty(), "{:?}", result.outputs);
        assert!(!result.log.contains("present"), "{}", result.log);
        assert!(!output_file.exists());
    }
}
