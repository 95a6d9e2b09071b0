//! The command line's side of the socket: one connection, requests and replies in order.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::protocol::{Code, Reply, Request, request_line};
use crate::error::{CliError, CliResult, Exit};
use crate::ops::exit_of;

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
        self.writer
            .write_all(request_line(id, request).as_bytes())?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            ));
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
            (_, _, Some(err)) => Err(CliError::new(exit_of(err.code), err.message)),
            _ => Err(CliError::new(
                exit_of(Code::Internal),
                "malformed reply from the daemon",
            )),
        }
    }
}
