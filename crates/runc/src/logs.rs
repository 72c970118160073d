//! Reading a container's log file: whole, the last lines, or following it
//! as it grows (`wharf logs POD [-f] [--tail N]`).
//!
//! Every run of a container appends to the same log, so `wharf logs` shows
//! them all. Beside it, `<log>.runs` lists the offset where each run began
//! ([`mark_run_start`], before each start), which is how the previous run
//! alone is found ([`previous_run`], `wharf logs --previous`).

use std::future::Future;
use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::{self, BoxStream};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::RuncError;

const CHUNK: usize = 64 * 1024;
/// How often a followed log is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Chunks of a log file. Dropping it stops following.
pub struct LogStream {
    inner: BoxStream<'static, Result<Bytes, RuncError>>,
}

impl Stream for LogStream {
    type Item = Result<Bytes, RuncError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Reads the log at `path`: from the start, or its last `tail` lines; with
/// `follow`, keeps reading as the file grows until the stream is dropped.
pub fn read(path: impl Into<PathBuf>, follow: bool, tail: Option<usize>) -> LogStream {
    let stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = if follow {
        Some(Box::pin(std::future::pending()))
    } else {
        None
    };
    reader(path.into(), 0..u64::MAX, tail, stop)
}

/// Reads the bytes of the log at `path` within `range` (one run's output,
/// from [`previous_run`]), or the last `tail` lines of them.
pub fn read_range(path: impl Into<PathBuf>, range: Range<u64>, tail: Option<usize>) -> LogStream {
    reader(path.into(), range, tail, None)
}

/// The file beside the log that lists where each run began.
fn runs_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".runs");
    log.with_file_name(name)
}

/// Records that a new run of the container starts writing to the log at
/// `log`: its current length is where the run's output will begin.
pub fn mark_run_start(log: &Path) -> Result<(), RuncError> {
    use std::io::Write;
    let start = match std::fs::metadata(log) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(RuncError::io(log, e)),
    };
    let runs = runs_path(log);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&runs)
        .and_then(|mut file| writeln!(file, "{start}"))
        .map_err(|e| RuncError::io(&runs, e))
}

/// Where the output of the run before the current one lies in the log at
/// `log`; `None` when the container has run only once.
pub async fn previous_run(log: &Path) -> Result<Option<Range<u64>>, RuncError> {
    let runs = runs_path(log);
    let text = match tokio::fs::read_to_string(&runs).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RuncError::io(&runs, e)),
    };
    // A line cut short by a crash is not a run that started.
    let starts: Vec<u64> = text
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    Ok(match starts.as_slice() {
        [.., previous, current] => Some(*previous..(*current).max(*previous)),
        _ => None,
    })
}

/// Like [`read`] with `follow`, but ends once `stop` completes and what was
/// written until then has been read: e.g. when the container has exited.
pub fn read_until(
    path: impl Into<PathBuf>,
    tail: Option<usize>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> LogStream {
    reader(path.into(), 0..u64::MAX, tail, Some(Box::pin(stop)))
}

struct Reader {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    offset: u64,
    /// Where reading stops, for one run's output.
    end: u64,
    buf: Vec<u8>,
    tail: Option<usize>,
    /// `None`: read to the end once. Taken when it fires.
    stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    draining: bool,
}

fn reader(
    path: PathBuf,
    range: Range<u64>,
    tail: Option<usize>,
    stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
) -> LogStream {
    let state = Reader {
        path,
        file: None,
        offset: range.start,
        end: range.end,
        buf: vec![0; CHUNK],
        tail,
        stop,
        draining: false,
    };
    let inner = stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.next_chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), Some(state))),
            Ok(None) => None,
            // An error ends the stream after being reported.
            Err(e) => Some((Err(e), None)),
        }
    });
    LogStream {
        inner: Box::pin(inner),
    }
}

impl Reader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, RuncError> {
        if self.file.is_none() {
            let mut file = tokio::fs::File::open(&self.path)
                .await
                .map_err(|e| RuncError::io(&self.path, e))?;
            if let Some(lines) = self.tail.take() {
                let tail = tail_offset(&mut file, lines, self.end)
                    .await
                    .map_err(|e| RuncError::io(&self.path, e))?;
                self.offset = self.offset.max(tail);
            }
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        loop {
            let len = file
                .metadata()
                .await
                .map_err(|e| RuncError::io(&self.path, e))?
                .len()
                .min(self.end);
            // Truncated (rotated in place): start over.
            if len < self.offset {
                self.offset = 0;
            }
            if len > self.offset {
                file.seek(SeekFrom::Start(self.offset))
                    .await
                    .map_err(|e| RuncError::io(&self.path, e))?;
                let want = self.buf.len().min((len - self.offset) as usize);
                let n = file
                    .read(&mut self.buf[..want])
                    .await
                    .map_err(|e| RuncError::io(&self.path, e))?;
                if n > 0 {
                    self.offset += n as u64;
                    return Ok(Some(Bytes::copy_from_slice(&self.buf[..n])));
                }
            }
            // At the end of what is there.
            let Some(stop) = self.stop.as_mut().filter(|_| !self.draining) else {
                return Ok(None);
            };
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = stop => self.draining = true,
            }
        }
    }
}

