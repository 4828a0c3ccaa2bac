//! The live log of a running Run step (DESIGN §12): the runner's output, split into lines per
//! stream and appended to the store every [`FLUSH_EVERY`], so `logs -f`, the console and other
//! nodes can read a step while it runs. The stored log (the bounded tail, written when the step
//! ends) stays the step's authoritative log; the live log holds its first [`MAX_LIVE_BYTES`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::run::LiveSource;
use crate::store::executions::{Claim, LogLine};
use crate::store::{now_millis, Store, StoreError};

/// How often pending lines are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// At most this many bytes of line text per step attempt; then one note says so.
pub const MAX_LIVE_BYTES: usize = 1024 * 1024;

/// A line longer than this is cut into pieces of this size.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Chunks the runner may hold for the pump before it drops (and counts) output.
pub const CHANNEL_CHUNKS: usize = 256;

/// Where one step attempt's lines go.
pub struct Target<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// The claim the worker holds (the writes are fenced by it).
    pub claim: &'a Claim,
    /// Stage identifier.
    pub stage: &'a str,
    /// Step identifier.
    pub step: &'a str,
    /// The attempt (1-based); lines of later attempts sort after earlier ones.
    pub attempt: u32,
}

/// Splits bytes into lines per stream and numbers them.
struct Lines {
    partial: HashMap<&'static str, Vec<u8>>,
    pending: Vec<LogLine>,
    next: i64,
    bytes: usize,
    budget: usize,
    full: bool,
    dropped_reported: u64,
}

impl Lines {
    fn new(attempt: u32, budget: usize) -> Self {
        Self {
            partial: HashMap::new(),
            pending: Vec::new(),
            next: i64::from(attempt) << 32,
            bytes: 0,
            budget,
            full: false,
            dropped_reported: 0,
        }
    }

    fn push(&mut self, stream: &'static str, bytes: &[u8]) {
        let mut buf = self.partial.remove(stream).unwrap_or_default();
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let line = buf[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&buf[start..end]);
            self.line(stream, line);
            start = end + 1;
        }
        while buf.len() - start > MAX_LINE_BYTES {
            self.line(stream, &buf[start..start + MAX_LINE_BYTES]);
            start += MAX_LINE_BYTES;
        }
        buf.drain(..start);
        if !buf.is_empty() {
            self.partial.insert(stream, buf);
        }
    }

    /// Ends every stream's unfinished line.
    fn finish(&mut self) {
        let mut rest: Vec<(&'static str, Vec<u8>)> = self.partial.drain().collect();
        rest.sort_by_key(|(stream, _)| *stream);
        for (stream, bytes) in rest {
            self.line(stream, &bytes);
        }
    }

    fn line(&mut self, stream: &'static str, bytes: &[u8]) {
        if self.full {
            return;
        }
        if self.bytes + bytes.len() > self.budget {
            self.full = true;
            self.note(format!(
                "live log stopped after {} bytes; the step's stored log keeps its last {} bytes",
                self.bytes, self.budget
            ));
            return;
        }
        self.bytes += bytes.len();
        self.add(stream, String::from_utf8_lossy(bytes).into_owned());
    }

    fn note(&mut self, text: String) {
        self.add("triggerd", text);
    }

    fn add(&mut self, stream: &str, text: String) {
        self.pending.push(LogLine {
            seq: self.next,
            stream: stream.to_owned(),
            ts: now_millis(),
            text,
        });
        self.next += 1;
    }

    /// Notes output the runner dropped since the last report.
    fn report_dropped(&mut self, dropped: u64) {
        if dropped > self.dropped_reported && !self.full {
            self.note(format!(
                "{} bytes of output were not streamed live (the reader fell behind); the stored log has them",
                dropped - self.dropped_reported
            ));
            self.dropped_reported = dropped;
        }
    }
}

/// Reads `source` until the runner is done, writing lines to `target` as they complete. A
/// write that fails (the lease was lost, the store is down) ends the live log for this attempt
/// but never the step: the runner goes on and the stored log is written as usual.
pub async fn pump(mut source: LiveSource, target: Target<'_>) {
    let mut lines = Lines::new(target.attempt, MAX_LIVE_BYTES);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writing = true;
    loop {
        tokio::select! {
            chunk = source.rx.recv() => match chunk {
                Some(c) => lines.push(c.stream, &c.bytes),
                None => break,
            },
            _ = tick.tick() => {
                lines.report_dropped(source.dropped.load(Ordering::Relaxed));
                if writing && !lines.pending.is_empty() {
                    writing = write(&target, std::mem::take(&mut lines.pending)).await;
                }
                lines.pending.clear();
            }
        }
    }
    lines.finish();
    lines.report_dropped(source.dropped.load(Ordering::Relaxed));
    if writing && !lines.pending.is_empty() {
        write(&target, lines.pending).await;
    }
}

async fn write(target: &Target<'_>, lines: Vec<LogLine>) -> bool {
    match target
        .store
        .append_step_log(target.claim, target.stage, target.step, lines)
        .await
    {
        Ok(()) => true,
        Err(StoreError::LeaseLost) => false,
        Err(e) => {
            tracing::warn!(error = %e, execution = %target.claim.id, step = target.step, "could not write a live log; the stored log is kept at the end of the step");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &Lines) -> Vec<(String, String)> {
        lines
            .pending
            .iter()
            .map(|l| (l.stream.clone(), l.text.clone()))
            .collect()
    }

    #[test]
    fn output_is_split_into_lines_per_stream_across_chunks() {
        let mut l = Lines::new(1, 1 << 20);
        l.push("stdout", b"one\ntw");
        l.push("stderr", b"err\r\n");
        l.push("stdout", b"o\nthree");
        l.finish();
        assert_eq!(
            texts(&l),
            [
                ("stdout".into(), "one".into()),
                ("stderr".into(), "err".into()),
                ("stdout".into(), "two".into()),
                ("stdout".into(), "three".into()),
            ]
        );
        let seqs: Vec<i64> = l.pending.iter().map(|x| x.seq).collect();
        assert_eq!(seqs, [1 << 32, (1 << 32) + 1, (1 << 32) + 2, (1 << 32) + 3]);
    }

    #[test]
    fn long_lines_are_cut_and_the_budget_ends_with_one_note() {
        let mut l = Lines::new(2, 40_000);
        l.push("stdout", &vec![b'x'; MAX_LINE_BYTES * 2 + 5]);
        assert_eq!(l.pending.len(), 2, "two full pieces, the rest pending");
        l.push("stdout", b"\n");
        assert_eq!(l.pending.len(), 3);
        l.push("stdout", &vec![b'y'; 10_000]);
        l.push("stdout", b"\nmore\n");
        let last = l.pending.last().unwrap();
        assert_eq!(last.stream, "triggerd");
        assert!(
            last.text.contains("live log stopped after"),
            "{}",
            last.text
        );
        let count = l.pending.len();
        l.push("stdout", b"ignored\n");
        assert_eq!(l.pending.len(), count, "nothing after the note");
        assert!(l.pending[0].seq >> 32 == 2);
    }

    #[test]
    fn dropped_output_is_reported_once_per_increase() {
        let mut l = Lines::new(1, 1 << 20);
        l.report_dropped(0);
        assert!(l.pending.is_empty());
        l.report_dropped(100);
        l.report_dropped(100);
        assert_eq!(l.pending.len(), 1);
        assert!(l.pending[0].text.starts_with("100 bytes"));
    }
}
