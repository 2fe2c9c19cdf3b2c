//! The audit log's tamper evidence: each entry carries an HMAC-SHA256 over
//! its own fields and the previous entry's MAC, under a key kept outside
//! the store (derived from the secrets key). Whoever can edit the store but
//! not read that key cannot change, remove or insert an entry without the
//! chain breaking at it; `verify` walks the chain and names the first entry
//! that does not hold. Pure: the store reads and writes the rows.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// One audit entry as stored (without its MAC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    pub at_ms: i64,
    /// The user acting ("" for an anonymous request).
    pub actor: String,
    /// The id of the API token used ("" for none).
    pub token_id: String,
    /// admin, member, or "" for none.
    pub role: String,
    pub source_ip: String,
    pub user_agent: String,
    /// The method and route template, e.g. `POST /v1/workspaces/{name}/stop`.
    pub action: String,
    /// What it acted on: the request's path and the owner it names.
    pub resource: String,
    /// The HTTP status of the answer (101 for a tunnel session opened).
    pub status: i64,
    /// The error code of a refusal or failure ("" on success).
    pub error_code: String,
    pub request_id: String,
    /// What changed, as JSON, secrets left out.
    pub diff: String,
}

/// The MAC of `e` following an entry whose MAC is `prev` ("" for the first).
pub fn mac(key: &[u8; 32], prev: &str, e: &Entry) -> String {
    // Fields in a fixed order (the struct's), so the same entry always has
    // the same bytes; serde_json escapes every separator inside a field.
    let body = serde_json::to_vec(e).unwrap_or_default();
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(prev.as_bytes());
    m.update(b"\n");
    m.update(&body);
    hex::encode(m.finalize().into_bytes())
}

/// Where the chain stops holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// Entry `seq` is not what was written (changed, or put in its place).
    Changed { seq: i64 },
    /// Entries are missing before `seq` (it follows `after`).
    Missing { after: i64, seq: i64 },
    /// The chain ends at `last` but its head says `head` (entries removed
    /// or added at the end).
    Head { last: i64, head: i64 },
}

impl Break {
    /// The first entry that does not hold (one past the end for a head
    /// that does not match).
    pub fn at(&self) -> i64 {
        match self {
            Break::Changed { seq } | Break::Missing { seq, .. } => *seq,
            Break::Head { last, .. } => last + 1,
        }
    }
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::Changed { seq } => write!(
                f,
                "entry {seq} does not match its MAC: it was changed, or inserted"
            ),
            Break::Missing { after, seq } => {
                write!(f, "entries between {after} and {seq} were removed")
            }
            Break::Head { last, head } => write!(
                f,
                "the log ends at entry {last} but {head} were written: entries at its end were removed or added"
            ),
        }
    }
}

/// A walk along the chain, fed entries in `seq` order a page at a time.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: [u8; 32],
    prev_seq: i64,
    prev_mac: String,
    /// The first break found, if any.
    pub broken: Option<Break>,
}

impl Verifier {
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            key,
            prev_seq: 0,
            prev_mac: String::new(),
            broken: None,
        }
    }

    /// The last entry checked.
    pub fn last(&self) -> i64 {
        self.prev_seq
    }

    /// Checks the next entry and its stored MAC.
    pub fn next(&mut self, e: &Entry, stored: &str) {
        if self.broken.is_some() {
            return;
        }
        if e.seq != self.prev_seq + 1 {
            self.broken = Some(if e.seq > self.prev_seq + 1 {
                Break::Missing {
                    after: self.prev_seq,
                    seq: e.seq,
                }
            } else {
                Break::Changed { seq: e.seq }
            });
            return;
        }
        if mac(&self.key, &self.prev_mac, e) != stored {
            self.broken = Some(Break::Changed { seq: e.seq });
            return;
        }
        self.prev_seq = e.seq;
        self.prev_mac = stored.to_string();
    }

    /// Ends the walk against the head the store keeps (`seq`, `mac` of the
    /// newest entry written).
    pub fn finish(mut self, head_seq: i64, head_mac: &str) -> Option<Break> {
        if self.broken.is_none() && (head_seq != self.prev_seq || head_mac != self.prev_mac) {
            self.broken = Some(Break::Head {
                last: self.prev_seq,
                head: head_seq,
            });
        }
        self.broken
    }
}

