//! Where sealed audit lines go: a file, standard output, or syslog. Each sink takes whole lines
//! and removes from the buffer what it wrote; what is left is tried again.
use std::{
    io::{self, Write},
    os::fd::AsFd as _,
    path::PathBuf,
};

use super::{chain::Chain, file::FileSink, syslog::Syslog};
use crate::config;

pub enum Sink {
    File(FileSink),
    Stdout(Stream<std::fs::File>),
    Syslog(Syslog),
}

impl Sink {
    /// Opens the configured sink, and the chain as far as the sink holds it (a file can be
    /// read back; the others cannot).
    pub fn open(cfg: &config::AuditSink) -> io::Result<(Self, Option<Chain>)> {
        Ok(match cfg {
            config::AuditSink::File(f) => {
                let (file, chain) = FileSink::open(f)?;
                (Self::File(file), chain)
            }
            config::AuditSink::Stdout => {
                // A descriptor of our own: unbuffered, so a failed write is seen at once.
                let out = io::stdout().as_fd().try_clone_to_owned()?;
                (Self::Stdout(Stream::new(out.into())), None)
            }
            config::AuditSink::Syslog { socket, facility } => {
                (Self::Syslog(Syslog::new(socket.clone(), *facility)), None)
            }
        })
    }

    /// Writes `buf` (whole lines), removing what was written.
    pub fn write(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Self::File(f) => f.write(buf),
            Self::Stdout(s) => s.write(buf),
            Self::Syslog(s) => s.write(buf),
        }
    }

    /// Lines given up on since the last call because the sink can never take them.
    pub fn take_lost(&mut self) -> u64 {
        match self {
            Self::Syslog(s) => s.take_lost(),
            _ => 0,
        }
    }

    /// What was left of the buffer is thrown away: a line cut short ends before the next one.
    pub fn discarded(&mut self) {
        match self {
            Self::File(f) => f.discarded(),
            Self::Stdout(s) => s.discarded(),
            Self::Syslog(_) => {}
        }
    }

    /// Makes what was written durable, as configured: now, or when due.
    pub fn sync(&mut self, now: bool) -> io::Result<()> {
        match self {
            Self::File(f) => f.sync(now),
            _ => Ok(()),
        }
    }

    /// Whether what was written is as durable as configured (forced to disk with `fsync:
    /// batch`): only then may the chain head name it.
    pub fn durable(&self) -> bool {
        match self {
            Self::File(f) => f.durable(),
            _ => true,
        }
    }

    /// Whether the chain in the sink passes through `head` (see `chain::passes_through`);
    /// None when the sink cannot be read back.
    pub fn passes_through(&self, head: &Chain) -> Option<bool> {
        match self {
            Self::File(f) => Some(f.passes_through(head)),
            _ => None,
        }
    }

    /// Whether the file is due for rotation once `more` bytes are written.
    pub fn rotation_due(&self, more: u64) -> bool {
        matches!(self, Self::File(f) if f.rotation_due(more))
    }

    /// Moves the file aside (named for `last_seq`, its last record) and starts a new one;
    /// returns the name it was moved to.
    pub fn rotate(&mut self, last_seq: u64) -> io::Result<PathBuf> {
        match self {
            Self::File(f) => f.rotate(last_seq),
            _ => Err(io::Error::other("only a file is rotated")),
        }
    }
}

/// A byte stream lines are appended to. A write can stop part way through a line; if the rest
/// is then thrown away, the next write first ends that line so the next record starts clean.
pub struct Stream<W> {
    pub w: W,
    /// Bytes written so far.
    pub written: u64,
    /// The stream ends in the middle of a line.
    mid_line: bool,
    /// ... and the rest of that line was thrown away.
    cut_line: bool,
}

impl<W: Write> Stream<W> {
    pub fn new(w: W) -> Self {
        Self {
            w,
            written: 0,
            mid_line: false,
            cut_line: false,
        }
    }

    pub fn write(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        if self.cut_line && !buf.is_empty() {
            self.write_some(b"\n")?;
            self.cut_line = false;
        }
        while !buf.is_empty() {
            let n = self.write_some(buf)?;
            buf.drain(..n);
        }
        Ok(())
    }

    fn write_some(&mut self, bytes: &[u8]) -> io::Result<usize> {
        loop {
            match self.w.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n as u64;
                    self.mid_line = bytes[n - 1] != b'\n';
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn discarded(&mut self) {
        self.cut_line |= self.mid_line;
    }

    pub fn mid_line(&self) -> bool {
        self.mid_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes in all, then fails like a full disk.
    struct Full {
        out: Vec<u8>,
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(self.room - self.out.len());
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.out.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_cut_short_and_discarded_is_ended_before_the_next() {
        let mut s = Stream::new(Full {
            out: Vec::new(),
            room: 11,
        });
        let mut buf = b"first\nsecond\n".to_vec();
        assert!(s.write(&mut buf).is_err());
        assert_eq!(buf, b"d\n", "what was not written is kept");
        assert!(s.mid_line());
        s.discarded();
        buf.clear();
        s.w.room = 100;
        buf.extend_from_slice(b"third\n");
        s.write(&mut buf).unwrap();
        assert_eq!(s.w.out, b"first\nsecon\nthird\n");
        assert_eq!(s.written, 18);
    }
}
