//! The daemon on the system bus: ChromeOS's scheduler API (`org.chromium.ResourceManager`,
//! `resourced.rs`) and cgqos's own operations (`org.cgqos.Daemon1`, `cgqos.rs`), next to the
//! socket. A method call becomes the request the socket would carry and goes through
//! `conn::handle` (engine, policy, records, log, exit watches) with a [`Caller`] made from
//! what the bus daemon says about the sender; nothing here decides what a caller may do.
//!
//! `states.rs` is the pure mapping of resourced's process and thread states to cgqos's
//! groups and classes.

mod cgqos;
mod resourced;
pub mod states;

use std::sync::Arc;

use serde_json::Value;
use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::names::BusName;

use super::core::Shared;
use super::policy::Caller;
use super::protocol::{Code, Reply, Request};
use crate::error::{CliError, Exit};

/// The system bus when `DBUS_SYSTEM_BUS_ADDRESS` is not set (the D-Bus specification's).
pub const SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

/// The system bus's address: `DBUS_SYSTEM_BUS_ADDRESS`, else [`SYSTEM_BUS`].
pub fn bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| SYSTEM_BUS.to_string())
}

/// Connects to the system bus, exports both interfaces and takes both names. A bus that
/// cannot be reached or a name already owned (resourced running) is an error: the daemon
/// was asked to serve D-Bus and does not start without it. The connection serves until it
/// is dropped.
pub async fn serve(shared: Arc<Shared>) -> Result<zbus::Connection, CliError> {
    let address = bus_address();
    let fail = |e: zbus::Error| {
        CliError::new(
            Exit::Failure,
            format!("D-Bus: the system bus at {address}: {e}"),
        )
    };
    let connection = zbus::connection::Builder::address(address.as_str())
        .and_then(|b| {
            b.serve_at(resourced::PATH, resourced::ResourceManager::new(&shared))?
                .serve_at(cgqos::PATH, cgqos::Daemon1::new(&shared))?
                .name(resourced::NAME)?
                .name(cgqos::NAME)
        })
        .map_err(fail)?
        .build()
        .await
        .map_err(fail)?;
    tracing::info!(
        "serving {} and {} on the system bus {address}",
        resourced::NAME,
        cgqos::NAME
    );
    Ok(connection)
}

/// A D-Bus error reply: `<interface>.Error.<Name>` and a message.
#[derive(Debug)]
pub struct BusError {
    name: String,
    message: String,
}

impl BusError {
    fn new(interface: &str, name: &str, message: impl Into<String>) -> BusError {
        BusError {
            name: format!("{interface}.Error.{name}"),
            message: message.into(),
        }
    }

    /// The error for a failed request, named after its code.
    fn of(interface: &str, code: Code, message: impl Into<String>) -> BusError {
        BusError::new(interface, error_name(code), message)
    }
}

impl zbus::DBusError for BusError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::message::Message> {
        zbus::message::Message::error(call, self.name.as_str())?.build(&(self.message.as_str(),))
    }

    fn name(&self) -> zbus::names::ErrorName<'_> {
        zbus::names::ErrorName::from_str_unchecked(&self.name)
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

/// The D-Bus error name of each reply code (the same for both interfaces).
pub fn error_name(code: Code) -> &'static str {
    match code {
        Code::BadRequest | Code::UnsupportedVersion => "InvalidArgs",
        Code::TooLarge => "LimitsExceeded",
        Code::Denied => "AccessDenied",
        Code::InvalidTarget => "InvalidTarget",
        Code::NoSuchProcess => "NoSuchProcess",
        Code::KernelRefused => "KernelRefused",
        Code::Unsupported => "NotSupported",
        Code::Busy => "Busy",
        Code::InvalidConfig => "InvalidConfig",
        Code::Internal => "Failed",
    }
}

/// Who sent a method call, from the bus daemon (`GetConnectionCredentials`): its uid and
/// pid as the bus saw them when it connected, and its groups (the bus's list, else those
/// of `/proc/<pid>/status` while that pid still runs as the uid, as for the socket).
async fn caller(
    connection: &zbus::Connection,
    header: &Header<'_>,
    shared: &Shared,
) -> Result<Caller, String> {
    let sender = header
        .sender()
        .ok_or("a method call without a sender")?
        .to_owned();
    // No property cache: it would subscribe to the bus's signals on every call.
    let creds = DBusProxy::builder(connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| e.to_string())?
        .get_connection_credentials(BusName::Unique(sender.as_ref()))
        .await
        .map_err(|e| format!("the bus daemon's credentials of {sender}: {e}"))?;
    let uid = creds
        .unix_user_id()
        .ok_or_else(|| format!("the bus daemon gives no uid for {sender}"))?;
    let pid = creds.process_id();
    let gids = match creds.unix_group_ids() {
        Some(g) => g.clone(),
        None => pid
            .and_then(|p| shared.proc.groups_of_euid(p, uid).ok().flatten())
            .unwrap_or_default(),
    };
    Ok(Caller {
        uid,
        gids,
        pid,
        bus: Some(sender.to_string()),
    })
}

/// Runs `req` for the sender of `header` as a socket request, and gives its result or the
/// D-Bus error of `interface` for its failure.
async fn execute(
    shared: &Arc<Shared>,
    connection: &zbus::Connection,
    header: &Header<'_>,
    interface: &str,
    req: Request,
) -> Result<Value, BusError> {
    let caller = caller(connection, header, shared)
        .await
        .map_err(|e| BusError::new(interface, "Failed", e))?;
    let reply = super::conn::handle(shared, &caller, Value::Null, req).await;
    result_of(reply).map_err(|(code, m)| BusError::of(interface, code, m))
}

/// A reply's result, or its error's code and message.
fn result_of(reply: Reply) -> Result<Value, (Code, String)> {
    match (reply.result, reply.error) {
        (_, Some(e)) => Err((e.code, e.message)),
        (Some(v), None) => Ok(v),
        (None, None) => Ok(Value::Null),
    }
}

/// The one target of a move's result: an error if it was not moved.
fn single_target(result: &Value) -> Result<(), (Code, String)> {
    let Some(entry) = result.as_array().and_then(|a| a.first()) else {
        return Err((Code::Internal, "a move without a result".into()));
    };
    if entry["ok"] == true {
        return Ok(());
    }
    let code = serde_json::from_value(entry["code"].clone()).unwrap_or(Code::Internal);
    let message = entry["error"].as_str().unwrap_or("not moved").to_string();
    Err((code, message))
}
