//! A container's output on its node. The monitor's copier (`spawn_copier`) reads the
//! container's stdout and stderr pipes and writes every line to `log`, time-stamped and
//! tagged with its stream as Kubernetes' CRI does:
//!
//! ```text
//! 2026-12-06T07:10:00.123456789Z stdout F a whole line
//! 2026-12-06T07:10:00.123456789Z stderr P the first 16 KiB of a longer one
//! ```
//!
//! Past `max_size` the file is rotated (`log` → `log.1` → … → `log.<max_files-1>`, the
//! oldest dropped), so a chatty container never holds more than `max_size × max_files`
//! of its node's disk. The readers (`haconiwa logs`, the cluster's log stream) take
//! the files oldest first, keep what `--tail`, `--since` and `--stderr` ask for, and
//! follow the active file across rotations.

use crate::spec::timestamp::{parse_rfc3339, rfc3339};
use crate::spec::LogLimits;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The longest line kept whole; a longer one is written in pieces (`P`).
pub const MAX_LINE: usize = 16 * 1024;

/// The active file's name in a container's directory.
const ACTIVE: &str = "log";

/// Which of the container's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Its standard output.
    Stdout,
    /// Its standard error.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line (or piece of one) as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When the copier read it; `None` for a line of an older, untagged log.
    pub time: Option<SystemTime>,
    /// Its stream.
    pub stream: Stream,
    /// A piece of a longer line: no newline follows it.
    pub partial: bool,
    /// Its bytes, without the newline.
    pub text: Vec<u8>,
}

impl Entry {
    /// What the container wrote: the text, and its newline unless a piece.
    pub fn output(&self) -> Vec<u8> {
        let mut out = self.text.clone();
        if !self.partial {
            out.push(b'\n');
        }
        out
    }
}

/// Reads one line of a log (without its newline). A line not in the tagged format (a
/// log written before it) is its text, as stdout.
pub fn parse_line(line: &[u8]) -> Entry {
    let raw = || Entry {
        time: None,
        stream: Stream::Stdout,
        partial: false,
        text: line.to_vec(),
    };
    let mut parts = line.splitn(4, |b| *b == b' ');
    let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return raw();
    };
    let text = parts.next().unwrap_or_default();
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return raw(),
    };
    let partial = match tag {
        b"F" => false,
        b"P" => true,
        _ => return raw(),
    };
    match std::str::from_utf8(ts).ok().and_then(parse_rfc3339) {
        Some(time) => Entry {
            time: Some(time),
            stream,
            partial,
            text: text.to_vec(),
        },
        None => raw(),
    }
}

/// The active log and its rotation. Opened (and so created, mode 0600) by the monitor
/// before it reports the container started: the file is there once `run` returns, and
/// the copier's thread, started after the report, writes to it.
pub struct LogSink {
    dir: PathBuf,
    limits: LogLimits,
    file: File,
    size: u64,
}

fn open_active(dir: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(ACTIVE))
}

impl LogSink {
    /// Opens (creates) the active log of the container directory `dir`.
    pub fn open(dir: &Path, limits: LogLimits) -> io::Result<LogSink> {
        let file = open_active(dir)?;
        let size = file.metadata()?.len();
        Ok(LogSink {
            dir: dir.to_path_buf(),
            limits,
            file,
            size,
        })
    }

    /// Writes whole lines, rotating between two of them once the file is full: a file
    /// exceeds `max_size` by less than one line.
    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = usize::try_from(self.limits.max_size.saturating_sub(self.size))
                .unwrap_or(usize::MAX);
            let take = if bytes.len() <= room {
                bytes.len()
            } else {
                // Up to the last line that fits, or the first line when none does.
                let fits = bytes[..room].iter().rposition(|b| *b == b'\n');
                let first = bytes.iter().position(|b| *b == b'\n');
                fits.or(first).map_or(bytes.len(), |p| p + 1)
            };
            self.file.write_all(&bytes[..take])?;
            self.size += take as u64;
            bytes = &bytes[take..];
            if self.size >= self.limits.max_size {
                self.rotate()?;
            }
        }
        Ok(())
    }

    /// `log` → `log.1` → … ; what falls past `max_files` is removed.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.limits.max_files.max(1);
        let name = |i: u32| self.dir.join(format!("{ACTIVE}.{i}"));
        // Files numbered beyond what is kept (the limits may have been larger).
        let mut i = keep;
        while name(i).exists() && i < keep + 64 {
            std::fs::remove_file(name(i))?;
            i += 1;
        }
        if keep > 1 {
            for i in (1..keep - 1).rev() {
                if name(i).exists() {
                    std::fs::rename(name(i), name(i + 1))?;
                }
            }
            std::fs::rename(self.dir.join(ACTIVE), name(1))?;
        } else {
            std::fs::remove_file(self.dir.join(ACTIVE))?;
        }
        self.file = open_active(&self.dir)?;
        self.size = 0;
        Ok(())
    }
}

