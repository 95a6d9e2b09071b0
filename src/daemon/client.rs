//! The command line's side of the socket: one connection, requests and replies in order.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::protocol::{Code, Reply, Request, request_line};
use crate::error::{CliError, CliResult, Exit, Kind};

pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

/// How long the CLI waits for a reply before giving up on the daemon.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// Connects to the daemon; `None` when nothing listens there (no socket, or a stale one),
    /// so the caller can work directly instead.
    pub fn connect(path: &Path) -> io::Result<Option<Client>> {
        let stream = match UnixStream::connect(path) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Some(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 1,
        }))
    }

    /// Sends a request and returns its reply.
    pub fn call_raw(&mut self, request: &Request) -> io::Result<Reply> {
        let id = self.next_id;
        self.next_id += 1;
        let sent = self.writer.write_all(request_line(id, request).as_bytes());
        // A connection the daemon turns away (`busy`) is closed without being read, so the
        // write may fail: its one line still says why.
        let mut line = String::new();
        match (sent, self.reader.read_line(&mut line)) {
            (_, Ok(n)) if n > 0 => {}
            (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
            (Ok(()), Ok(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection",
                ));
            }
        }
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Sends a request and decodes a successful reply's result.
    pub fn call<T: DeserializeOwned>(&mut self, request: &Request) -> CliResult<T> {
        let reply = self.call_raw(request).map_err(|e| {
            CliError::new(
                Exit::Unavailable,
                format!("talking to the daemon ({}): {e}", request.op()),
            )
        })?;
        match (reply.ok, reply.result, reply.error) {
            (true, Some(v), _) => serde_json::from_value(v).map_err(|e| {
                CliError::new(
                    Exit::Failure,
                    format!("unexpected reply from the daemon: {e}"),
                )
            }),
            (_, _, Some(err)) => Err(CliError::of(Kind::of_code(err.code), err.message)),
            _ => Err(CliError::of(
                Kind::of_code(Code::Internal),
                "malformed reply from the daemon",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon that answers `busy` and closes before the request is written: the client
    /// reports the daemon's reason, not the broken pipe.
    #[test]
    fn a_busy_reply_is_read_even_when_the_write_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let r = Reply::err(serde_json::Value::Null, Code::Busy, "too many connections");
            s.write_all(r.to_line().as_bytes()).unwrap();
        });
        let mut c = Client::connect(&path).unwrap().unwrap();
        server.join().unwrap();
        // Large enough that the write cannot complete into a closed socket unnoticed.
        let big = Request::Move {
            group: "ui".into(),
            targets: vec![
                super::super::protocol::TaskRef {
                    id: 1,
                    starttime: None
                };
                1000
            ],
        };
        let err = c.call::<serde_json::Value>(&big).unwrap_err();
        assert_eq!(err.exit(), Exit::Unavailable);
        assert!(
            err.message.contains("too many connections"),
            "{}",
            err.message
        );
    }
}
