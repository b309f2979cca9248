//! The seed's own Redis command sequences (SPEC §8 layout, the seed document's
//! `set_online`, `set_offline`, `update_activity`, `get_online_users`), the baseline for P1–P4.
//!
//! Line numbers below are of the seed document, `/work/shared/seed/000_53ec79fdea116f8c.txt`
//! (`seed/000_53ec79fdea116f8c.txt` beside the SPEC).
//!
//! Two ways to send them:
//! - [`Sending::AsTheSeed`]: one command per round trip, as the Python seed awaited each call,
//!   from a pool of [`POOL`] connections working on different users at once.
//! - [`Sending::Pipelined`]: many users' commands per round trip, the cheapest way the
//!   sequence can run at all: the strictest baseline.
//!
//! `PUBLISH`es go to a channel with no subscriber, cheaper than the seed's real broadcast.
//! [`SeedFormat::Python`] writes times as the seed did (`str(time.time())`,
//! `datetime.utcnow().isoformat()`); [`SeedFormat::Millis`] as presenced does.

use futures::{StreamExt, TryStreamExt};
use presence_core::time::format_rfc3339;
use redis::aio::{ConnectionManager, MultiplexedConnection};

/// The seed's TTLs: 5 minutes online, 30 days for last seen.
const ONLINE_TTL_S: i64 = 300;
const LAST_SEEN_TTL_S: i64 = 30 * 86_400;
/// Users per pipeline.
const PIPELINE: usize = 1000;
/// Connections of the seed's pool.
pub(crate) const POOL: usize = 64;

/// One of the seed's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeedOp {
    /// `set_online(user, zone, org)`.
    Online,
    /// `set_offline(user)`.
    Offline,
    /// `update_activity(user)` as the seed's method list describes it (lines 86–89: "updates
    /// last_activity timestamp", "Reverts \"away\" back to \"online\" on activity") with the
    /// online TTL it keeps alive (lines 31–32: "auto-expire if not refreshed"): `HGET status`,
    /// `HSET last_activity`, `EXPIRE 300`.
    Activity,
    /// `update_activity(user)` as the seed's performance table reads (line 409:
    /// "update_activity | O(1) | HSET only"): `HSET last_activity`, nothing else.
    ActivityHsetOnly,
}

/// How the commands travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sending {
    /// One command per round trip from a pool of connections, as the seed ran.
    AsTheSeed,
    /// Many users per pipeline.
    Pipelined,
}

/// How the baseline writes times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeedFormat {
    /// As the Python seed wrote them: `1764268243.1234567`, `2026-11-27T18:30:43.123456`.
    Python,
    /// As presenced writes them: `1764268243.123`, `2026-11-27T18:30:43.123Z`.
    Millis,
}

impl SeedFormat {
    /// `last_activity` (and score) text and `updated_at` text for now.
    fn now(self) -> (String, String) {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ms = since.as_millis() as i64;
        match self {
            // Python's float repr and Rust's `{}` for f64 are both the shortest round-trip form.
            SeedFormat::Python => {
                let iso = format_rfc3339(ms);
                (
                    format!("{}", since.as_secs_f64()),
                    format!("{}.{:06}", &iso[..19], since.subsec_micros()),
                )
            }
            SeedFormat::Millis => (format!("{:.3}", ms as f64 / 1000.0), format_rfc3339(ms)),
        }
    }
}

/// Where a bench user sits: zone and org derived from the id.
pub(crate) fn place(user: u64) -> (u64, u64) {
    (user % 100, user % 10)
}

/// The commands of one operation on one user at its [`place`], in the seed's order.
fn commands(op: SeedOp, u: u64, format: SeedFormat) -> Vec<redis::Cmd> {
    let (z, o) = place(u);
    commands_in(op, u, &z.to_string(), &o.to_string(), format)
}