/// Formats the complete lines of `pending` (and pieces of an overlong one) as entries
/// of `stream` read at `ts`; `flush` also writes what is left (the stream ended).
fn format_lines(pending: &mut Vec<u8>, stream: Stream, ts: &str, flush: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut entry = |text: &[u8], tag: &str| {
        out.extend_from_slice(format!("{ts} {} {tag} ", stream.name()).as_bytes());
        out.extend_from_slice(text);
        out.push(b'\n');
    };
    loop {
        let rest = &pending[start..];
        match rest.iter().position(|b| *b == b'\n') {
            Some(n) if n <= MAX_LINE => {
                entry(&rest[..n], "F");
                start += n + 1;
            }
            _ if rest.len() > MAX_LINE => {
                entry(&rest[..MAX_LINE], "P");
                start += MAX_LINE;
            }
            _ => break,
        }
    }
    if flush && start < pending.len() {
        entry(&pending[start..], "F");
        start = pending.len();
    }
    pending.drain(..start);
    out
}

/// The monitor's word to its copier that the container's processes are gone. A pipe
/// the copier polls beside the container's, so that an idle copier sleeps until there
/// is output or an end (a timeout to look at a flag would wake a thousand copiers five
/// thousand times a second).
pub struct CopierEnd(File);

impl CopierEnd {
    /// Tells the copier to drain what is left and end (a byte, not a close: nothing
    /// else holding the write end can hold the copier up).
    pub fn signal(&self) {
        let _ = (&self.0).write_all(&[1]);
    }
}

