//! Parsing out of the serving process.
//!
//! A hostile file can exhaust what no `catch_unwind` catches: a PDF whose
//! form XObject draws itself recurses until the stack overflows, which
//! aborts the whole process. So the gateway parses every upload in a child
//! process (the `sovra` binary re-run as `parse-worker`), which sets hard
//! limits on itself before it reads a byte (address space, CPU time, no
//! file writes, no core dump) and answers one JSON line. The parent bounds
//! the wall time and the size of the answer, kills the child on a breach
//! and turns every failure into an [`IngestError`] (422 or 413), never a
//! crash of its own.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Block, Format, IngestError, Limits, parse};

/// Bounds on one parse worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Address space of the child, in bytes (RLIMIT_AS).
    pub max_memory_bytes: u64,
    /// CPU seconds of the child (RLIMIT_CPU).
    pub max_cpu_seconds: u64,
    /// Wall-clock limit; the child is killed past it.
    pub timeout: Duration,
    /// Most bytes of answer read from the child.
    pub max_output_bytes: usize,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 1024 * 1024 * 1024,
            max_cpu_seconds: 30,
            timeout: Duration::from_secs(60),
            max_output_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Where documents are parsed.
#[derive(Debug, Clone)]
pub enum Parsing {
    /// On a blocking thread of this process: for tests, benches and tools
    /// that parse trusted files.
    InProcess,
    /// In a child process: `program args… --format … --max-…`.
    Worker {
        program: PathBuf,
        args: Vec<String>,
        limits: WorkerLimits,
    },
}

/// The child's one line of answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Blocks(Vec<Block>),
    Unsupported(String),
    Corrupt(String),
    TooLarge(String),
    Empty,
}

impl From<Result<Vec<Block>, IngestError>> for Reply {
    fn from(r: Result<Vec<Block>, IngestError>) -> Self {
        match r {
            Ok(b) => Reply::Blocks(b),
            Err(IngestError::Unsupported(m)) => Reply::Unsupported(m),
            Err(IngestError::TooLarge(m)) => Reply::TooLarge(m),
            Err(IngestError::Empty) => Reply::Empty,
            Err(IngestError::Corrupt(m) | IngestError::Tokenizer(m)) => Reply::Corrupt(m),
        }
    }
}

impl From<Reply> for Result<Vec<Block>, IngestError> {
    fn from(r: Reply) -> Self {
        match r {
            Reply::Blocks(b) => Ok(b),
            Reply::Unsupported(m) => Err(IngestError::Unsupported(m)),
            Reply::Corrupt(m) => Err(IngestError::Corrupt(m)),
            Reply::TooLarge(m) => Err(IngestError::TooLarge(m)),
            Reply::Empty => Err(IngestError::Empty),
        }
    }
}

impl Parsing {
    /// Parses `bytes` of `format` within `limits`, here or in a worker.
    pub async fn parse(
        &self,
        bytes: Vec<u8>,
        format: Format,
        limits: Limits,
    ) -> Result<Vec<Block>, IngestError> {
        match self {
            Parsing::InProcess => {
                tokio::task::spawn_blocking(move || parse(&bytes, format, limits))
                    .await
                    .map_err(|e| IngestError::Corrupt(format!("the parser failed: {e}")))?
            }
            Parsing::Worker {
                program,
                args,
                limits: worker,
            } => run_worker(program, args, *worker, bytes, format, limits).await,
        }
    }
}

