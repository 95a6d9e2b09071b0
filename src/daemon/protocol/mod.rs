//! The daemon's wire protocol, version 1: one JSON object per line each way.
//!
//! A request is `{"v": 1, "id": <any JSON scalar, echoed>, "op": "<operation>", ...}`; a reply
//! is `{"v": 1, "id": ..., "ok": true, "result": ...}` or
//! `{"v": 1, "id": ..., "ok": false, "error": {"code": "...", "message": "..."}}`.
//! Unknown fields, wrong types and oversized lists are errors, never guesses. docs/protocol.md
//! documents every request, reply and error code.

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod strict;
use strict::strict_value;

pub const VERSION: u64 = 1;
/// Longest request line accepted, in bytes (the newline excluded).
pub const MAX_LINE: usize = 64 * 1024;
/// Most ids in one move request.
pub const MAX_TARGETS: usize = 1024;

// The operations speak these too; the wire names them.
pub use crate::model::{Code, RestrictState, TaskRef};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Ping,
    Status,
    Where {
        pid: u32,
    },
    /// Whole processes to a group (path or alias); threads keep their class.
    Move {
        group: String,
        targets: Vec<TaskRef>,
    },
    /// Threads to a class of their current process group.
    MoveThreads {
        class: String,
        targets: Vec<TaskRef>,
    },
    VmAdd {
        name: String,
    },
    VmRemove {
        name: String,
    },
    /// A running VM monitor into its VM's groups, each thread by its name; threads created or
    /// renamed later are placed as they appear.
    VmAttach {
        name: String,
        pid: u32,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        vm_type: Option<String>,
        /// vCPU thread name patterns replacing the type's.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        vcpu_threads: Vec<String>,
    },
    /// Foreground / background CPU share of a VM or a browser process group, and an optional
    /// CPU quota (concierge's SetVmCpuRestriction).
    Restrict {
        group: String,
        state: RestrictState,
        /// Percent of one CPU per period (`cpu.max`); absent or null: no quota.
        #[serde(default)]
        quota_percent: Option<u32>,
    },
    /// Re-read the configuration, re-plan and converge.
    Reload,
    /// Undo every change cgqos made to tasks: original cgroups and scheduling attributes.
    Reset,
}