/// Starts the copier of a container's output: `out` and `err` are the read ends of its
/// stdout and stderr pipes, `sink` its open log. It ends once both pipes are closed, or
/// once its [`CopierEnd`] is signalled and they have nothing more to give. A log it
/// cannot write (a full disk) loses lines, never the container: the pipes are still
/// drained, and the first error is returned at the end.
pub fn spawn_copier(
    mut sink: LogSink,
    out: File,
    err: File,
) -> io::Result<(std::thread::JoinHandle<io::Result<()>>, CopierEnd)> {
    let (end_r, end_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let handle = std::thread::Builder::new()
        .name("log-copier".into())
        .stack_size(64 * 1024)
        .spawn(move || copy(&mut sink, [out, err], &File::from(end_r)))?;
    Ok((handle, CopierEnd(File::from(end_w))))
}

fn copy(sink: &mut LogSink, mut pipes: [File; 2], end: &File) -> io::Result<()> {
    let streams = [Stream::Stdout, Stream::Stderr];
    let mut failed: Option<io::Error> = None;
    let mut write = |sink: &mut LogSink, lines: &[u8]| {
        if failed.is_none() && !lines.is_empty() {
            failed = sink.write(lines).err();
        }
    };
    let mut pending = [Vec::new(), Vec::new()];
    let mut open = [true, true];
    // The buffer is made on the first output (resident for the container's whole life
    // once touched): a container that writes nothing costs its copier none, and a
    // pipe's end (a hang-up with nothing to read) is read into a few bytes of stack.
    let mut at_end = [0u8; 64];
    let mut buf = Vec::new();
    while open.iter().any(|o| *o) {
        // No allocation while waiting: the pipes still open, then the end.
        // (A closed pipe's place holds the end again, its answer ignored.)
        let (ready, ending) = {
            let fd = |i: usize| {
                if open[i] {
                    pipes[i].as_fd()
                } else {
                    end.as_fd()
                }
            };
            let mut fds = [fd(0), fd(1), end.as_fd()].map(|f| PollFd::new(f, PollFlags::POLLIN));
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {
                    let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                    let input =
                        |f: &PollFd| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
                    let data = [0, 1].map(|i| open[i] && ready(&fds[i]));
                    if buf.is_empty() && (0..2).any(|i| open[i] && input(&fds[i])) {
                        buf = vec![0u8; 64 * 1024];
                    }
                    (data, ready(&fds[2]))
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        // Ended, and nothing more to read: done (the end stays readable, so while
        // output is left each poll returns at once with it).
        if !ready.iter().any(|r| *r) {
            if ending {
                break;
            }
            continue;
        }
        for i in (0..2).filter(|i| ready[*i]) {
            let into: &mut [u8] = if buf.is_empty() {
                &mut at_end
            } else {
                &mut buf
            };
            let n = match pipes[i].read(into) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            let ts = rfc3339(SystemTime::now());
            if n == 0 {
                open[i] = false;
            } else {
                pending[i].extend_from_slice(&into[..n]);
            }
            let lines = format_lines(&mut pending[i], streams[i], &ts, n == 0);
            write(sink, &lines);
        }
    }
    let ts = rfc3339(SystemTime::now());
    for i in 0..2 {
        let lines = format_lines(&mut pending[i], streams[i], &ts, true);
        write(sink, &lines);
    }
    failed.map_or(Ok(()), Err)
}

/// What a reader keeps of the log.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only the last N lines (`--tail`).
    pub tail: Option<usize>,
    /// Only lines read at or after this time (`--since`); untagged lines are kept.
    pub since: Option<SystemTime>,
    /// Only the container's stderr (`--stderr`).
    pub stderr_only: bool,
}

impl ReadOptions {
    /// Whether an entry is one of those asked for (`tail` aside).
    pub fn keeps(&self, e: &Entry) -> bool {
        (!self.stderr_only || e.stream == Stream::Stderr)
            && match (self.since, e.time) {
                (Some(since), Some(t)) => t >= since,
                _ => true,
            }
    }
}

/// The log files of container directory `dir`, oldest first (`log.N` … `log.1`, `log`).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("log.")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    out.push(dir.join(ACTIVE));
    out
}

/// Reads the log of container directory `dir` as `opts` asks; returns the entries and
/// a follower placed right after them. With `tail` the files are read from their end
/// backwards, newest first, only as far as the lines asked for.
pub fn read(dir: &Path, opts: &ReadOptions) -> io::Result<(Vec<Entry>, Follower)> {
    let all = files(dir);
    let (active, rotated) = all.split_last().unwrap_or((&all[0], &[]));
    let mut follower = Follower::open(active)?;
    let Some(n) = opts.tail else {
        let mut entries = Vec::new();
        for f in rotated {
            // A file rotated away meanwhile is skipped: its lines moved to the next name.
            if let Ok(bytes) = std::fs::read(f) {
                entries.extend(
                    bytes
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(parse_line),
                );
            }
        }
        entries.extend(follower.next_entries()?);
        entries.retain(|e| opts.keeps(e));
        return Ok((entries, follower));
    };
    let end = follower.skip_to_end()?;
    let mut newest_first = Vec::new();
    let mut lines = 0;
    for (i, path) in all.iter().rev().enumerate() {
        let limit = (i == 0).then_some(end);
        if backwards(path, limit, opts, n, &mut lines, &mut newest_first)? {
            break;
        }
    }
    newest_first.reverse();
    Ok((newest_first, follower))
}

/// Bytes read at once when a file is read backwards.
const BLOCK: u64 = 64 * 1024;

/// Reads the complete lines of `path` (up to byte `end`, else its length) from the
/// last backwards, pushing the entries `opts` keeps onto `out`, newest first, until
/// `lines` counts `n` (a line is its pieces and the whole entry that ends it). Whether
/// it got there.
fn backwards(
    path: &Path,
    end: Option<u64>,
    opts: &ReadOptions,
    n: usize,
    lines: &mut usize,
    out: &mut Vec<Entry>,
) -> io::Result<bool> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut pos = match end {
        Some(e) => e,
        None => f.metadata()?.len(),
    };
    // The start of a line whose beginning lies in an earlier block.
    let mut carry: Vec<u8> = Vec::new();
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; usize::try_from(pos - start).unwrap_or(0)];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&carry);
        let cut = if start == 0 {
            0
        } else {
            block
                .iter()
                .position(|b| *b == b'\n')
                .map_or(block.len(), |p| p + 1)
        };
        for l in block[cut..]
            .split(|b| *b == b'\n')
            .rev()
            .filter(|l| !l.is_empty())
        {
            let e = parse_line(l);
            if !opts.keeps(&e) {
                continue;
            }
            if !e.partial {
                if *lines >= n {
                    return Ok(true);
                }
                *lines += 1;
            }
            out.push(e);
        }
        carry = block[..cut].to_vec();
        pos = start;
    }
    Ok(false)
}

