//! The HTTP/1.1 the stream client speaks, over any byte stream: requests written whole,
//! response heads and bodies read with a small buffer (by length, or chunked, also a chunk at
//! a time for an endless event stream).
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Bounds a response head.
const MAX_HEAD: usize = 16 * 1024;
/// What one read asks for.
const READ: usize = 2048;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A response head.
pub struct Head {
    pub status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The value of header `name` (first one).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

pub struct Conn {
    io: Box<dyn Io>,
    /// Read, not yet taken.
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(io: Box<dyn Io>) -> Self {
        Self {
            io,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.io.write_all(request).await?;
        self.io.flush().await
    }

    /// Reads more; an error at the end of the stream.
    async fn fill(&mut self) -> io::Result<()> {
        let len = self.buf.len();
        self.buf.resize(len + READ, 0);
        let n = self.io.read(&mut self.buf[len..]).await;
        self.buf.truncate(len + *n.as_ref().unwrap_or(&0));
        match n? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    /// The next line (without CRLF), read whole.
    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::other("line too long"));
            }
            self.fill().await?;
        }
    }

    pub async fn head(&mut self) -> io::Result<Head> {
        let status = self.line().await?;
        let status = status
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status:?}")))?;
        let mut headers = Vec::new();
        loop {
            let l = self.line().await?;
            if l.is_empty() {
                return Ok(Head { status, headers });
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }

    /// The whole body of a response with `head`.
    pub async fn body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if head.chunked() {
            let mut body = Vec::new();
            while let Some(chunk) = self.chunk().await? {
                body.extend_from_slice(&chunk);
            }
            return Ok(body);
        }
        let len: usize = match head.get("content-length") {
            Some(l) => l.parse().map_err(|_| io::Error::other("bad length"))?,
            None if head.status == 204 || head.status == 304 => 0,
            None => return Err(io::Error::other("a response without a length")),
        };
        while self.buf.len() < len {
            self.fill().await?;
        }
        Ok(self.buf.drain(..len).collect())
    }

    /// The next chunk of a chunked body; None after the last.
    pub async fn chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let size = self.line().await?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::other(format!("bad chunk size {size:?}")))?;
        if size == 0 {
            while !self.line().await?.is_empty() {} // trailers
            return Ok(None);
        }
        while self.buf.len() < size + 2 {
            self.fill().await?;
        }
        let chunk = self.buf[..size].to_vec();
        self.buf.drain(..size + 2);
        Ok(Some(chunk))
    }

    /// Gives back the read buffer's room (a held stream keeps little).
    pub fn shrink(&mut self) {
        self.buf.shrink_to_fit();
    }
}
