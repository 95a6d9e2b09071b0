//! The journal: the changes since the last snapshot, one self-checking line each, and the
//! maps that know which of their entries changed, so a commit writes those and nothing else.
//!
//! A line is `LEN CRC JSON\n`: the payload's length in bytes, its CRC-32 in hex, the payload.
//! The first line is the header (format version, and the generation of the snapshot the
//! changes apply to). A last line without its newline is a write the crash cut short: it is
//! dropped. A complete line that fails its checks is damage, and an error.

use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::io::Write;
use std::ops::Deref;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{AttrRecord, Record, Restriction, State, Why};

pub const JOURNAL_FILE: &str = "state.journal";
/// The journal format this cgqos writes and reads.
const JOURNAL_VERSION: u32 = 1;
/// The longest line accepted: a record is a few hundred bytes, the metadata a few per group
/// and CPU.
pub(super) const MAX_LINE: usize = 1 << 20;

/// A map of records by task id that remembers which ids changed since the last commit.
/// Reads go through `Deref`; every change goes through the methods below, which note it.
#[derive(Debug, Clone)]
pub struct Tracked<V> {
    map: BTreeMap<u32, V>,
    changed: BTreeSet<u32>,
    /// Emptied wholesale (`clear`): the next commit writes a snapshot instead of a line per
    /// id.
    cleared: bool,
}

impl<V> Default for Tracked<V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            changed: BTreeSet::new(),
            cleared: false,
        }
    }
}

/// Equal contents are equal maps, whatever is still to be written.
impl<V: PartialEq> PartialEq for Tracked<V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}
impl<V: Eq> Eq for Tracked<V> {}

impl<V> Deref for Tracked<V> {
    type Target = BTreeMap<u32, V>;
    fn deref(&self) -> &BTreeMap<u32, V> {
        &self.map
    }
}

impl<'a, V> IntoIterator for &'a Tracked<V> {
    type Item = (&'a u32, &'a V);
    type IntoIter = btree_map::Iter<'a, u32, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<V> FromIterator<(u32, V)> for Tracked<V> {
    fn from_iter<I: IntoIterator<Item = (u32, V)>>(iter: I) -> Self {
        let map: BTreeMap<u32, V> = iter.into_iter().collect();
        Tracked {
            changed: map.keys().copied().collect(),
            map,
            cleared: false,
        }
    }
}

impl<V: Serialize> Serialize for Tracked<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Tracked<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Tracked {
            map: BTreeMap::deserialize(d)?,
            ..Tracked::default()
        })
    }
}

impl<V> Tracked<V> {
    pub fn insert(&mut self, id: u32, value: V) -> Option<V> {
        self.changed.insert(id);
        self.map.insert(id, value)
    }

    pub fn remove(&mut self, id: &u32) -> Option<V> {
        let old = self.map.remove(id);
        if old.is_some() {
            self.changed.insert(*id);
        }
        old
    }

    pub fn get_mut(&mut self, id: &u32) -> Option<&mut V> {
        let v = self.map.get_mut(id)?;
        self.changed.insert(*id);
        Some(v)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&u32, &mut V) -> bool) {
        let changed = &mut self.changed;
        self.map.retain(|id, v| {
            let k = keep(id, v);
            if !k {
                changed.insert(*id);
            }
            k
        });
    }

    pub fn clear(&mut self) {
        self.cleared |= !self.map.is_empty() || !self.changed.is_empty();
        self.map.clear();
        self.changed.clear();
    }

    /// Ids changed since the last commit.
    pub(super) fn changed(&self) -> impl Iterator<Item = (u32, Option<&V>)> {
        self.changed.iter().map(|id| (*id, self.map.get(id)))
    }

    pub(super) fn cleared(&self) -> bool {
        self.cleared
    }

    /// Everything is written: nothing is pending any more.
    pub(super) fn settle(&mut self) {
        self.changed.clear();
        self.cleared = false;
    }

    /// Sets an entry read back from the journal (already on disk: not pending).
    fn replay(&mut self, id: u32, value: Option<V>) {
        match value {
            Some(v) => self.map.insert(id, v),
            None => self.map.remove(&id),
        };
    }
}

/// The part of the state that is not per task: a handful of entries per group and per CPU,
/// written whole when any of it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Meta {
    root: Option<PathBuf>,
    created_root: bool,
    vms: BTreeSet<String>,
    restrictions: BTreeMap<String, Restriction>,
    sysfs: BTreeMap<PathBuf, String>,
    created: Option<BTreeSet<String>>,
}

impl Meta {
    pub(super) fn of(s: &State) -> Meta {
        Meta {
            root: s.root.clone(),
            created_root: s.created_root,
            vms: s.vms.clone(),
            restrictions: s.restrictions.clone(),
            sysfs: s.sysfs.clone(),
            created: s.created.clone(),
        }
    }

    /// Whether `s` has these values (compared in place: no copy on the commit path).
    pub(super) fn matches(&self, s: &State) -> bool {
        self.root == s.root
            && self.created_root == s.created_root
            && self.vms == s.vms
            && self.restrictions == s.restrictions
            && self.sysfs == s.sysfs
            && self.created == s.created
    }

