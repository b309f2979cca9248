//! Reading what Redis answers: every reply the store gets — script replies, hash fields, feed
//! entries, pipelines — into domain types, in this one place. A reply of the wrong shape is
//! [`StoreError::Corrupt`]; nothing here sees a connection.
//!
//! The hash `presence:{user}` keeps the seed's fields (`status`, `last_activity` in unix
//! seconds, `zone_id`, `org_id`, `updated_at` in RFC 3339, `metadata` JSON) plus short fields
//! of ours: `v` version, `ar` away reason, `ma` manual away, `dev` devices (csv; stored only
//! while no session is open, else derived from the sessions), `last_seen`
//! (unix seconds), `gr` grace deadline (ms), `ni` nodes whose index list holds the user
//! beyond its sessions' nodes (only the scripts read it),
//! `s:{session}` = `node|device|opened` (WebSocket) or `|device|lease|opened` (REST heartbeat;
//! lease in ms, opened in unix seconds; see [`parse_session`]), and,
//! only while the user has a custom status, `ck` its kind, `ct` text, `ce` emoji, `cx`
//! expires_at (ms) (each absent when none); `inv` = `1` while invisible, privacy `pp` (who sees
//! the presence, absent: everyone) and `pl` (how last seen shows, absent: exact), and while
//! the user hides from onlookers outside the org `iv` = `since|version|updated` (ms: since
//! when, the version and time they were last shown), `io` the same for the org's members.
//! A feed entry holds the view after the change in short fixed fields (see [`decode_event`]).

use presence_core::geo::{distance_m, shown_distance};
use presence_core::history;
use presence_core::time::parse_rfc3339;
use presence_core::{
    Applied, AwayReason, CustomStatus, CustomStatusKind, Day, DeviceKind, DeviceSet, FeedId,
    FeedRead, Hidden, InactivePage, InactiveUser, LastSeen, ListCursor, Location, Millis,
    NearbyUser, NodeId, NodeInfo, Onlookers, OpenSession, OrgId, PresenceEvent, PresenceView,
    Privacy, ScopeCount, ScopePage, Session, SessionId, Status, StoreError, TransitionError, Typer,
    TypingOutcome, UserId, UserRecord, UserSessions, ZoneId,
};
use redis::Value;

use crate::sweep::Step;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A scalar reply as text.
fn text(v: &Value) -> Result<String, StoreError> {
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
fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => text(other)?
            .parse()
            .map_err(|_| corrupt("expected an integer")),
    }
}

/// An array reply.
fn array(v: &Value) -> Result<&[Value], StoreError> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(&[]),
        other => Err(corrupt(format_args!("expected an array, got {other:?}"))),
    }
}

/// A flat `field, value, field, value …` array as pairs.
fn pairs(v: &Value) -> Result<Vec<(String, String)>, StoreError> {
    let a = array(v)?;
    if !a.len().is_multiple_of(2) {
        return Err(corrupt("odd field list"));
    }
    a.chunks(2)
        .map(|c| Ok((text(&c[0])?, text(&c[1])?)))
        .collect()
}

/// Unix seconds with fractions (the seed's format) to milliseconds.
fn ms_of_secs(s: &str) -> Result<Millis, StoreError> {
    let x: f64 = s
        .parse()
        .map_err(|_| corrupt(format_args!("bad time {s:?}")))?;
    Ok((x * 1000.0).round() as Millis)
}

fn parse<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, StoreError> {
    v.parse()
        .map_err(|_| corrupt(format_args!("bad {field} {v:?}")))
}