/// The commands of one operation on one user in zone `z` and org `o`, in the seed's order.
fn commands_in(op: SeedOp, u: u64, z: &str, o: &str, format: SeedFormat) -> Vec<redis::Cmd> {
    let (ts, iso) = format.now();
    let (user, zs, os) = (u.to_string(), z.to_string(), o.to_string());
    let key = format!("presence:{u}");
    let (zone, org) = (format!("online:zone:{z}"), format!("online:org:{o}"));
    let (online_ttl, seen_ttl) = (ONLINE_TTL_S.to_string(), LAST_SEEN_TTL_S.to_string());
    let cmd = |args: &[&str]| {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c
    };
    match op {
        SeedOp::Online => {
            let event = format!(
                r#"{{"type":"presence","user_id":"{u}","status":"online","zone_id":"{z}","org_id":"{o}"}}"#
            );
            vec![
                cmd(&[
                    "HSET",
                    &key,
                    "status",
                    "online",
                    "last_activity",
                    &ts,
                    "zone_id",
                    &zs,
                    "org_id",
                    &os,
                    "updated_at",
                    &iso,
                ]),
                cmd(&["EXPIRE", &key, &online_ttl]),
                cmd(&["ZADD", "online:global", &ts, &user]),
                cmd(&["ZADD", &zone, &ts, &user]),
                cmd(&["ZADD", &org, &ts, &user]),
                cmd(&["PUBLISH", "presence:updates", &event]),
            ]
        }
        SeedOp::Offline => {
            let event = format!(r#"{{"type":"presence","user_id":"{u}","status":"offline"}}"#);
            vec![
                cmd(&["HMGET", &key, "zone_id", "org_id"]),
                cmd(&[
                    "HSET",
                    &key,
                    "status",
                    "offline",
                    "last_seen",
                    &ts,
                    "updated_at",
                    &iso,
                ]),
                cmd(&["EXPIRE", &key, &seen_ttl]),
                cmd(&["ZREM", "online:global", &user]),
                cmd(&["ZREM", &zone, &user]),
                cmd(&["ZREM", &org, &user]),
                cmd(&["PUBLISH", "presence:updates", &event]),
            ]
        }
        // Read the status (to revert away), write last_activity, refresh the TTL. The seed
        // left the sorted-set scores stale.
        SeedOp::Activity => vec![
            cmd(&["HGET", &key, "status"]),
            cmd(&["HSET", &key, "last_activity", &ts]),
            cmd(&["EXPIRE", &key, &online_ttl]),
        ],
        // The performance table's reading: one HSET.
        SeedOp::ActivityHsetOnly => vec![cmd(&["HSET", &key, "last_activity", &ts])],
    }
}

/// Puts `users` online in zone `zone` (org by [`place`]) with the seed's `set_online`,
/// pipelined: the seed's layout for P4's list.
pub(crate) async fn load_zone(
    conn: &ConnectionManager,
    users: &[u64],
    zone: &str,
    format: SeedFormat,
) -> redis::RedisResult<()> {
    for chunk in users.chunks(PIPELINE) {
        let mut p = redis::pipe();
        for &u in chunk {
            let o = place(u).1.to_string();
            for c in commands_in(SeedOp::Online, u, zone, &o, format) {
                p.add_command(c).ignore();
            }
        }
        p.query_async::<()>(&mut conn.clone()).await?;
    }
    Ok(())
}

/// One user of a seed list page: the `HGETALL presence:{u}` fields.
pub(crate) type SeedRecord = std::collections::HashMap<String, String>;

/// The first round trip of a seed list page: `ZREVRANGE online:zone:{zone} 0 limit-1`.
async fn zone_page_ids(
    conn: &mut MultiplexedConnection,
    zone: &str,
    limit: usize,
) -> redis::RedisResult<Vec<String>> {
    redis::cmd("ZREVRANGE")
        .arg(format!("online:zone:{zone}"))
        .arg(0)
        .arg(limit as i64 - 1)
        .query_async(conn)
        .await
}

/// The seed's `get_online_users(zone_id=zone, limit=limit)` (line 411: "ZREVRANGE + M *
/// HGETALL"), sent as the seed ran it: `ZREVRANGE online:zone:{zone} 0 limit-1`, then one
/// `HGETALL` per user, each awaited before the next: `1 + limit` round trips.
pub(crate) async fn get_online_users(
    conn: &mut MultiplexedConnection,
    zone: &str,
    limit: usize,
) -> redis::RedisResult<Vec<SeedRecord>> {
    let users = zone_page_ids(conn, zone, limit).await?;
    let mut page = Vec::with_capacity(users.len());
    for u in users {
        page.push(
            redis::cmd("HGETALL")
                .arg(format!("presence:{u}"))
                .query_async(conn)
                .await?,
        );
    }
    Ok(page)
}

/// The same sequence with every `HGETALL` in one pipeline: two round trips, the cheapest way
/// the seed's layout can produce a page.
pub(crate) async fn get_online_users_pipelined(
    conn: &mut MultiplexedConnection,
    zone: &str,
    limit: usize,
) -> redis::RedisResult<Vec<SeedRecord>> {
    let users = zone_page_ids(conn, zone, limit).await?;
    let mut p = redis::pipe();
    for u in &users {
        p.cmd("HGETALL").arg(format!("presence:{u}"));
    }
    p.query_async(conn).await
}

/// Runs `op` for every user (an activity event per entry for `Activity`).
pub(crate) async fn run(
    conn: &ConnectionManager,
    pool: &[MultiplexedConnection],
    users: &[u64],
    op: SeedOp,
    format: SeedFormat,
    sending: Sending,
) -> redis::RedisResult<()> {
    match sending {
        Sending::Pipelined => {
            for chunk in users.chunks(PIPELINE) {
                let mut p = redis::pipe();
                for &u in chunk {
                    for c in commands(op, u, format) {
                        p.add_command(c).ignore();
                    }
                }
                p.query_async::<()>(&mut conn.clone()).await?;
            }
        }
        Sending::AsTheSeed => {
            // Each connection serves one user's commands at a time, awaiting each reply.
            let per = users.len().div_ceil(pool.len()).max(1);
            futures::stream::iter(users.chunks(per).zip(pool.iter().cloned()))
                .map(|(chunk, mut c)| async move {
                    for &u in chunk {
                        for cmd in commands(op, u, format) {
                            cmd.query_async::<redis::Value>(&mut c).await?;
                        }
                    }
                    redis::RedisResult::Ok(())
                })
                .buffer_unordered(pool.len())
                .try_collect::<Vec<()>>()
                .await?;
        }
    }
    Ok(())
}