/// The offset where the last `lines` lines before `end` start.
async fn tail_offset(file: &mut tokio::fs::File, lines: usize, end: u64) -> std::io::Result<u64> {
    let len = file.metadata().await?.len().min(end);
    if lines == 0 {
        return Ok(len);
    }
    let mut end = len;
    // A final newline ends the last line; it does not start another.
    let mut skip_final_newline = true;
    let mut seen = 0;
    let mut buf = vec![0; CHUNK];
    while end > 0 {
        let start = end.saturating_sub(CHUNK as u64);
        let size = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut buf[..size]).await?;
        for i in (0..size).rev() {
            if buf[i] != b'\n' {
                skip_final_newline = false;
                continue;
            }
            if skip_final_newline {
                skip_final_newline = false;
                continue;
            }
            seen += 1;
            if seen == lines {
                return Ok(start + i as u64 + 1);
            }
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures_util::StreamExt;

    use super::*;

    async fn collect(stream: LogStream) -> String {
        let chunks: Vec<_> = stream.collect().await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    #[tokio::test]
    async fn whole_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        assert_eq!(collect(read(&path, false, None)).await, "one\ntwo\nthree\n");
        assert_eq!(collect(read(&path, false, Some(2))).await, "two\nthree\n");
        assert_eq!(collect(read(&path, false, Some(0))).await, "");
        assert_eq!(
            collect(read(&path, false, Some(9))).await,
            "one\ntwo\nthree\n"
        );
        // An unfinished last line counts as a line.
        std::fs::write(&path, "one\ntwo\npartial").unwrap();
        assert_eq!(collect(read(&path, false, Some(1))).await, "partial");
        assert_eq!(collect(read(&path, false, Some(2))).await, "two\npartial");

        // Tails across chunk boundaries.
        let long: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &long).unwrap();
        assert_eq!(
            collect(read(&path, false, Some(3))).await,
            "line 19997\nline 19998\nline 19999\n"
        );
        assert_eq!(collect(read(&path, false, None)).await, long);

        let missing = read(dir.path().join("missing"), false, None);
        let items: Vec<_> = missing.collect().await;
        assert!(matches!(items.as_slice(), [Err(RuncError::Io { .. })]));
    }

    #[tokio::test]
    async fn previous_run_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let run = |output: &str| {
            mark_run_start(&path).unwrap();
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            file.write_all(output.as_bytes()).unwrap();
        };
        run("first 1\nfirst 2\n");
        assert_eq!(previous_run(&path).await.unwrap(), None);
        run("second 1\nsecond 2\nsecond 3\n");
        run("third\n");
        let previous = previous_run(&path).await.unwrap().unwrap();
        assert_eq!(
            collect(read_range(&path, previous.clone(), None)).await,
            "second 1\nsecond 2\nsecond 3\n"
        );
        assert_eq!(
            collect(read_range(&path, previous, Some(1))).await,
            "second 3\n"
        );
        // The whole log still holds every run.
        assert_eq!(
            collect(read(&path, false, None)).await,
            "first 1\nfirst 2\nsecond 1\nsecond 2\nsecond 3\nthird\n"
        );
    }

    #[tokio::test]
    async fn follow_sees_appends_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\n").unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut stream = read_until(&path, Some(1), async {
            let _ = rx.await;
        });
        assert_eq!(stream.next().await.unwrap().unwrap(), "b\n");

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"c\n").unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), "c\n");

        // Written before the stop: still delivered, then the end.
        file.write_all(b"d\n").unwrap();
        tx.send(()).unwrap();
        assert_eq!(collect(stream).await, "d\n");

        // Plain follow keeps waiting: nothing arrives, the stream stays open.
        let mut follow = read(&path, true, Some(0));
        let next = tokio::time::timeout(Duration::from_millis(300), follow.next()).await;
        assert!(next.is_err(), "follow ended early: {next:?}");
        file.write_all(b"e\n").unwrap();
        assert_eq!(follow.next().await.unwrap().unwrap(), "e\n");
    }
}