async fn run_worker(
    program: &PathBuf,
    args: &[String],
    worker: WorkerLimits,
    bytes: Vec<u8>,
    format: Format,
    limits: Limits,
) -> Result<Vec<Block>, IngestError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg("--format")
        .arg(format.content_type())
        .arg("--max-unpacked-bytes")
        .arg(limits.max_unpacked_bytes.to_string())
        .arg("--max-text-chars")
        .arg(limits.max_text_chars.to_string())
        .arg("--max-memory-bytes")
        .arg(worker.max_memory_bytes.to_string())
        .arg("--max-cpu-seconds")
        .arg(worker.max_cpu_seconds.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            tracing::error!(error = %e, program = %program.display(), "could not start the parse worker");
            IngestError::Corrupt("the parser could not be started".into())
        })?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(IngestError::Corrupt(
            "the parser could not be started".into(),
        ));
    };
    // A child that dies early stops reading: a broken pipe here is not the
    // error to report, its exit status is.
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&bytes).await;
        let _ = stdin.shutdown().await;
    });
    let cap = u64::try_from(worker.max_output_bytes).unwrap_or(u64::MAX);
    let read_out = async move {
        let mut out = Vec::new();
        let _ = stdout.take(cap + 1).read_to_end(&mut out).await;
        out
    };
    let read_err = async move {
        let mut err = Vec::new();
        let _ = stderr.take(16 * 1024).read_to_end(&mut err).await;
        err
    };
    let run = async {
        let (out, err) = tokio::join!(read_out, read_err);
        let status = child.wait().await;
        (out, err, status)
    };
    let Ok((out, err, status)) = tokio::time::timeout(worker.timeout, run).await else {
        feed.abort();
        // Dropping the child kills it (kill_on_drop).
        return Err(IngestError::Corrupt(format!(
            "parsing took longer than {} s",
            worker.timeout.as_secs()
        )));
    };
    feed.abort();
    if out.len() as u64 > cap {
        return Err(IngestError::TooLarge(format!(
            "the extracted text exceeds {} bytes",
            worker.max_output_bytes
        )));
    }
    let status = status.map_err(|e| IngestError::Corrupt(format!("the parser failed: {e}")))?;
    if status.success() {
        let reply: Reply = serde_json::from_slice(&out).map_err(|e| {
            IngestError::Corrupt(format!("the parser's answer was unreadable: {e}"))
        })?;
        return reply.into();
    }
    let err = String::from_utf8_lossy(&err);
    let why = breach(&err, status, worker);
    tracing::warn!(%status, reason = why, "parse worker stopped on a document");
    Err(IngestError::Corrupt(format!(
        "the parser was stopped: {why}"
    )))
}

/// Names the limit a failed worker ran into, from its status and stderr.
fn breach(stderr: &str, status: std::process::ExitStatus, worker: WorkerLimits) -> String {
    use std::os::unix::process::ExitStatusExt;
    if stderr.contains("overflowed its stack") {
        return "the document nests too deeply".into();
    }
    if stderr.contains("memory allocation") || stderr.contains("capacity overflow") {
        return format!(
            "it needed more than {} MiB of memory",
            worker.max_memory_bytes / (1024 * 1024)
        );
    }
    match status.signal() {
        // SIGXCPU, or SIGKILL past the hard CPU limit.
        Some(24) | Some(9) => format!("it used more than {} s of CPU", worker.max_cpu_seconds),
        Some(sig) => format!("it ended on signal {sig}"),
        None => format!("it exited with status {}", status.code().unwrap_or(-1)),
    }
}

/// The worker's side: sets `limits` on this process, reads the document
/// from `input`, writes one [`Reply`] to `output`. Returns the exit code.
pub fn serve_worker(
    mut input: impl Read,
    mut output: impl Write,
    format: &str,
    limits: Limits,
    worker: WorkerLimits,
) -> i32 {
    use rlimit::Resource;
    let set = [
        (Resource::AS, worker.max_memory_bytes),
        (Resource::CPU, worker.max_cpu_seconds),
        (Resource::FSIZE, 0),
        (Resource::CORE, 0),
    ];
    for (resource, value) in set {
        if let Err(e) = rlimit::setrlimit(resource, value, value) {
            // Refuse to parse without the limits the parent asked for.
            let _ = writeln!(
                std::io::stderr(),
                "parse worker: cannot set {resource:?}: {e}"
            );
            return 2;
        }
    }
    let reply: Reply = match Format::from_content_type(format) {
        Err(e) => Err(e).into(),
        Ok(format) => {
            let mut bytes = Vec::new();
            match input.read_to_end(&mut bytes) {
                Ok(_) => parse(&bytes, format, limits).into(),
                Err(e) => Reply::Corrupt(format!("could not read the document: {e}")),
            }
        }
    };
    match serde_json::to_writer(&mut output, &reply).map(|()| output.flush()) {
        Ok(Ok(())) => 0,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_every_outcome() {
        let cases: Vec<Result<Vec<Block>, IngestError>> = vec![
            Ok(vec![Block {
                text: "a".into(),
                heading: true,
            }]),
            Err(IngestError::Unsupported("x/y".into())),
            Err(IngestError::Corrupt("bad".into())),
            Err(IngestError::TooLarge("big".into())),
            Err(IngestError::Empty),
        ];
        for case in cases {
            let line = serde_json::to_vec(&Reply::from(case.clone())).unwrap();
            let back: Reply = serde_json::from_slice(&line).unwrap();
            assert_eq!(Result::<Vec<Block>, IngestError>::from(back), case);
        }
    }
}