/// `node|device|opened` (a WebSocket) or `|device|lease|opened` (a REST heartbeat lease),
/// `opened` in unix seconds; a value written before sessions kept their open time ends before
/// it (`node|device`, `|device|lease`).
fn parse_session(v: &str) -> Result<Session, StoreError> {
    let bad = || corrupt(format_args!("bad session {v:?}"));
    let mut parts = v.split('|');
    let (Some(node), Some(device)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    let lease = if node.is_empty() { parts.next() } else { None };
    let opened = parts.next();
    if parts.next().is_some() {
        return Err(bad());
    }
    let opened = match opened {
        None | Some("") => None,
        Some(secs) => Some(parse::<Millis>("opened", secs)? * 1000),
    };
    Ok(Session {
        node: if node.is_empty() {
            None
        } else {
            Some(parse::<NodeId>("node", node)?)
        },
        device: parse::<DeviceKind>("device", device)?,
        lease_until: match lease {
            None | Some("") => None,
            Some(lease) => Some(parse("lease", lease)?),
        },
        opened,
    })
}

/// The custom status from its four fields (`ck` kind, `ct` text, `ce` emoji, `cx` expiry ms),
/// each `None` when absent or empty: no kind, no custom status.
fn decode_custom(
    kind: Option<&str>,
    text: Option<&str>,
    emoji: Option<&str>,
    expires: Option<&str>,
) -> Result<Option<CustomStatus>, StoreError> {
    fn nonempty(v: Option<&str>) -> Option<&str> {
        v.filter(|v| !v.is_empty())
    }
    let Some(kind) = nonempty(kind) else {
        return Ok(None);
    };
    Ok(Some(CustomStatus {
        kind: parse::<CustomStatusKind>("ck", kind)?,
        text: nonempty(text).map(Into::into),
        emoji: nonempty(emoji).map(Into::into),
        expires_at: nonempty(expires).map(|t| parse("cx", t)).transpose()?,
    }))
}

/// `since|version|updated_at` (ms): what others see of an invisible user.
fn parse_hidden(v: &str) -> Result<Hidden, StoreError> {
    let mut parts = v.split('|');
    let mut next = |name: &str| parse::<i64>(name, parts.next().unwrap_or(""));
    let (since, version, updated_at) = (next("iv since")?, next("iv version")?, next("iv time")?);
    Ok(Hidden {
        since,
        version: u64::try_from(version).map_err(|_| corrupt("bad iv version"))?,
        updated_at,
    })
}

/// A record from its hash fields (or from a feed entry's visible fields).
fn decode_record(user: UserId, fields: &[(String, String)]) -> Result<UserRecord, StoreError> {
    let custom = |name: &str| {
        fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.as_str())
    };
    let custom_status = decode_custom(custom("ck"), custom("ct"), custom("ce"), custom("cx"))?;
    let mut r = UserRecord::new(user, 0);
    r.custom_status = custom_status;
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
            "inv" => r.invisible = v == "1",
            "pp" => r.privacy.presence = parse(f, v)?,
            "pl" => r.privacy.last_seen = parse(f, v)?,
            "iv" => r.hidden = Some(parse_hidden(v)?),
            "io" => r.hidden_from_org = Some(parse_hidden(v)?),
            "os" => r.present_since = Some(parse(f, v)?),
            "geo" => r.location = Some(Location::decode(v).ok_or_else(|| corrupt("bad geo"))?),
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
    // `os` is stored only once the presence's first session has closed; until then the
    // earliest open time says it (common.lua presence_start).
    if r.status == Status::Offline {
        r.present_since = None;
    } else if r.present_since.is_none() {
        r.present_since = r.sessions.values().filter_map(|s| s.opened).min();
    }
    Ok(r)
}

/// history.lua's reply (`{record, ms per day}`) as ms present per day from `first` to
/// `last`, with the presence still going on added up to `now`.
pub(crate) fn decode_history(
    user: &UserId,
    reply: &Value,
    first: Day,
    last: Day,
    now: Millis,
) -> Result<Vec<Millis>, StoreError> {
    let [record, stored] = array(reply)? else {
        return Err(corrupt("unexpected history reply"));
    };
    let stored = array(stored)?;
    let mut days = std::collections::BTreeMap::new();
    for (day, v) in (first..=last).zip(stored) {
        if !matches!(v, Value::Nil) {
            days.insert(day, int(v)?);
        }
    }
    let fields = pairs(record)?;
    if !fields.is_empty() {
        let r = decode_record(user.clone(), &fields)?;
        if let Some((from, to)) = history::open_span(&r, now) {
            history::add_span(&mut days, from, to);
        }
    }
    Ok((first..=last)
        .map(|d| days.get(&d).copied().unwrap_or(0))
        .collect())
}

