//! The demo's load generator: concurrent `GET`s over loopback with a minimal HTTP/1.1
//! client on a raw TCP stream, and a progress line while they run.

use std::io::{self, IsTerminal, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_lock::Barrier;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::report::Latencies;
use crate::server::ROLE_HEADER;

/// An HTTP response, as much of it as the demo reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The [`ROLE_HEADER`] value, if the server sent one.
    pub role: Option<String>,
    /// The body.
    pub body: String,
}

/// Sends `GET path` to `addr` on a fresh connection (`Connection: close`) and reads the
/// whole response.
///
/// # Errors
///
/// If the connection fails or the response is not HTTP/1.1 this client understands
/// (a `Content-Length`, chunked or close-delimited body).
pub async fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse(&raw)
}

/// Sends `POST path` with `headers` and `body` to `addr` on a fresh connection
/// (`Connection: close`) and reads the whole response.
///
/// # Errors
///
/// As [`get`].
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> io::Result<Response> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse(&raw)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn parse(raw: &[u8]) -> io::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| invalid("headers not UTF-8"))?;
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let (mut role, mut length, mut chunked) = (None, None, false);
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| invalid("bad header"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case(ROLE_HEADER) {
            role = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| invalid("bad length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let end = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| invalid("bad chunk"))?;
            let size = std::str::from_utf8(&body[..end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
                .ok_or_else(|| invalid("bad chunk size"))?;
            body = &body[end + 2..];
            if size == 0 {
                break out;
            }
            out.extend_from_slice(body.get(..size).ok_or_else(|| invalid("short chunk"))?);
            body = body.get(size + 2..).ok_or_else(|| invalid("short chunk"))?;
        }
    } else {
        let length = length.unwrap_or(body.len());
        body.get(..length)
            .ok_or_else(|| invalid("short body"))?
            .to_vec()
    };
    let body = String::from_utf8(body).map_err(|_| invalid("body not UTF-8"))?;
    Ok(Response { status, role, body })
}

/// The outcome of [`fire`]: every response and its latency.
#[derive(Debug)]
pub struct Load {
    /// From the common start to the last response.
    pub total: Duration,
    /// Each request's latency, connection included.
    pub latencies: Latencies,
    /// Each response, in completion order.
    pub responses: Vec<Response>,
}

impl Load {
    /// Responses whose role header is `role`.
    pub fn count_role(&self, role: &str) -> usize {
        self.responses
            .iter()
            .filter(|r| r.role.as_deref() == Some(role))
            .count()
    }

    /// Responses with status 200.
    pub fn ok(&self) -> usize {
        self.responses.iter().filter(|r| r.status == 200).count()
    }
}

/// Fires `requests` concurrent `GET path` requests at `addr`, released together, and
/// calls `progress(done)` as each completes.
///
/// # Errors
///
/// The first request that fails.
pub async fn fire(
    addr: SocketAddr,
    path: &str,
    requests: usize,
    mut progress: impl FnMut(usize),
) -> io::Result<Load> {
    let start_line = Arc::new(Barrier::new(requests + 1));
    let mut tasks = JoinSet::new();
    for _ in 0..requests {
        let start_line = Arc::clone(&start_line);
        let path = path.to_owned();
        tasks.spawn(async move {
            start_line.wait().await;
            let sent = Instant::now();
            let response = get(addr, &path).await?;
            Ok::<_, io::Error>((sent.elapsed(), response))
        });
    }
    start_line.wait().await;
    let start = Instant::now();
    let (mut latencies, mut responses) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (latency, response) = done.map_err(io::Error::other)??;
        latencies.push(latency);
        responses.push(response);
        progress(responses.len());
    }
    Ok(Load {
        total: start.elapsed(),
        latencies: Latencies::new(latencies),
        responses,
    })
}

/// A progress bar on stderr: redrawn in place on a terminal, a line per quarter otherwise
/// (CI logs).
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: usize,
    terminal: bool,
    shown: usize,
}

impl Progress {
    /// A bar for `total` steps.
    pub fn new(label: impl Into<String>, total: usize) -> Self {
        Self {
            label: label.into(),
            total: total.max(1),
            terminal: io::stderr().is_terminal(),
            shown: 0,
        }
    }

    /// Shows that `done` of the steps are done.
    pub fn update(&mut self, done: usize) {
        const WIDTH: usize = 30;
        let filled = done * WIDTH / self.total;
        let mut err = io::stderr().lock();
        if self.terminal {
            let _ = write!(
                err,
                "\r   {:<24} [{}{}] {done}/{}",
                self.label,
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                self.total
            );
            if done >= self.total {
                let _ = writeln!(err);
            }
        } else {
            let quarter = done * 4 / self.total;
            if quarter > self.shown {
                self.shown = quarter;
                let _ = writeln!(err, "   {:<24} {done}/{} done", self.label, self.total);
            }
        }
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited_bodies() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nX-Singleflight-Role: shared\r\n\r\nabcdef",
        )
        .unwrap();
        assert_eq!(
            (r.status, r.role.as_deref(), r.body.as_str()),
            (200, Some("shared"), "abc")
        );
        let r = parse(b"HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.role, r.body.as_str()), (500, None, "abcde"));
        let r = parse(b"HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "nope"));
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc").is_err());
        assert!(parse(b"garbage").is_err());
    }
}
