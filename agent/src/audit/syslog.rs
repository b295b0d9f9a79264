//! The syslog sink: each record as one RFC 5424 message over a unix socket (`/dev/log` by
//! default), a datagram each on a datagram socket (rsyslog, journald, syslog-ng) or one line
//! each on a stream socket (Vector, Fluent Bit). The message is the JSON record, unchanged, so
//! the chain can be verified from what the collector keeps. The socket is (re)connected as
//! needed; a write that fails or stalls past a second counts as a sink failure.
use std::{
    io::{self, Write as _},
    os::unix::net::{UnixDatagram, UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

/// Severity of every record: informational.
const SEVERITY: u8 = 6;
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Syslog {
    socket: PathBuf,
    facility: u8,
    conn: Option<Conn>,
    hostname: String,
    pid: u32,
    /// Scratch space for one message.
    msg: Vec<u8>,
    /// Records too large for a datagram, given up on.
    lost: u64,
}

enum Conn {
    Datagram(UnixDatagram),
    Stream(UnixStream),
}

impl Syslog {
    pub fn new(socket: PathBuf, facility: u8) -> Self {
        Self {
            socket,
            facility,
            conn: None,
            hostname: hostname(),
            pid: std::process::id(),
            msg: Vec::with_capacity(2048),
            lost: 0,
        }
    }

    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    pub fn write(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut done = 0;
        let result = loop {
            let Some(end) = buf[done..].iter().position(|&b| b == b'\n') else {
                break Ok(());
            };
            let line = &buf[done..done + end];
            self.msg.clear();
            format(&mut self.msg, self.facility, &self.hostname, self.pid, line);
            match self.send() {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    tracing::error!(socket = %self.socket.display(), bytes = self.msg.len(), "an audit record is too large for a syslog datagram; it is dropped and counted");
                    self.lost += 1;
                }
                Err(e) => {
                    self.conn = None;
                    break Err(e);
                }
            }
            done += end + 1;
        };
        buf.drain(..done);
        result
    }

    fn send(&mut self) -> io::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.socket)?);
        }
        match self.conn.as_mut() {
            Some(Conn::Datagram(d)) => d.send(&self.msg).map(drop),
            Some(Conn::Stream(s)) => {
                self.msg.push(b'\n');
                s.write_all(&self.msg)
            }
            None => Ok(()),
        }
    }
}

fn connect(path: &Path) -> io::Result<Conn> {
    let d = UnixDatagram::unbound()?;
    match d.connect(path) {
        Ok(()) => {
            d.set_write_timeout(Some(WRITE_TIMEOUT))?;
            Ok(Conn::Datagram(d))
        }
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            let s = UnixStream::connect(path)?;
            s.set_write_timeout(Some(WRITE_TIMEOUT))?;
            Ok(Conn::Stream(s))
        }
        Err(e) => Err(e),
    }
}

/// `<PRI>1 TIMESTAMP HOSTNAME moat PROCID MSGID - MSG`: the timestamp is the record's `ts`,
/// MSGID its `kind`, MSG the record.
fn format(out: &mut Vec<u8>, facility: u8, hostname: &str, pid: u32, record: &[u8]) {
    let ts = field(record, b"{\"ts\":\"").unwrap_or("-");
    let kind = field(record, b",\"kind\":\"").unwrap_or("-");
    let pri = u16::from(facility) * 8 + u16::from(SEVERITY);
    let _ = write!(out, "<{pri}>1 {ts} {hostname} moat {pid} {kind} - ");
    out.extend_from_slice(record);
}

/// The string value after `key` in the record's fixed head (`ts`, `seq`, `kind`), if it is a
/// plain token (no quotes, spaces or escapes).
fn field<'a>(record: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let head = &record[..record.len().min(128)];
    let start = head.windows(key.len()).position(|w| w == key)? + key.len();
    let len = head[start..].iter().position(|&b| b == b'"')?;
    let v = std::str::from_utf8(&head[start..start + len]).ok()?;
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')).then_some(v)
}

/// The host name as RFC 5424 allows it (printable ASCII, at most 255), or `-`.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        "-".into()
    } else {
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &[u8] = br#"{"ts":"2026-11-28T13:34:40.123456Z","seq":7,"kind":"request","server":"files","prev":"00","hash":"11"}"#;

    #[test]
    fn a_record_becomes_an_rfc5424_message() {
        let mut out = Vec::new();
        format(&mut out, 16, "host1", 42, RECORD);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "<134>1 2026-11-28T13:34:40.123456Z host1 moat 42 request - {}",
                std::str::from_utf8(RECORD).unwrap()
            )
        );
    }

    #[test]
    fn odd_heads_get_nil_values() {
        let mut out = Vec::new();
        format(&mut out, 1, "h", 1, br#"{"ts":"a b","seq":1}"#);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("<14>1 - h moat 1 - - {")
        );
    }

    #[test]
    fn datagram_and_stream_receivers_get_one_message_per_record() {
        let dir = std::env::temp_dir().join(format!("moat-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = b"{\"ts\":\"t1\",\"kind\":\"a\"}\n{\"ts\":\"t2\",\"kind\":\"b\"}\n".to_vec();

        let dpath = dir.join("dgram");
        let rx = UnixDatagram::bind(&dpath).unwrap();
        let mut s = Syslog::new(dpath.clone(), 16);
        let mut buf = lines.clone();
        s.write(&mut buf).unwrap();
        assert!(buf.is_empty());
        let mut got = [0u8; 512];
        let pid = std::process::id();
        let n = rx.recv(&mut got).unwrap();
        let first = format!(" moat {pid} a - {{\"ts\":\"t1\",\"kind\":\"a\"}}");
        assert!(std::str::from_utf8(&got[..n]).unwrap().ends_with(&first));
        let n = rx.recv(&mut got).unwrap();
        let second = format!(" moat {pid} b - {{\"ts\":\"t2\",\"kind\":\"b\"}}");
        assert!(std::str::from_utf8(&got[..n]).unwrap().ends_with(&second));

        // The receiver goes away: a failure, the record kept; back: it is sent.
        drop(rx);
        std::fs::remove_file(&dpath).unwrap();
        let mut buf = lines.clone();
        assert!(s.write(&mut buf).is_err());
        assert_eq!(buf, lines);
        let rx = UnixDatagram::bind(&dpath).unwrap();
        s.write(&mut buf).unwrap();
        let n = rx.recv(&mut got).unwrap();
        assert!(std::str::from_utf8(&got[..n]).unwrap().contains(" a - "));

        let spath = dir.join("stream");
        let listener = std::os::unix::net::UnixListener::bind(&spath).unwrap();
        let mut s = Syslog::new(spath, 16);
        let mut buf = lines.clone();
        s.write(&mut buf).unwrap();
        drop(s);
        let (conn, _) = listener.accept().unwrap();
        let text = io::read_to_string(conn).unwrap();
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), 2, "{text}");
        assert!(got[1].ends_with(" b - {\"ts\":\"t2\",\"kind\":\"b\"}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
