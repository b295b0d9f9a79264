//! A helper process of `bench streams` (the upstream or the client: this program, release
//! build, in the lab's namespace), driven by lines: each command written to its stdin is
//! answered by one JSON line on its stdout. It exits when its stdin closes.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{Result, host::Lab};

pub struct Helper {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    /// Starts `xtask CMD ARGS...` in the lab and waits for its first line (`{"ready":true}`).
    pub fn start(name: &'static str, lab: &Lab, xtask: &Path, args: &[String]) -> Result<Self> {
        let mut child = lab
            .command(xtask)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", xtask.display()))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("helper stdout")?);
        let mut h = Self {
            name,
            child,
            stdin,
            stdout,
        };
        h.answer()?;
        Ok(h)
    }

    /// Sends `command` and returns its answer; an answer with `error` is an error.
    pub fn ask(&mut self, command: &str) -> Result<Value> {
        let stdin = self.stdin.as_mut().ok_or("helper stdin")?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{}: {e}", self.name))?;
        self.answer()
    }

    fn answer(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("{}: {e}", self.name))?;
        if n == 0 {
            return Err(format!("{} exited", self.name));
        }
        let v: Value =
            serde_json::from_str(&line).map_err(|e| format!("{}: {e}: {line:?}", self.name))?;
        match v.get("error") {
            Some(e) => Err(format!("{}: {e}", self.name)),
            None => Ok(v),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing stdin stops it; a bounded wait, then kill.
        drop(self.stdin.take());
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The helper's side: reads commands from stdin on a thread of its own and hands each to the
/// runtime with a channel for its answer; prints `{"ready":true}` first. The receiver ends
/// when stdin closes.
pub fn commands() -> tokio::sync::mpsc::Receiver<(String, tokio::sync::oneshot::Sender<Value>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    println!("{}", serde_json::json!({"ready": true}));
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            let (answer, answered) = tokio::sync::oneshot::channel();
            if tx.blocking_send((line, answer)).is_err() {
                break;
            }
            let Ok(v) = answered.blocking_recv() else {
                break;
            };
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{v}").and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Raises this process's open-file limit as far as it goes (root: to `fs.nr_open`).
pub fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let max = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(65536);
    if setrlimit(Resource::RLIMIT_NOFILE, max, max).is_err()
        && let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
