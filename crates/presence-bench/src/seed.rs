//! The seed's own Redis command sequences (SPEC §8 layout, the seed document's
//! `set_online`, `set_offline`, `update_activity`), the baseline for P1–P3.
//!
//! They run as pipelines of plain commands, many users per round trip: the cheapest way the
//! seed's sequence can run, so the baseline is as strong as it can be. Pub/Sub `PUBLISH`es
//! go to a channel with no subscriber, which is cheaper than the seed's real broadcast.

use presence_core::time::format_rfc3339;
use redis::aio::ConnectionManager;

/// The seed's TTLs: 5 minutes online, 30 days for last seen.
const ONLINE_TTL_S: i64 = 300;
const LAST_SEEN_TTL_S: i64 = 30 * 86_400;

/// Where a bench user sits: zone and org derived from the id.
pub(crate) fn place(user: u64) -> (u64, u64) {
    (user % 100, user % 10)
}

fn secs(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// `set_online` for many users, one pipeline.
pub(crate) async fn set_online(
    conn: &mut ConnectionManager,
    users: &[u64],
    now: i64,
) -> redis::RedisResult<()> {
    let mut p = redis::pipe();
    let (ts, iso) = (secs(now), format_rfc3339(now));
    for &u in users {
        let (z, o) = place(u);
        let key = format!("presence:{u}");
        p.cmd("HSET")
            .arg(&key)
            .arg(&[
                ("status", "online"),
                ("last_activity", &ts),
                ("zone_id", &z.to_string()),
                ("org_id", &o.to_string()),
                ("updated_at", &iso),
            ])
            .ignore();
        p.cmd("EXPIRE").arg(&key).arg(ONLINE_TTL_S).ignore();
        p.cmd("ZADD").arg("online:global").arg(&ts).arg(u).ignore();
        p.cmd("ZADD")
            .arg(format!("online:zone:{z}"))
            .arg(&ts)
            .arg(u)
            .ignore();
        p.cmd("ZADD")
            .arg(format!("online:org:{o}"))
            .arg(&ts)
            .arg(u)
            .ignore();
        let msg = format!(
            r#"{{"type":"presence","user_id":"{u}","status":"online","zone_id":"{z}","org_id":"{o}"}}"#
        );
        p.cmd("PUBLISH").arg("presence:updates").arg(msg).ignore();
    }
    p.query_async(conn).await
}

/// `set_offline` for many users, one pipeline (the seed reads zone and org first).
pub(crate) async fn set_offline(
    conn: &mut ConnectionManager,
    users: &[u64],
    now: i64,
) -> redis::RedisResult<()> {
    let mut p = redis::pipe();
    let (ts, iso) = (secs(now), format_rfc3339(now));
    for &u in users {
        let (z, o) = place(u);
        let key = format!("presence:{u}");
        p.cmd("HMGET")
            .arg(&key)
            .arg("zone_id")
            .arg("org_id")
            .ignore();
        p.cmd("HSET")
            .arg(&key)
            .arg(&[
                ("status", "offline"),
                ("last_seen", &ts),
                ("updated_at", &iso),
            ])
            .ignore();
        p.cmd("EXPIRE").arg(&key).arg(LAST_SEEN_TTL_S).ignore();
        p.cmd("ZREM").arg("online:global").arg(u).ignore();
        p.cmd("ZREM")
            .arg(format!("online:zone:{z}"))
            .arg(u)
            .ignore();
        p.cmd("ZREM").arg(format!("online:org:{o}")).arg(u).ignore();
        let msg = format!(r#"{{"type":"presence","user_id":"{u}","status":"offline"}}"#);
        p.cmd("PUBLISH").arg("presence:updates").arg(msg).ignore();
    }
    p.query_async(conn).await
}

/// `update_activity` for many activity events, one pipeline: read the status (to revert
/// away), write last_activity, refresh the TTL. The seed left the sorted-set scores stale.
pub(crate) async fn update_activity(
    conn: &mut ConnectionManager,
    users: &[u64],
    now: i64,
) -> redis::RedisResult<()> {
    let mut p = redis::pipe();
    let ts = secs(now);
    for &u in users {
        let key = format!("presence:{u}");
        p.cmd("HGET").arg(&key).arg("status").ignore();
        p.cmd("HSET")
            .arg(&key)
            .arg("last_activity")
            .arg(&ts)
            .ignore();
        p.cmd("EXPIRE").arg(&key).arg(ONLINE_TTL_S).ignore();
    }
    p.query_async(conn).await
}
