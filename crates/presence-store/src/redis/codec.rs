//! Reading what the scripts write: hash fields and feed entries into domain types.
//!
//! The hash `presence:{user}` keeps the seed's fields (`status`, `last_activity` in unix
//! seconds, `zone_id`, `org_id`, `updated_at` in RFC 3339, `metadata` JSON) plus short fields
//! of ours: `v` version, `ar` away reason, `ma` manual away, `dev` devices (csv; stored only
//! while no session is open, else derived from the sessions), `last_seen`
//! (unix seconds), `gr` grace deadline (ms), `ni` nodes whose index list holds the user, and
//! `s:{session}` = `node|device` (WebSocket) or `|device|lease ms` (REST heartbeat).
//! A feed entry holds the view after the change in short fixed fields (see [`decode_event`]).

use presence_core::time::parse_rfc3339;
use presence_core::{
    AwayReason, DeviceKind, DeviceSet, FeedId, Millis, NodeId, OrgId, PresenceEvent, PresenceView,
    Session, SessionId, Status, StoreError, UserId, UserRecord, ZoneId,
};
use redis::Value;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A scalar reply as text.
pub(crate) fn text(v: &Value) -> Result<String, StoreError> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b.clone()).map_err(|_| corrupt("non-UTF-8 string"))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        Value::Okay => Ok("OK".into()),
        other => Err(corrupt(format_args!("expected a string, got {other:?}"))),
    }
}

/// A scalar reply as an integer.
pub(crate) fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => text(other)?
            .parse()
            .map_err(|_| corrupt("expected an integer")),
    }
}

/// An array reply.
pub(crate) fn array(v: &Value) -> Result<&[Value], StoreError> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(&[]),
        other => Err(corrupt(format_args!("expected an array, got {other:?}"))),
    }
}

/// A flat `field, value, field, value …` array as pairs.
pub(crate) fn pairs(v: &Value) -> Result<Vec<(String, String)>, StoreError> {
    let a = array(v)?;
    if a.len() % 2 != 0 {
        return Err(corrupt("odd field list"));
    }
    a.chunks(2)
        .map(|c| Ok((text(&c[0])?, text(&c[1])?)))
        .collect()
}

/// Unix seconds with fractions (the seed's format) to milliseconds.
pub(crate) fn ms_of_secs(s: &str) -> Result<Millis, StoreError> {
    let x: f64 = s
        .parse()
        .map_err(|_| corrupt(format_args!("bad time {s:?}")))?;
    Ok((x * 1000.0).round() as Millis)
}

fn parse<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, StoreError> {
    v.parse()
        .map_err(|_| corrupt(format_args!("bad {field} {v:?}")))
}

/// `node|device` (a WebSocket) or `|device|lease` (a REST heartbeat lease).
fn parse_session(v: &str) -> Result<Session, StoreError> {
    let mut parts = v.splitn(3, '|');
    let (node, device, lease) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    let (Some(node), Some(device)) = (node, device) else {
        return Err(corrupt(format_args!("bad session {v:?}")));
    };
    Ok(Session {
        node: if node.is_empty() {
            None
        } else {
            Some(parse::<NodeId>("node", node)?)
        },
        device: parse::<DeviceKind>("device", device)?,
        lease_until: if lease.is_empty() {
            None
        } else {
            Some(parse("lease", lease)?)
        },
    })
}

