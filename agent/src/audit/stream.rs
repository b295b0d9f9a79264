//! Appending whole lines to a byte stream (the file and standard output sinks), and ending a
//! line cut short before the next one.
use std::io::{self, Write};

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