/// inactive.lua's reply: `{cursor ms or '', cursor user or '', user, last seen ms, ...}`.
pub(crate) fn decode_inactive(reply: &Value) -> Result<InactivePage, StoreError> {
    let [cur_ms, cur_user, rest @ ..] = array(reply)? else {
        return Err(corrupt("unexpected inactive reply"));
    };
    if !rest.len().is_multiple_of(2) {
        return Err(corrupt("odd inactive reply"));
    }
    let users = rest
        .chunks(2)
        .map(|c| {
            Ok(InactiveUser {
                user: user_id(&c[0])?,
                last_seen: int(&c[1])?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let cur_ms = text(cur_ms)?;
    let next_cursor = if cur_ms.is_empty() {
        None
    } else {
        Some(ListCursor {
            activity: parse("cursor", &cur_ms)?,
            user: user_id(cur_user)?,
        })
    };
    Ok(InactivePage { users, next_cursor })
}

/// nearby.lua's reply: `{user, {lon, lat}, record, ...}`, measured from `from` as the memory
/// store measures, keeping only users still listed
/// with a location (a hand-made entry in a `geo:` set is never shown).
pub(crate) fn decode_nearby(reply: &Value, from: Location) -> Result<Vec<NearbyUser>, StoreError> {
    let a = array(reply)?;
    if !a.len().is_multiple_of(3) {
        return Err(corrupt("nearby reply not in threes"));
    }
    let mut out = Vec::with_capacity(a.len() / 3);
    for c in a.chunks(3) {
        let r = decode_record(user_id(&c[0])?, &pairs(&c[2])?)?;
        if r.geo_entry().is_none() {
            continue;
        }
        let [lon, lat] = array(&c[1])? else {
            return Err(corrupt("a position is lon and lat"));
        };
        let (lon, lat): (f64, f64) = (parse("lon", &text(lon)?)?, parse("lat", &text(lat)?)?);
        let at = Location::new(lat, lon).map_err(|e| corrupt(format_args!("position: {e}")))?;
        out.push(NearbyUser {
            view: r.view(),
            distance_m: shown_distance(distance_m(from, at)),
        });
    }
    Ok(out)
}

/// A feed entry (`id`, fields) as an event. Entries hold the fields `event_fields` in
/// common.lua writes, in that order, with `''` for none: `u` user, `s` status, `r` away
/// reason, `la` last activity ms, `ls` last seen ms, `z` zone, `o` org, `d` devices, `m`
/// metadata, `v` version, `ps`/`pz`/`po` the previous status, zone and org, `ts` ms, then the
/// custom status: `ck` kind, `ct` text, `ce` emoji, `cx` expires_at ms; then `h`, hiding:
/// `''` for a user who hides nothing, else `flags;inv;pp;pl;iv;io` with `inv`, `pp`, `pl`,
/// `iv`, `io` as in the record after the change and flags per kind of onlooker (outside the
/// org `b`, `n`; the org's members `B`, `N`): hidden from them before the change, nothing
/// they see changed. An entry written before custom statuses (or hiding) existed has no
/// `ck` (no `h`): none.
fn decode_event(id: &str, fields: &[(String, String)]) -> Result<PresenceEvent, StoreError> {
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
    // `h`: '' or 'flags;inv;pp;pl;iv;io'.
    let hiding: Vec<&str> = get("h").map_or_else(Vec::new, |h| h.split(';').collect());
    if !hiding.is_empty() && hiding.len() != 6 {
        return Err(corrupt("bad h"));
    }
    let part = |i: usize| hiding.get(i).copied().filter(|v| !v.is_empty());
    let flags = part(0).unwrap_or("");
    let hidden = part(4).map(parse_hidden).transpose()?;
    let hidden_from_org = part(5).map(parse_hidden).transpose()?;
    let privacy = Privacy {
        presence: part(2)
            .map(|v| parse("pp", v))
            .transpose()?
            .unwrap_or_default(),
        last_seen: part(3)
            .map(|v| parse("pl", v))
            .transpose()?
            .unwrap_or_default(),
    };
    Ok(PresenceEvent {
        feed_id: parse::<FeedId>("feed id", id)?,
        user: PresenceView {
            user_id: parse("u", need("u")?)?,
            status: parse("s", need("s")?)?,
            away_reason: opt("r").parse()?,
            last_activity: Some(parse("la", need("la")?)?),
            last_seen: opt("ls").parse()?.map(LastSeen::At),
            zone_id: opt("z").parse()?,
            org_id: opt("o").parse()?,
            devices,
            custom_status: decode_custom(get("ck"), get("ct"), get("ce"), get("cx"))?,
            metadata,
            invisible: part(1) == Some("1"),
            privacy: Some(privacy),
            version: parse("v", need("v")?)?,
            updated_at: Some(ts),
            hidden,
            hidden_from_org,
        },
        prev_status: opt("ps").parse()?.unwrap_or(Status::Offline),
        prev_zone_id: opt("pz").parse()?,
        prev_org_id: opt("po").parse()?,
        ts,
        onlookers: Onlookers {
            others_hidden_before: flags.contains('b'),
            others_unchanged: flags.contains('n'),
            org_hidden_before: flags.contains('B'),
            org_unchanged: flags.contains('N'),
        },
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
fn decode_committed(id: &Value, fields: &Value) -> Result<Option<PresenceEvent>, StoreError> {
    let id = text(id)?;
    if id.is_empty() {
        return Ok(None);
    }
    decode_event(&id, &pairs(fields)?).map(Some)
}

/// Stream entries (`[[id, [f, v, …]], …]`) as events, the number of entries skipped as
/// undecodable (logged), and the id of the last entry. One bad entry (a foreign writer, a
/// hand-made `XADD`, metadata that is not JSON) must never stop delivery of the others.
/// Only a reply that is not a list of `[id, fields]` entries at all is corrupt.
fn decode_entries(v: &Value) -> Result<(Vec<PresenceEvent>, u64, Option<FeedId>), StoreError> {
    let mut events = Vec::new();
    let mut skipped = 0;
    let mut last = None;
    for entry in array(v)? {
        let [id, fields] = array(entry)? else {
            return Err(corrupt("bad stream entry"));
        };
        let id = text(id)?;
        last = Some(parse::<FeedId>("feed id", &id)?);
        match pairs(fields).and_then(|f| decode_event(&id, &f)) {
            Ok(e) => events.push(e),
            Err(error) => {
                skipped += 1;
                tracing::warn!(feed_id = %id, %error, "skipping an undecodable feed entry");
            }
        }
    }
    Ok((events, skipped, last))
}

// --- Replies, one function per kind of call -----------------------------------------------

fn user_id(v: &Value) -> Result<UserId, StoreError> {
    UserId::new(text(v)?).map_err(corrupt)
}

/// An integer reply that may be nil (a missing hash field).
fn opt_int(v: &Value) -> Result<Option<i64>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        other => int(other).map(Some),
    }
}

/// A transition's reply: `{'ok', feed_id, event}`, `{'ok', '', {}, record}` (nothing visible
/// changed) or a refusal.
pub(crate) fn decode_applied(user: &UserId, reply: &Value) -> Result<Applied, StoreError> {
    let parts = array(reply)?;
    let tag = parts.first().map(text).transpose()?.unwrap_or_default();
    match (tag.as_str(), parts) {
        ("ok", [_, id, ev]) => {
            let event = decode_committed(id, ev)?.ok_or_else(|| corrupt("reply without event"))?;
            Ok(Applied {
                view: event.user.clone(),
                event: Some(event),
            })
        }
        ("ok", [_, _, _, rec]) => Ok(Applied {
            view: decode_record(user.clone(), &pairs(rec)?)?.view(),
            event: None,
        }),
        ("not_found", _) => Err(StoreError::NotFound(user.clone())),
        ("too_many", [_, limit]) => Err(TransitionError::TooManySessions {
            limit: int(limit)? as usize,
        }
        .into()),
        _ => Err(corrupt(format_args!("unexpected script reply {reply:?}"))),
    }
}

/// One open's reply: `{'exists'}` for a session id already open, `{'ended'}` for one the
/// service ended lately, else a transition's reply.
fn decode_opened(user: &UserId, session: &SessionId, reply: &Value) -> Result<Applied, StoreError> {
    if let [tag] = array(reply)? {
        match text(tag)?.as_str() {
            "exists" => return Err(TransitionError::SessionExists(session.clone()).into()),
            "ended" => return Err(TransitionError::SessionEnded(session.clone()).into()),
            _ => {}
        }
    }
    decode_applied(user, reply)
}

/// open.lua's reply: one open's reply per session asked, in order. The outer error is a reply
/// of the wrong shape; the inner ones are each session's answer.
pub(crate) fn decode_opened_many(
    opens: &[OpenSession],
    reply: &Value,
) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
    let replies = array(reply)?;
    if replies.len() != opens.len() {
        return Err(corrupt("one open reply per session expected"));
    }
    Ok(opens
        .iter()
        .zip(replies)
        .map(|(o, r)| decode_opened(&o.user, &o.session, r))
        .collect())
}

/// close.lua's reply: `{'no_session'}` when only a leased session may be closed and there is
/// none by that id, else a transition's reply.
pub(crate) fn decode_closed(
    user: &UserId,
    session: &SessionId,
    reply: &Value,
) -> Result<Applied, StoreError> {
    if let [tag] = array(reply)?
        && text(tag)? == "no_session"
    {
        return Err(StoreError::NoSuchSession(session.clone()));
    }
    decode_applied(user, reply)
}

/// `HGET node:{id}:info sc`: the sessions the store records on a node (nil: none; a damaged
/// negative count reads as none).
pub(crate) fn decode_session_count(reply: &Value) -> Result<u64, StoreError> {
    Ok(opt_int(reply)?.unwrap_or(0).max(0) as u64)
}

/// node_sessions.lua's flat `{user, session, …}`.
pub(crate) fn decode_node_sessions(reply: &Value) -> Result<Vec<(UserId, SessionId)>, StoreError> {
    let a = array(reply)?;
    if !a.len().is_multiple_of(2) {
        return Err(corrupt("odd session list"));
    }
    a.chunks(2)
        .map(|c| {
            Ok((
                user_id(&c[0])?,
                SessionId::new(text(&c[1])?).map_err(corrupt)?,
            ))
        })
        .collect()
}

/// renew_session.lua's `{'ok', lease until ms}`, or a refusal: no such leased session.
pub(crate) fn decode_renewal(session: &SessionId, reply: &Value) -> Result<Millis, StoreError> {
    match array(reply)? {
        [tag, until] if text(tag)? == "ok" => {
            text(until)?.parse().map_err(|_| corrupt("bad lease"))
        }
        _ => Err(StoreError::NoSuchSession(session.clone())),
    }
}

/// activity.lua's `{{feed_id, event}, …}`, one pair per user (`''` id: no event).
pub(crate) fn decode_activity(reply: &Value) -> Result<Vec<PresenceEvent>, StoreError> {
    let mut events = Vec::new();
    for committed in array(reply)? {
        if let [id, ev] = array(committed)?
            && let Some(e) = decode_committed(id, ev)?
        {
            events.push(e);
        }
    }
    Ok(events)
}

/// One `HGETALL presence:{user}` as a record; an empty hash is no record.
fn decode_hash(user: &UserId, reply: &Value) -> Result<Option<UserRecord>, StoreError> {
    let fields = match reply {
        Value::Map(m) => m
            .iter()
            .map(|(f, v)| Ok((text(f)?, text(v)?)))
            .collect::<Result<Vec<_>, StoreError>>()?,
        other => pairs(other)?,
    };
    if fields.is_empty() {
        Ok(None)
    } else {
        decode_record(user.clone(), &fields).map(Some)
    }
}

/// A pipeline of `HGETALL presence:{user}`, one reply per user; an empty hash is no record.
pub(crate) fn decode_views(
    users: &[UserId],
    replies: &[Value],
) -> Result<Vec<Option<PresenceView>>, StoreError> {
    if users.len() != replies.len() {
        return Err(corrupt("one reply per user expected"));
    }
    users
        .iter()
        .zip(replies)
        .map(|(u, v)| Ok(decode_hash(u, v)?.map(|r| r.view())))
        .collect()
}

/// `HGETALL presence:{user}` as the user's open sessions.
pub(crate) fn decode_sessions(
    user: &UserId,
    reply: &Value,
) -> Result<Option<UserSessions>, StoreError> {
    Ok(decode_hash(user, reply)?.map(|r| UserSessions::of(&r)))
}

/// list.lua's `{total, away, cursor ms or '', cursor user or '', user, record, …}`; the
/// counts narrowed to `status` when the list is filtered.
pub(crate) fn decode_list(reply: &Value, status: Option<Status>) -> Result<ScopePage, StoreError> {
    let [total, away, cur_ms, cur_user, rest @ ..] = array(reply)? else {
        return Err(corrupt("unexpected list reply"));
    };
    let total = int(total)?.max(0) as u64;
    let count = ScopeCount {
        total,
        away: (int(away)?.max(0) as u64).min(total),
    }
    .narrowed(status);
    let cur_ms = text(cur_ms)?;
    let next_cursor = if cur_ms.is_empty() {
        None
    } else {
        Some(ListCursor {
            activity: cur_ms.parse().map_err(|_| corrupt("bad cursor"))?,
            user: user_id(cur_user)?,
        })
    };
    if !rest.len().is_multiple_of(2) {
        return Err(corrupt("odd list reply"));
    }
    let users = rest
        .chunks(2)
        .map(|c| Ok(decode_record(user_id(&c[0])?, &pairs(&c[1])?)?.view()))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(ScopePage {
        users,
        count,
        next_cursor,
    })
}

/// A pipeline of `ZCARD online:{scope}`, `HGET away_count {scope}` per scope (nil: none).
pub(crate) fn decode_counts(replies: &[Value]) -> Result<Vec<ScopeCount>, StoreError> {
    if !replies.len().is_multiple_of(2) {
        return Err(corrupt("two replies per scope expected"));
    }
    replies
        .chunks(2)
        .map(|c| {
            // An away count above the total is damage the sweep repairs (sweep_scopes.lua);
            // until then it is clamped, so no count derived from it can wrap.
            let total = opt_int(&c[0])?.unwrap_or(0).max(0) as u64;
            Ok(ScopeCount {
                total,
                away: (opt_int(&c[1])?.unwrap_or(0).max(0) as u64).min(total),
            })
        })
        .collect()
}

/// node_lease.lua's `1` when the node had been reaped or forgotten, else `0`.
pub(crate) fn decode_lease_lost(reply: &Value) -> Result<bool, StoreError> {
    Ok(int(reply)? == 1)
}

/// A list of members, such as `ZRANGEBYSCORE nodes` without scores.
pub(crate) fn decode_members(reply: &Value) -> Result<Vec<String>, StoreError> {
    array(reply)?.iter().map(text).collect()
}

/// Node leases (`ZRANGEBYSCORE nodes … WITHSCORES`) as (node id, lease expiry ms): a flat
/// `member, score, …` array (RESP2) or `[member, score]` pairs (RESP3).
pub(crate) fn decode_leases(reply: &Value) -> Result<Vec<(String, Millis)>, StoreError> {
    let score = |v: &Value| match v {
        Value::Double(d) => Ok(*d as i64),
        other => int(other),
    };
    let a = array(reply)?;
    if a.iter().all(|v| matches!(v, Value::Array(_))) {
        return a
            .iter()
            .map(|p| match array(p)? {
                [m, s] => Ok((text(m)?, score(s)?)),
                _ => Err(corrupt("bad scored member")),
            })
            .collect();
    }
    if !a.len().is_multiple_of(2) {
        return Err(corrupt("odd scored member list"));
    }
    a.chunks(2)
        .map(|c| Ok((text(&c[0])?, score(&c[1])?)))
        .collect()
}

/// Live nodes' leases (see [`decode_leases`]) and, for each in that order, the pipelined
/// reply of its `HMGET node:{id}:info started_at last_renewal sessions`.
pub(crate) fn decode_nodes(
    live: Vec<(String, Millis)>,
    infos: &[Value],
) -> Result<Vec<NodeInfo>, StoreError> {
    if live.len() != infos.len() {
        return Err(corrupt("one info reply per node expected"));
    }
    live.into_iter()
        .zip(infos)
        .map(|((id, until), info)| {
            let [started, renewed, sessions] = array(info)? else {
                return Err(corrupt("bad node info"));
            };
            Ok(NodeInfo {
                node_id: NodeId::new(id).map_err(corrupt)?,
                lease_until: until,
                started_at: opt_int(started)?.unwrap_or(0),
                last_renewal: opt_int(renewed)?.unwrap_or(0),
                sessions: opt_int(sessions)?.unwrap_or(0).max(0) as u64,
            })
        })
        .collect()
}

/// A sweep script's `{changed, batch was full}`.
pub(crate) fn decode_sweep_step(reply: &Value) -> Result<Step, StoreError> {
    match array(reply)? {
        [n, full] => Ok(Step {
            changed: int(n)? as usize,
            full: int(full)? == 1,
        }),
        _ => Err(corrupt("unexpected sweep reply")),
    }
}

/// reap_node.lua's `{sessions ended, state}` as a sweep step (state 0: users remain) and
/// whether the node is now fully reaped (state 1; 2: nothing to reap).
pub(crate) fn decode_reap_step(reply: &Value) -> Result<(Step, bool), StoreError> {
    let [ended, state] = array(reply)? else {
        return Err(corrupt("unexpected reap_node reply"));
    };
    let state = int(state)?;
    Ok((
        Step {
            changed: int(ended)? as usize,
            full: state == 0,
        },
        state == 1,
    ))
}

/// A script's plain count (sweep_stale.lua, compact_node.lua).
pub(crate) fn decode_count(reply: &Value) -> Result<usize, StoreError> {
    Ok(int(reply)?.max(0) as usize)
}

/// `XREVRANGE feed + - COUNT 1`: the newest entry's id, or zero for an empty feed.
pub(crate) fn decode_feed_head(reply: &Value) -> Result<FeedId, StoreError> {
    match array(reply)?.first() {
        Some(entry) => match array(entry)? {
            [id, _] => parse("feed id", &text(id)?),
            _ => Err(corrupt("bad stream entry")),
        },
        None => Ok(FeedId::ZERO),
    }
}

/// read_feed.lua's `{reset, entries}`.
pub(crate) fn decode_feed_read(reply: &Value) -> Result<FeedRead, StoreError> {
    match array(reply)? {
        [reset, entries] => {
            let (events, skipped, last_id) = decode_entries(entries)?;
            Ok(FeedRead {
                reset: int(reset)? == 1,
                events,
                skipped,
                last_id,
            })
        }
        _ => Err(corrupt("unexpected read_feed reply")),
    }
}

/// The major version in `INFO server`'s `redis_version:` line, if there is one.
/// typing.lua's answer.
pub(crate) fn decode_typing(reply: &Value) -> Result<TypingOutcome, StoreError> {
    let a = array(reply)?;
    match a.first().map(text).transpose()?.as_deref() {
        Some("ok") => Ok(TypingOutcome::Written),
        Some("full") => Ok(TypingOutcome::Full {
            limit: a.get(1).map(int).transpose()?.unwrap_or(0).max(0) as usize,
        }),
        _ => Err(corrupt("typing answered something else")),
    }
}

/// A conversation's typing hash (`user` → `until ms|org`): the entries still ahead of `now`,
/// ordered by user id. An entry that does not parse is skipped (it expires with the key).
pub(crate) fn decode_typers(reply: &Value, now: Millis) -> Result<Vec<Typer>, StoreError> {
    let mut typers: Vec<Typer> = pairs(reply)?
        .into_iter()
        .filter_map(|(user, value)| {
            let (until, org) = value.split_once('|')?;
            let until: Millis = until.parse().ok()?;
            let org = match org {
                "" => None,
                o => Some(o.parse::<OrgId>().ok()?),
            };
            Some(Typer {
                user: user.parse().ok()?,
                org,
                until,
            })
        })
        .filter(|t| t.until > now)
        .collect();
    typers.sort_by(|a, b| a.user.cmp(&b.user));
    Ok(typers)
}

pub(crate) fn decode_major_version(reply: &Value) -> Result<Option<u32>, StoreError> {
    let info = match reply {
        Value::VerbatimString { text, .. } => text.clone(),
        other => text(other)?,
    };
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok()))
}

/// A repair script's reply (`lua/repair_*.lua`), or a plain array of strings (a nil is an
/// empty string).
#[derive(Debug, Default)]
pub(crate) struct RepairReply {
    /// The next SCAN or ZSCAN cursor (when asked for: the reply's first element).
    pub(crate) cursor: String,
    /// The integers (counts), in order.
    pub(crate) ints: Vec<i64>,
    /// The strings at the top level, in order.
    pub(crate) strings: Vec<String>,
    /// The nested arrays, each as strings, in order.
    pub(crate) lists: Vec<Vec<String>>,
}

/// Reads a [`RepairReply`]; with `cursor`, the first element is the cursor.
pub(crate) fn decode_repair_reply(reply: &Value, cursor: bool) -> Result<RepairReply, StoreError> {
    let a = array(reply)?;
    let mut out = RepairReply::default();
    let rest = match (cursor, a) {
        (true, [c, rest @ ..]) => {
            out.cursor = text(c)?;
            rest
        }
        (true, []) => return Err(corrupt("a repair step answered nothing")),
        (false, rest) => rest,
    };
    for v in rest {
        match v {
            Value::Int(i) => out.ints.push(*i),
            Value::Nil => out.strings.push(String::new()),
            Value::Array(_) => out
                .lists
                .push(array(v)?.iter().map(text).collect::<Result<_, _>>()?),
            other => out.strings.push(text(other)?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn leases_read_in_either_protocol() {
        let resp2 = Value::Array(vec![bulk("a"), bulk("1732616715000"), bulk("b"), bulk("7")]);
        let resp3 = Value::Array(vec![
            Value::Array(vec![bulk("a"), Value::Double(1_732_616_715_000.0)]),
            Value::Array(vec![bulk("b"), Value::Double(7.0)]),
        ]);
        let want = vec![("a".to_string(), 1_732_616_715_000), ("b".to_string(), 7)];
        assert_eq!(decode_leases(&resp2).unwrap(), want);
        assert_eq!(decode_leases(&resp3).unwrap(), want);
        assert!(matches!(
            decode_leases(&Value::Array(vec![bulk("a")])),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn counts_treat_a_missing_away_field_as_zero() {
        let replies = [Value::Int(3), Value::Nil, Value::Int(2), bulk("1")];
        let counts = decode_counts(&replies).unwrap();
        assert_eq!(
            counts,
            [
                ScopeCount { total: 3, away: 0 },
                ScopeCount { total: 2, away: 1 }
            ]
        );
        assert!(matches!(
            decode_counts(&[bulk("x"), Value::Nil]),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn session_values_read_with_and_without_their_open_time() {
        let s = parse_session("L4JXGWlG|web|1732616700").unwrap();
        assert_eq!(
            (s.node.unwrap().as_str(), s.device, s.lease_until, s.opened),
            ("L4JXGWlG", DeviceKind::Web, None, Some(1_732_616_700_000))
        );
        let s = parse_session("|mobile|1732617000000|1732616700").unwrap();
        assert_eq!(
            (s.node, s.device, s.lease_until, s.opened),
            (
                None,
                DeviceKind::Mobile,
                Some(1_732_617_000_000),
                Some(1_732_616_700_000)
            )
        );
        // Written before sessions kept their open time.
        let s = parse_session("L4JXGWlG|desktop").unwrap();
        assert_eq!(
            (s.device, s.lease_until, s.opened),
            (DeviceKind::Desktop, None, None)
        );
        let s = parse_session("|web|1732617000000").unwrap();
        assert_eq!((s.lease_until, s.opened), (Some(1_732_617_000_000), None));
        for bad in ["web", "n|web|1|2", "|web|1|2|3", "n|tv|1", "n|web|soon"] {
            assert!(parse_session(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_version_comes_from_the_info_text() {
        let info = bulk("# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n");
        assert_eq!(decode_major_version(&info).unwrap(), Some(7));
        assert_eq!(decode_major_version(&bulk("# Server\r\n")).unwrap(), None);
    }
}