/// Reads what is appended to a log from where it stands, across rotations.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    rest: Vec<u8>,
}

impl Follower {
    fn open(path: &Path) -> io::Result<Follower> {
        let mut f = Follower {
            path: path.to_path_buf(),
            file: None,
            inode: 0,
            rest: Vec::new(),
        };
        f.reopen()?;
        Ok(f)
    }

    fn reopen(&mut self) -> io::Result<()> {
        match File::open(&self.path) {
            Ok(file) => {
                self.inode = file.metadata()?.ino();
                self.file = Some(file);
            }
            // Not written yet (the container has said nothing).
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.file = None,
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Places the follower after the active file's last complete line (what comes after
    /// it is kept for the next call); returns that offset.
    fn skip_to_end(&mut self) -> io::Result<u64> {
        let Some(f) = self.file.as_mut() else {
            return Ok(0);
        };
        let len = f.metadata()?.len();
        let from = len.saturating_sub(MAX_LINE as u64 + BLOCK);
        f.seek(SeekFrom::Start(from))?;
        let mut last = Vec::new();
        f.read_to_end(&mut last)?;
        let complete = last.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        self.rest = last.split_off(complete);
        Ok(from + complete as u64)
    }

    /// The complete entries appended since the last call.
    pub fn next_entries(&mut self) -> io::Result<Vec<Entry>> {
        let mut bytes = std::mem::take(&mut self.rest);
        if let Some(f) = self.file.as_mut() {
            f.read_to_end(&mut bytes)?;
        }
        // Rotated: the old file is read to its end above; the new one from its start.
        let rotated = match std::fs::metadata(&self.path) {
            Ok(m) => self.file.is_none() || m.ino() != self.inode,
            Err(_) => false,
        };
        if rotated {
            if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                bytes.push(b'\n');
            }
            self.reopen()?;
            if let Some(f) = self.file.as_mut() {
                f.seek(SeekFrom::Start(0))?;
                f.read_to_end(&mut bytes)?;
            }
        }
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        self.rest = bytes.split_off(complete);
        Ok(bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(parse_line)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_size: u64, max_files: u32) -> LogLimits {
        LogLimits {
            max_size,
            max_files,
        }
    }

    #[test]
    fn lines_are_tagged_an_overlong_one_goes_in_pieces_and_the_rest_waits() {
        let mut p = b"one\ntwo".to_vec();
        let out = format_lines(&mut p, Stream::Stderr, "T", false);
        assert_eq!(out, b"T stderr F one\n");
        assert_eq!(p, b"two");
        let out = format_lines(&mut p, Stream::Stderr, "T", true);
        assert_eq!(out, b"T stderr F two\n");
        let mut long = vec![b'x'; MAX_LINE + 5];
        long.push(b'\n');
        let out = format_lines(&mut long, Stream::Stdout, "2026-12-06T07:10:00Z", false);
        let lines: Vec<Entry> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(parse_line)
            .collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].partial && !lines[1].partial);
        assert_eq!(lines[0].text.len() + lines[1].text.len(), MAX_LINE + 5);
        let e = parse_line(b"2026-12-06T07:10:00.5Z stdout F a b");
        assert_eq!(
            (e.text.as_slice(), e.stream, e.time.is_some()),
            (&b"a b"[..], Stream::Stdout, true)
        );
        assert_eq!(parse_line(b"plain old output").text, b"plain old output");
    }