impl Request {
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Status => "status",
            Request::Where { .. } => "where",
            Request::Move { .. } => "move",
            Request::MoveThreads { .. } => "move_threads",
            Request::VmAdd { .. } => "vm_add",
            Request::VmRemove { .. } => "vm_remove",
            Request::VmAttach { .. } => "vm_attach",
            Request::Restrict { .. } => "restrict",
            Request::Reload => "reload",
            Request::Reset => "reset",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub code: Code,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    pub v: u64,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub id: Value,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    pub fn ok(id: Value, result: Value) -> Reply {
        Reply {
            v: VERSION,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(id: Value, code: Code, message: impl Into<String>) -> Reply {
        Reply {
            v: VERSION,
            id,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }

    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("replies serialise");
        s.push('\n');
        s
    }
}

/// Parses one request line. On failure, the reply to send (with the request's `id` when it
/// could be read).
pub fn parse(line: &[u8]) -> Result<(Value, Request), Reply> {
    if line.len() > MAX_LINE {
        return Err(Reply::err(
            Value::Null,
            Code::TooLarge,
            format!("request longer than {MAX_LINE} bytes"),
        ));
    }
    let value = strict_value(line).map_err(|e| {
        let message = match e.classify() {
            // A duplicate key: the text is JSON, the request is not.
            serde_json::error::Category::Data => e.to_string(),
            _ => format!("not JSON: {e}"),
        };
        Reply::err(Value::Null, Code::BadRequest, message)
    })?;
    let Value::Object(mut obj) = value else {
        return Err(Reply::err(
            Value::Null,
            Code::BadRequest,
            "a request is a JSON object",
        ));
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    if !id_round_trips(&id) {
        return Err(Reply::err(Value::Null, Code::BadRequest, ID_RULE));
    }
    match obj.remove("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
        Some(other) => {
            return Err(Reply::err(
                id,
                Code::UnsupportedVersion,
                format!("protocol version {other} is not supported (this daemon speaks {VERSION})"),
            ));
        }
        None => {
            return Err(Reply::err(
                id,
                Code::BadRequest,
                format!("missing `v` (the protocol version, {VERSION})"),
            ));
        }
    }
    let extra: Vec<String> = obj.keys().filter(|k| *k != "op").cloned().collect();
    let request: Request = serde_json::from_value(Value::Object(obj))
        .map_err(|e| Reply::err(id.clone(), Code::BadRequest, e.to_string()))?;
    // serde ignores fields next to the tag of a variant without fields: refuse them here.
    if matches!(
        request,
        Request::Ping | Request::Status | Request::Reload | Request::Reset
    ) && !extra.is_empty()
    {
        return Err(Reply::err(
            id,
            Code::BadRequest,
            format!(
                "unknown field `{}`: `{}` takes no fields",
                extra[0],
                request.op()
            ),
        ));
    }
    let targets = match &request {
        Request::Move { targets, .. } | Request::MoveThreads { targets, .. } => targets.len(),
        _ => 0,
    };
    if targets > MAX_TARGETS {
        return Err(Reply::err(
            id,
            Code::TooLarge,
            format!("{targets} targets in one request; at most {MAX_TARGETS}"),
        ));
    }
    if matches!(&request, Request::Move { targets, .. } | Request::MoveThreads { targets, .. } if targets.is_empty())
    {
        return Err(Reply::err(id, Code::BadRequest, "`targets` is empty"));
    }
    Ok((id, request))
}

const ID_RULE: &str = "`id` must be a string, an integer from -9223372036854775808 to \
     18446744073709551615, a boolean or null (a fraction, an exponent, -0 or a larger integer \
     would not come back as sent)";

/// Whether `id` comes back in the reply as the value that was sent: serde_json keeps strings,
/// booleans and integers in the i64/u64 range exactly, but turns every other number into an
/// f64 (`-0` into `-0.0`, `1e3` into `1000.0`, a 20-digit integer rounded), so those are
/// refused instead of echoed altered; arrays and objects are refused as before.
fn id_round_trips(id: &Value) -> bool {
    match id {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => n.is_u64() || n.is_i64(),
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// Serialises a request as a line (the client side).
pub fn request_line(id: u64, request: &Request) -> String {
    let mut v = serde_json::to_value(request).expect("requests serialise");
    if let Value::Object(o) = &mut v {
        o.insert("v".into(), VERSION.into());
        o.insert("id".into(), id.into());
    }
    let mut s = v.to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Request, (Code, String)> {
        parse(s.as_bytes()).map(|(_, r)| r).map_err(|r| {
            let e = r.error.unwrap();
            (e.code, e.message)
        })
    }

    #[test]
    fn every_request_round_trips() {
        let reqs = [
            Request::Ping,
            Request::Status,
            Request::Where { pid: 5 },
            Request::Move {
                group: "background".into(),
                targets: vec![TaskRef {
                    id: 7,
                    starttime: Some(99),
                }],
            },
            Request::MoveThreads {
                class: "urgent".into(),
                targets: vec![TaskRef {
                    id: 8,
                    starttime: None,
                }],
            },
            Request::VmAdd {
                name: "termina".into(),
            },
            Request::VmRemove {
                name: "termina".into(),
            },
            Request::VmAttach {
                name: "termina".into(),
                pid: 9,
                vm_type: Some("crosvm".into()),
                vcpu_threads: vec!["vcpu*".into()],
            },
            Request::VmAttach {
                name: "t".into(),
                pid: 9,
                vm_type: None,
                vcpu_threads: vec![],
            },
            Request::Restrict {
                group: "vm:arcvm".into(),
                state: RestrictState::Background,
                quota_percent: Some(50),
            },
            Request::Reload,
            Request::Reset,
        ];
        for r in reqs {
            let line = request_line(3, &r);
            let (id, back) = parse(line.trim_end().as_bytes()).unwrap();
            assert_eq!(back, r);
            assert_eq!(id, Value::from(3));
        }
    }

    #[test]
    fn malformed_requests_get_precise_codes() {
        assert_eq!(p("not json").unwrap_err().0, Code::BadRequest);
        assert_eq!(p("[1]").unwrap_err().0, Code::BadRequest);
        assert_eq!(p(r#"{"op":"ping"}"#).unwrap_err().0, Code::BadRequest);
        assert_eq!(
            p(r#"{"v":2,"op":"ping"}"#).unwrap_err().0,
            Code::UnsupportedVersion
        );
        assert_eq!(
            p(r#"{"v":1,"op":"dance"}"#).unwrap_err().0,
            Code::BadRequest
        );
        let (c, m) = p(r#"{"v":1,"op":"where","pid":1,"extra":2}"#).unwrap_err();
        assert_eq!(c, Code::BadRequest);
        assert!(m.contains("extra"), "{m}");
        assert_eq!(
            p(r#"{"v":1,"op":"where","pid":-1}"#).unwrap_err().0,
            Code::BadRequest
        );
        assert_eq!(
            p(r#"{"v":1,"op":"where","pid":"1"}"#).unwrap_err().0,
            Code::BadRequest
        );
        assert_eq!(
            p(r#"{"v":1,"op":"move","group":"ui","targets":[]}"#)
                .unwrap_err()
                .0,
            Code::BadRequest
        );
        assert_eq!(
            p(r#"{"v":1,"op":"move","group":"ui","targets":[{"id":1,"pid":2}]}"#)
                .unwrap_err()
                .0,
            Code::BadRequest
        );
        let many: Vec<String> = (1..=MAX_TARGETS + 1)
            .map(|i| format!("{{\"id\":{i}}}"))
            .collect();
        let line = format!(
            r#"{{"v":1,"op":"move","group":"ui","targets":[{}]}}"#,
            many.join(",")
        );
        assert_eq!(p(&line).unwrap_err().0, Code::TooLarge);
        assert_eq!(p(&"x".repeat(MAX_LINE + 1)).unwrap_err().0, Code::TooLarge);
    }

    #[test]
    fn vm_attach_fields_are_checked() {
        let (c, m) =
            p(r#"{"v":1,"op":"vm_attach","name":"t","pid":1,"vcpu_threads":"CPU*"}"#).unwrap_err();
        assert_eq!(c, Code::BadRequest);
        assert!(m.contains("expected a sequence"), "{m}");
        let (c, m) = p(r#"{"v":1,"op":"vm_attach","name":"t","pid":1,"kind":"qemu"}"#).unwrap_err();
        assert_eq!(c, Code::BadRequest);
        assert!(m.contains("unknown field `kind`"), "{m}");
        assert_eq!(
            p(r#"{"v":1,"op":"vm_attach","name":"t"}"#).unwrap_err().0,
            Code::BadRequest
        );
        assert_eq!(
            p(r#"{"v":1,"op":"vm_attach","name":"t","pid":1,"type":"qemu"}"#).unwrap(),
            Request::VmAttach {
                name: "t".into(),
                pid: 1,
                vm_type: Some("qemu".into()),
                vcpu_threads: vec![],
            }
        );
    }

    #[test]
    fn operations_without_fields_refuse_fields() {
        let (c, m) = p(r#"{"v":1,"op":"ping","extra":1}"#).unwrap_err();
        assert_eq!(c, Code::BadRequest);
        assert!(m.contains("unknown field `extra`"), "{m}");
        assert!(p(r#"{"v":1,"op":"reset"}"#).is_ok());
    }

    #[test]
    fn the_id_is_echoed_even_on_errors() {
        let e = parse(br#"{"v":1,"id":"abc","op":"nope"}"#).unwrap_err();
        assert_eq!(e.id, Value::from("abc"));
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for (line, key, inside) in [
            (r#"{"v":1,"op":"ping","op":"reset"}"#, "op", "the request"),
            (r#"{"v":1,"v":1,"op":"ping"}"#, "v", "the request"),
            (r#"{"id":1,"v":1,"id":2,"op":"ping"}"#, "id", "the request"),
            (
                r#"{"v":1,"op":"move","group":"ui","targets":[{"id":1},{"id":2,"id":3}]}"#,
                "id",
                "`targets[1]`",
            ),
            (
                r#"{"v":1,"op":"ping","x":[{"a":{"b":[1,{"c":1,"c":1}]}}]}"#,
                "c",
                "`x[0].a.b[1]`",
            ),
        ] {
            let e = parse(line.as_bytes()).unwrap_err();
            assert_eq!(e.id, Value::Null, "{line}");
            let e = e.error.unwrap();
            assert_eq!(e.code, Code::BadRequest, "{line}");
            assert!(
                e.message
                    .starts_with(&format!("duplicate key `{key}` in {inside}")),
                "{line}: {}",
                e.message
            );
        }
        // The same key in different objects is not a duplicate.
        assert!(
            parse(br#"{"v":1,"id":9,"op":"move","group":"ui","targets":[{"id":1},{"id":2}]}"#)
                .is_ok()
        );
        // A hostile key is escaped and shortened in the message (which is logged).
        let long = "k\\n".repeat(100);
        let e = parse(format!(r#"{{"v":1,"{long}":1,"{long}":2}}"#).as_bytes()).unwrap_err();
        let m = e.error.unwrap().message;
        assert!(!m.contains('\n') && m.contains('…') && m.len() < 200, "{m}");
    }

    /// `id` comes back as sent, or the request is refused: never an altered value.
    #[test]
    fn ids_round_trip_or_are_refused() {
        let echoed = |id: &str| {
            let line = format!(r#"{{"v":1,"id":{id},"op":"ping"}}"#);
            match parse(line.as_bytes()) {
                Ok((id, _)) => Ok(Reply::ok(id, Value::Null).to_line()),
                Err(r) => Err(r),
            }
        };
        for id in [
            "0",
            "7",
            "-1",
            "18446744073709551615",
            "-9223372036854775808",
            r#""abc""#,
            r#""""#,
            r#""a\"b\\c""#,
            "true",
            "false",
        ] {
            let line = echoed(id).unwrap_or_else(|r| panic!("{id}: {r:?}"));
            assert!(line.contains(&format!(r#""id":{id},"#)), "{id}: {line}");
        }
        // Same value, written the way serde_json writes strings.
        let line = echoed(r#""A\/""#).unwrap();
        assert!(line.contains(r#""id":"A/""#), "{line}");
        // Absent and null: no id in the reply.
        assert!(!echoed("null").unwrap().contains("\"id\""));
        for id in [
            "-0",
            "1e3",
            "1E3",
            "1.0",
            "0.5",
            "-0.0",
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "[1]",
            "{}",
            r#"{"a":1}"#,
        ] {
            let r = echoed(id).expect_err(id);
            assert_eq!(r.id, Value::Null, "{id}");
            let e = r.error.unwrap();
            assert_eq!(e.code, Code::BadRequest, "{id}");
            assert!(
                e.message.starts_with("`id` must be a string"),
                "{id}: {}",
                e.message
            );
        }
    }

    /// Mutation fuzzing: bytes flipped, inserted and cut in valid requests never panic the
    /// parser, and every failure is a reply with a code.
    #[test]
    fn mutated_requests_never_panic() {
        let seeds = [
            request_line(1, &Request::Ping),
            request_line(
                2,
                &Request::Move {
                    group: "chrome/background".into(),
                    targets: vec![TaskRef {
                        id: 1234,
                        starttime: Some(5678),
                    }],
                },
            ),
            request_line(
                3,
                &Request::Restrict {
                    group: "vm:termina".into(),
                    state: RestrictState::Foreground,
                    quota_percent: None,
                },
            ),
            // Nested objects and arrays, where duplicate keys can appear.
            r#"{"v":1,"id":"x","op":"move","group":"ui","targets":[{"id":1},{"id":2,"starttime":3}]}"#
                .to_string(),
        ];
        let alphabet = br#"{}[]":,0123456789-.eE \ntrufalsn"vidoptargesu"#;
        let mut x: u64 = 0x2545F4914F6CDD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].trim_end().as_bytes().to_vec();
            for _ in 0..(next() % 4 + 1) {
                let pos = (next() as usize) % (bytes.len() + 1);
                match next() % 3 {
                    0 if pos < bytes.len() => {
                        bytes[pos] = alphabet[(next() as usize) % alphabet.len()]
                    }
                    1 => bytes.insert(pos, alphabet[(next() as usize) % alphabet.len()]),
                    _ => bytes.truncate(pos.max(1)),
                }
            }
            if let Err(reply) = parse(&bytes) {
                assert!(!reply.ok);
                assert!(reply.error.is_some());
            }
        }
    }
}