/// Keys whose values are never recorded in a diff (environment variables
/// as a whole: they often carry credentials).
const SECRET_KEYS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passphrase",
    "credential",
    "value",
    "key_pem",
    "env",
    "stdin",
    // berth login --oidc's secret, traded with its one-time code.
    "verifier",
];

/// `v` with the value of every key that names a secret replaced.
pub fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                let lower = k.to_ascii_lowercase();
                if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
                    *v = serde_json::Value::String("(secret)".into());
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64) -> Entry {
        Entry {
            seq,
            at_ms: 1_000 + seq,
            actor: "alice".into(),
            token_id: "abc".into(),
            role: "member".into(),
            source_ip: "127.0.0.1".into(),
            user_agent: "berth".into(),
            action: "POST /v1/workspaces".into(),
            resource: "/v1/workspaces".into(),
            status: 201,
            error_code: String::new(),
            request_id: format!("r{seq}"),
            diff: "{}".into(),
        }
    }

    fn chain(n: i64, key: &[u8; 32]) -> Vec<(Entry, String)> {
        let mut prev = String::new();
        (1..=n)
            .map(|s| {
                let e = entry(s);
                prev = mac(key, &prev, &e);
                (e, prev.clone())
            })
            .collect()
    }

    fn check(key: [u8; 32], rows: &[(Entry, String)], head: (i64, &str)) -> Option<Break> {
        let mut v = Verifier::new(key);
        for (e, m) in rows {
            v.next(e, m);
        }
        v.finish(head.0, head.1)
    }

    #[test]
    fn an_intact_chain_holds_and_each_tampering_is_named() {
        let key = [7; 32];
        let rows = chain(5, &key);
        let head = (5, rows[4].1.as_str());
        assert_eq!(check(key, &rows, head), None);
        assert_eq!(check(key, &[], (0, "")), None);

        let mut changed = rows.clone();
        changed[2].0.status = 200;
        assert_eq!(check(key, &changed, head), Some(Break::Changed { seq: 3 }));

        let mut removed = rows.clone();
        removed.remove(1);
        assert_eq!(
            check(key, &removed, head),
            Some(Break::Missing { after: 1, seq: 3 })
        );

        // An entry put in with a MAC made without the key.
        let mut inserted = rows.clone();
        let mut forged = entry(3);
        forged.actor = "mallory".into();
        let forged_mac = mac(&[0; 32], &rows[1].1, &forged);
        inserted[2] = (forged, forged_mac);
        assert_eq!(check(key, &inserted, head), Some(Break::Changed { seq: 3 }));

        let truncated = &rows[..4];
        assert_eq!(
            check(key, truncated, head),
            Some(Break::Head { last: 4, head: 5 })
        );
        // Another key (a store moved under another coordinator's key) fails at once.
        assert_eq!(check([8; 32], &rows, head), Some(Break::Changed { seq: 1 }));
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut v = serde_json::json!({
            "name": "ws", "token": "bt_x", "env": {"A": "ghp"}, "labels": {"GITHUB_TOKEN": "x"},
            "items": [{"password": "p"}], "public_key": "ssh-ed25519 AAAA"
        });
        redact(&mut v);
        assert_eq!(v["token"], "(secret)");
        assert_eq!(v["env"], "(secret)");
        assert_eq!(v["labels"]["GITHUB_TOKEN"], "(secret)");
        assert_eq!(v["items"][0]["password"], "(secret)");
        assert_eq!(v["name"], "ws");
        assert_eq!(v["public_key"], "ssh-ed25519 AAAA");
    }
}