/// A record from its hash fields (or from a feed entry's visible fields).
pub(crate) fn decode_record(
    user: UserId,
    fields: &[(String, String)],
) -> Result<UserRecord, StoreError> {
    let mut r = UserRecord::new(user, 0);
    for (f, v) in fields {
        match f.as_str() {
            "status" => r.status = parse::<Status>(f, v)?,
            "ar" => r.away_reason = Some(parse::<AwayReason>(f, v)?),
            "ma" => r.manual_away = v == "1",
            "last_activity" => r.last_activity = ms_of_secs(v)?,
            "last_seen" => r.last_seen = Some(ms_of_secs(v)?),
            "zone_id" => r.zone_id = Some(parse::<ZoneId>(f, v)?),
            "org_id" => r.org_id = Some(parse::<OrgId>(f, v)?),
            "dev" => {
                r.devices = v
                    .split(',')
                    .map(|d| parse::<DeviceKind>(f, d))
                    .collect::<Result<DeviceSet, _>>()?;
            }
            "metadata" => {
                r.metadata =
                    Some(serde_json::from_str(v).map_err(|_| corrupt("bad metadata JSON"))?)
            }
            "v" => r.version = parse(f, v)?,
            "updated_at" => {
                r.updated_at = parse_rfc3339(v).ok_or_else(|| corrupt("bad updated_at"))?
            }
            "gr" => r.grace_until = Some(parse(f, v)?),
            _ => {
                if let Some(id) = f.strip_prefix("s:") {
                    r.sessions
                        .insert(parse::<SessionId>("session id", id)?, parse_session(v)?);
                }
            }
        }
    }
    // `dev` is stored only while there is no session; otherwise the sessions say it.
    if !r.sessions.is_empty() {
        r.devices = r.sessions.values().map(|s| s.device).collect();
    }
    Ok(r)
}

/// A feed entry (`id`, fields) as an event. Entries hold the fields `event_fields` in
/// common.lua writes, in that order, with `''` for none: `u` user, `s` status, `r` away
/// reason, `la` last activity ms, `ls` last seen ms, `z` zone, `o` org, `d` devices, `m`
/// metadata, `v` version, `ps`/`pz`/`po` the previous status, zone and org, `ts` ms.
pub(crate) fn decode_event(
    id: &str,
    fields: &[(String, String)],
) -> Result<PresenceEvent, StoreError> {
    let get = |name: &str| field(fields, name);
    let need = |name: &str| get(name).ok_or_else(|| corrupt(format_args!("event without {name}")));
    let opt = |name: &str| OptField(get(name), name.to_string());
    let ts: Millis = parse("ts", need("ts")?)?;
    let metadata = match get("m") {
        Some(m) => Some(serde_json::from_str(m).map_err(|_| corrupt("bad metadata JSON"))?),
        None => None,
    };
    let devices = match get("d") {
        Some(d) => d
            .split(',')
            .map(|d| parse::<DeviceKind>("d", d))
            .collect::<Result<DeviceSet, _>>()?,
        None => DeviceSet::EMPTY,
    };
    Ok(PresenceEvent {
        feed_id: parse::<FeedId>("feed id", id)?,
        user: PresenceView {
            user_id: parse("u", need("u")?)?,
            status: parse("s", need("s")?)?,
            away_reason: opt("r").parse()?,
            last_activity: parse("la", need("la")?)?,
            last_seen: opt("ls").parse()?,
            zone_id: opt("z").parse()?,
            org_id: opt("o").parse()?,
            devices,
            custom_status: None,
            metadata,
            invisible: false,
            version: parse("v", need("v")?)?,
            updated_at: ts,
        },
        prev_status: opt("ps").parse()?.unwrap_or(Status::Offline),
        prev_zone_id: opt("pz").parse()?,
        prev_org_id: opt("po").parse()?,
        ts,
    })
}

/// A non-empty field of a feed entry.
fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// An optional field, parsed into whatever type the event needs there.
struct OptField<'a>(Option<&'a str>, String);

impl OptField<'_> {
    fn parse<T: std::str::FromStr>(&self) -> Result<Option<T>, StoreError> {
        self.0.map(|v| parse(&self.1, v)).transpose()
    }
}

/// A script's `{feed_id, event_fields}` pair as an optional event.
pub(crate) fn decode_committed(
    id: &Value,
    fields: &Value,
) -> Result<Option<PresenceEvent>, StoreError> {
    let id = text(id)?;
    if id.is_empty() {
        return Ok(None);
    }
    decode_event(&id, &pairs(fields)?).map(Some)
}

/// Stream entries (`[[id, [f, v, …]], …]`) as events.
pub(crate) fn decode_entries(v: &Value) -> Result<Vec<PresenceEvent>, StoreError> {
    array(v)?
        .iter()
        .map(|entry| {
            let e = array(entry)?;
            if e.len() != 2 {
                return Err(corrupt("bad stream entry"));
            }
            decode_event(&text(&e[0])?, &pairs(&e[1])?)
        })
        .collect()
}