    /// A pipe: the read end as the copier takes it, the write end.
    fn pipe() -> (File, std::io::PipeWriter) {
        std::io::pipe()
            .map(|(r, w)| (File::from(std::os::fd::OwnedFd::from(r)), w))
            .unwrap()
    }

    #[test]
    fn a_copier_whose_pipes_stay_open_drains_them_and_ends_when_told() {
        let dir = std::env::temp_dir().join(format!("hc-logs-end-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ((out_r, mut out_w), (err_r, err_w)) = (pipe(), pipe());
        let (copier, end) = spawn_copier(
            LogSink::open(&dir, limits(1 << 20, 2)).unwrap(),
            out_r,
            err_r,
        )
        .unwrap();
        // Idle, it sleeps: still running a while later with both pipes open.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!copier.is_finished());
        // Written, then told: it drains what is there and ends, the pipes still open
        // (a process that escaped the container could hold them).
        for i in 0..100 {
            writeln!(out_w, "last words {i}").unwrap();
        }
        end.signal();
        for _ in 0..100 {
            if copier.is_finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            copier.is_finished(),
            "the copier did not end within 5 s of its end"
        );
        copier.join().unwrap().unwrap();
        let (all, _) = read(&dir, &ReadOptions::default()).unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all.last().unwrap().text, b"last words 99");
        drop((out_w, err_w));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_copier_rotates_within_its_limits_and_readers_tail_filter_and_follow() {
        let dir = std::env::temp_dir().join(format!("hc-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ((out_r, mut out_w), (err_r, mut err_w)) = (pipe(), pipe());
        let (copier, _end) =
            spawn_copier(LogSink::open(&dir, limits(4096, 3)).unwrap(), out_r, err_r).unwrap();
        for i in 0..1000 {
            writeln!(out_w, "line {i}").unwrap();
        }
        writeln!(err_w, "an error").unwrap();
        drop((out_w, err_w));
        copier.join().unwrap().unwrap();
        let names = files(&dir);
        assert_eq!(names.len(), 3, "{names:?}");
        let total: u64 = names.iter().map(|f| f.metadata().unwrap().len()).sum();
        assert!(total <= 3 * 4096 + 64 * 1024, "{total}");
        let (all, _) = read(&dir, &ReadOptions::default()).unwrap();
        assert_eq!(all.last().unwrap().text, b"an error", "{:?}", all.last());
        let (tail, mut follow) = read(
            &dir,
            &ReadOptions {
                tail: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            tail.iter().map(|e| e.output()).collect::<Vec<_>>(),
            [b"line 999\n".to_vec(), b"an error\n".to_vec()]
        );
        // Across rotated files, read backwards: the same lines as a full read's end.
        let (t150, _) = read(
            &dir,
            &ReadOptions {
                tail: Some(150),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(t150.len(), 150);
        assert_eq!(t150[..], all[all.len() - 150..]);
        let (err, _) = read(
            &dir,
            &ReadOptions {
                stderr_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(err.len(), 1);
        let future = SystemTime::now() + std::time::Duration::from_secs(60);
        let (none, _) = read(
            &dir,
            &ReadOptions {
                since: Some(future),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(none.is_empty());
        // Following: an append, then a rotation.
        let mut sink = LogSink::open(&dir, limits(100, 3)).unwrap();
        sink.write(b"2026-12-06T07:10:00Z stdout F after\n")
            .unwrap();
        assert_eq!(follow.next_entries().unwrap()[0].text, b"after");
        sink.write(
            &[
                b"2026-12-06T07:10:00Z stdout F ".as_slice(),
                &[b'y'; 80],
                b"\n",
            ]
            .concat(),
        )
        .unwrap();
        sink.write(b"2026-12-06T07:10:01Z stdout F new\n").unwrap();
        let got: Vec<Vec<u8>> = follow
            .next_entries()
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(got, [vec![b'y'; 80], b"new".to_vec()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