    fn apply(self, s: &mut State) {
        s.root = self.root;
        s.created_root = self.created_root;
        s.vms = self.vms;
        s.restrictions = self.restrictions;
        s.sysfs = self.sysfs;
        s.created = self.created;
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    journal: u32,
    generation: u64,
}

/// One change as written (borrowing the state) ...
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum ChangeOut<'a> {
    Task {
        id: u32,
        record: Option<&'a Record>,
    },
    Attr {
        id: u32,
        record: Option<&'a AttrRecord>,
    },
    Why {
        id: u32,
        record: Option<&'a Why>,
    },
    Meta(&'a Meta),
}

/// ... and as read back.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Change {
    Task { id: u32, record: Option<Record> },
    Attr { id: u32, record: Option<AttrRecord> },
    Why { id: u32, record: Option<Why> },
    Meta(Meta),
}

/// Appends one line holding `payload` to `out`.
fn push_line(out: &mut Vec<u8>, payload: &[u8]) {
    let _ = write!(out, "{} {:08x} ", payload.len(), crc32(payload));
    out.extend_from_slice(payload);
    out.push(b'\n');
}

fn push_json(out: &mut Vec<u8>, value: &impl Serialize) {
    push_line(
        out,
        &serde_json::to_vec(value).expect("journal records serialise"),
    );
}

/// The header line of a journal for the snapshot of `generation`.
pub(super) fn header(generation: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let h = Header {
        journal: JOURNAL_VERSION,
        generation,
    };
    push_json(&mut out, &h);
    out
}

/// The lines for every change `s` has pending: one per changed id, and the metadata if it
/// differs from `written` (which it then becomes).
pub(super) fn pending_lines(s: &State, written: &mut Meta) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, record) in s.tasks.changed() {
        push_json(&mut out, &ChangeOut::Task { id, record });
    }
    for (id, record) in s.attrs.changed() {
        push_json(&mut out, &ChangeOut::Attr { id, record });
    }
    for (id, record) in s.why.changed() {
        push_json(&mut out, &ChangeOut::Why { id, record });
    }
    if !written.matches(s) {
        *written = Meta::of(s);
        push_json(&mut out, &ChangeOut::Meta(written));
    }
    out
}

/// A journal read back.
#[derive(Debug)]
pub(super) struct Parsed {
    /// The snapshot generation its changes apply to; `None` for a journal whose header was
    /// never completely written.
    pub generation: Option<u64>,
    /// Bytes up to the end of the last complete line (a torn tail starts here).
    pub valid_len: usize,
    changes: Vec<Change>,
}

/// What is wrong with a journal: the line (1-based) and why.
#[derive(Debug)]
pub(super) struct BadJournal(pub usize, pub String);

impl Parsed {
    /// Applies the changes, in order, to the snapshot they follow.
    pub(super) fn replay(self, s: &mut State) {
        for c in self.changes {
            match c {
                Change::Task { id, record } => s.tasks.replay(id, record),
                Change::Attr { id, record } => s.attrs.replay(id, record),
                Change::Why { id, record } => s.why.replay(id, record),
                Change::Meta(m) => m.apply(s),
            }
        }
    }
}

/// Parses a journal's bytes: every complete line checked (length, checksum, JSON), a last
/// line without its newline dropped.
pub(super) fn parse(bytes: &[u8]) -> Result<Parsed, BadJournal> {
    let mut parsed = Parsed {
        generation: None,
        valid_len: 0,
        changes: Vec::new(),
    };
    let mut rest = bytes;
    let mut n = 0;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        n += 1;
        let payload = checked_payload(&rest[..end]).map_err(|why| BadJournal(n, why))?;
        let bad = |e: serde_json::Error| BadJournal(n, e.to_string());
        if n == 1 {
            let h: Header = serde_json::from_slice(payload).map_err(bad)?;
            if h.journal != JOURNAL_VERSION {
                return Err(BadJournal(
                    n,
                    format!(
                        "journal format {}, this cgqos reads format {JOURNAL_VERSION}",
                        h.journal
                    ),
                ));
            }
            parsed.generation = Some(h.generation);
        } else {
            parsed
                .changes
                .push(serde_json::from_slice(payload).map_err(bad)?);
        }
        rest = &rest[end + 1..];
        parsed.valid_len = bytes.len() - rest.len();
    }
    Ok(parsed)
}

/// The payload of one line (without its newline), if its length and checksum agree.
fn checked_payload(line: &[u8]) -> Result<&[u8], String> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(len), Some(crc), Some(payload)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected `LENGTH CRC32 RECORD`".into());
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let len: usize = std::str::from_utf8(len)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("length {:?} is not a number", text(len)))?;
    if len > MAX_LINE {
        return Err(format!(
            "a record of {len} bytes (at most {MAX_LINE} are accepted)"
        ));
    }
    if len != payload.len() {
        return Err(format!(
            "the record has {} bytes, its line says {len}",
            payload.len()
        ));
    }
    let crc = std::str::from_utf8(crc)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| format!("checksum {:?} is not hexadecimal", text(crc)))?;
    if crc != crc32(payload) {
        return Err(format!(
            "checksum {crc:08x}, the record's is {:08x}",
            crc32(payload)
        ));
    }
    Ok(payload)
}

/// CRC-32 (IEEE 802.3, as zlib), table computed at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

pub(super) fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}
