//! Where sealed audit lines go: a file, standard output, or syslog. Each sink takes whole lines
//! and removes from the buffer what it wrote; what is left is tried again.
use std::{io, os::fd::AsFd as _, path::PathBuf};

use super::{chain::Chain, file::FileSink, stream::Stream, syslog::Syslog};
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
