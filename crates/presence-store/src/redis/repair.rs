//! The Redis store's repair ([`presence_core::repair`]): every index rebuilt from the records,
//! in bounded script calls, each re-checking what it fixes at that moment (`lua/repair_*.lua`),
//! so it is safe while nodes run. Nothing here reads a record in one round trip and writes
//! in another: Rust only carries cursors and the names a step found.
//!
//! A whole pass ([`RepairMode::slice`] `None`) goes, in order:
//!
//! 1. over the records (`SCAN presence:*`, [`presence_core::repair::REPAIR_BATCH`] keys a
//!    call): orphan sessions ended, missing index entries added, wrong scores set
//!    (`repair_records.lua`);
//! 2. over every member of every index set (`ZSCAN`, as many a call): members no record
//!    implies removed (`repair_members.lua`);
//! 3. over every scope (its set, or its field of `away_count`): the away count compared with
//!    the away users the records walk found there; one that differs is recounted in one
//!    atomic call (`repair_away.lua`), O(members of the scope);
//! 4. over every node (in `nodes`, with a list or an info key, or named by a record): its list
//!    completed from the records that name it (`repair_node.lua`, O(list) per 1,000 users);
//!    unless its list length and session count agree with the records, its duplicates and
//!    count are fixed in one atomic call, O(list) (`repair_node_count.lua`); a node that is not
//!    in `nodes` has its keys removed.
//!
//! A slice of the periodic pass does one bounded step of each, from positions kept in the
//! hash `repair:pos` (so every node carries on where the last slice stopped), and checks a
//! scope's away count or a node's list and count only when the set or list holds at most
//! [`PERIODIC_WHOLE_FACTOR`] × the slice: a bigger one costs more Redis time at once than a
//! background pass may take, and is left to the explicit repair (the sweep keeps clamping
//! away counts to their set's size meanwhile).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use presence_core::repair::fixed;
use presence_core::{RepairMode, RepairReport, StoreError};
use redis::{Script, Value};

use super::RedisStore;
use super::codec::{RepairReply, decode_repair_reply};
use super::failure::store_error;

/// In the periodic pass, a scope set or node list is checked whole (one atomic call) only
/// when it holds at most this many times the slice's entries.
pub(crate) const PERIODIC_WHOLE_FACTOR: usize = 10;

/// How long the recount of a whole scope may take before the repair gives up waiting.
const WHOLE_SCOPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Users named in one `repair_node.lua` call.
const NODE_CHUNK: usize = 1000;

/// The repair's scripts. Not loaded at connect: the first call of each loads it (EVALSHA
/// falls back to loading on NOSCRIPT), so a node that never repairs pays nothing.
struct RepairScripts {
    records: Script,
    members: Script,
    keys: Script,
    away: Script,
    node: Script,
    node_count: Script,
}

fn scripts() -> &'static RepairScripts {
    static S: OnceLock<RepairScripts> = OnceLock::new();
    S.get_or_init(|| RepairScripts {
        records: script!("repair_records.lua"),
        members: script!("repair_members.lua"),
        keys: script!("repair_keys.lua"),
        away: script!("repair_away.lua"),
        node: script!("repair_node.lua"),
        node_count: script!("repair_node_count.lua"),
    })
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "" }
}

fn count(ints: &[i64], i: usize) -> u64 {
    ints.get(i).copied().unwrap_or(0).max(0) as u64
}

/// What the walk over the records found besides its fixes.
#[derive(Debug, Default)]
struct Found {
    /// Node → users whose records say the node's list holds them.
    nodes: BTreeMap<String, BTreeSet<String>>,
    /// Scope → away users in it.
    away: BTreeMap<String, u64>,
    /// Node → sessions on it.
    sessions: BTreeMap<String, u64>,
}

/// Where the periodic pass stands (fields of the hash `repair:pos`).
#[derive(Debug, Default)]
struct Position {
    /// SCAN cursor over the records.
    records: String,
    /// Which of the named index sets (no pattern) is being walked, and its ZSCAN cursor.
    set: usize,
    member: String,
    /// SCAN cursor over the scope sets, for their away counts.
    scope: String,
    /// Which node (by rank in `nodes`) is next.
    node: usize,
}

impl RedisStore {
    /// See [`presence_core::Store::repair`] and the module documentation.
    pub(crate) async fn repair(&self, mode: RepairMode) -> Result<RepairReport, StoreError> {
        match mode.slice {
            None => self.repair_whole(mode.check_only).await,
            Some(n) => self.repair_slice(mode.check_only, n.max(1)).await,
        }
    }

    async fn repair_call(
        &self,
        script: &Script,
        cursor: bool,
        args: &[&str],
    ) -> Result<RepairReply, StoreError> {
        let mut inv = self.invocation(script, self.now());
        for a in args {
            inv.arg(*a);
        }
        decode_repair_reply(&self.invoke(&inv).await?, cursor)
    }

    /// One step over the records; adds the nodes each record names to `nodes`.
    async fn repair_records_step(
        &self,
        cursor: &str,
        batch: usize,
        check: bool,
        own_sets: bool,
        report: &mut RepairReport,
        found: &mut Found,
    ) -> Result<String, StoreError> {
        let batch = batch.to_string();
        let reply = self
            .repair_call(
                &scripts().records,
                true,
                &[cursor, &batch, flag(check), flag(own_sets)],
            )
            .await?;
        let n = reply.ints;
        report.checked += count(&n, 0);
        report.add(fixed::ONLINE_MEMBERS_MISSING, count(&n, 1));
        report.add(fixed::INDEX_MEMBERS_MISSING, count(&n, 2));
        report.add(fixed::WRONG_SCORES, count(&n, 3));
        report.add(fixed::STALE_MEMBERS, count(&n, 4));
        report.add(fixed::ORPHAN_SESSIONS, count(&n, 5));
        let mut lists = reply.lists.into_iter();
        for p in lists.next().unwrap_or_default().chunks_exact(2) {
            found
                .nodes
                .entry(p[0].clone())
                .or_default()
                .insert(p[1].clone());
        }
        for scope in lists.next().unwrap_or_default() {
            *found.away.entry(scope).or_default() += 1;
        }
        for p in lists.next().unwrap_or_default().chunks_exact(2) {
            *found.sessions.entry(p[0].clone()).or_default() += p[1].parse::<u64>().unwrap_or(0);
        }
        Ok(reply.cursor)
    }

    /// One ZSCAN step over an index set, removing stale members.
    async fn repair_members_step(
        &self,
        set: &str,
        cursor: &str,
        batch: usize,
        check: bool,
        report: &mut RepairReport,
    ) -> Result<String, StoreError> {
        let batch = batch.to_string();
        let reply = self
            .repair_call(
                &scripts().members,
                true,
                &[set, cursor, &batch, flag(check)],
            )
            .await?;
        report.checked += count(&reply.ints, 0);
        report.add(fixed::STALE_MEMBERS, count(&reply.ints, 1));
        Ok(reply.cursor)
    }

    /// The index sets' patterns, as common.lua's INDEX_SETS has them.
    async fn index_sets(&self) -> Result<Vec<String>, StoreError> {
        let reply = self.repair_call(&scripts().keys, false, &[""]).await?;
        Ok(reply.lists.into_iter().next().unwrap_or_default())
    }

    /// One SCAN step: keys of `kind` matching `pattern` (after the prefix).
    async fn keys_step(
        &self,
        pattern: &str,
        cursor: &str,
        batch: usize,
        kind: &str,
    ) -> Result<(String, Vec<String>), StoreError> {
        let batch = batch.to_string();
        let reply = self
            .repair_call(&scripts().keys, true, &[pattern, cursor, &batch, kind])
            .await?;
        Ok((
            reply.cursor,
            reply.lists.into_iter().next().unwrap_or_default(),
        ))
    }

    /// Every key of `kind` matching `pattern` (after the prefix).
    async fn all_keys(
        &self,
        pattern: &str,
        batch: usize,
        kind: &str,
    ) -> Result<BTreeSet<String>, StoreError> {
        let mut out = BTreeSet::new();
        let mut cursor = "0".to_string();
        loop {
            let (next, keys) = self.keys_step(pattern, &cursor, batch, kind).await?;
            out.extend(keys);
            if next == "0" {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Recounts one scope's away count (`most` 0: whatever its size).
    async fn repair_away_scope(
        &self,
        scope: &str,
        most: usize,
        check: bool,
        report: &mut RepairReport,
    ) -> Result<(), StoreError> {
        // A whole scope is one call that may outlast the command timeout (about 3 s at a
        // million members): it gets a connection of its own that waits for it, so the repair
        // does not report as failed a recount Redis carries out anyway.
        let mut inv = self.invocation(&scripts().away, self.now());
        inv.arg(scope).arg(most).arg(flag(check));
        let mut conn = if most == 0 {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.config.command_timeout))
                .set_response_timeout(Some(WHOLE_SCOPE_TIMEOUT));
            self.client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(store_error)?
        } else {
            return self.repair_away_bounded(scope, most, check, report).await;
        };
        let reply = inv.invoke_async(&mut conn).await.map_err(store_error)?;
        let n = decode_repair_reply(&reply, false)?.ints;
        report.add(fixed::AWAY_COUNT, count(&n, 1));
        Ok(())
    }

    /// Recounts one scope's away count if its set holds at most `most` members.
    async fn repair_away_bounded(
        &self,
        scope: &str,
        most: usize,
        check: bool,
        report: &mut RepairReport,
    ) -> Result<(), StoreError> {
        let most = most.to_string();
        let n = self
            .repair_call(&scripts().away, false, &[scope, &most, flag(check)])
            .await?
            .ints;
        report.add(fixed::AWAY_COUNT, count(&n, 1));
        Ok(())
    }

    /// Completes a node's list from the users whose records name it, then fixes its
    /// duplicates and session count (`most` 0: whatever the list's length), or removes the
    /// keys of a node that is not in `nodes`.
    /// `agreed`: the sessions the records walk found on the node, to skip the recount when
    /// the node's list and count already agree with the records.
    #[allow(clippy::too_many_arguments)]
    async fn repair_node(
        &self,
        node: &str,
        users: &[&str],
        agreed: Option<u64>,
        most: usize,
        check: bool,
        report: &mut RepairReport,
    ) -> Result<(), StoreError> {
        for chunk in users.chunks(NODE_CHUNK) {
            let mut args = vec![node, flag(check)];
            args.extend_from_slice(chunk);
            let n = self.repair_call(&scripts().node, false, &args).await?.ints;
            report.add(fixed::NODE_LISTS, count(&n, 1));
        }
        if let Some(sessions) = agreed {
            // The list holds exactly the users named (each was found in it above, and it has
            // no more entries) and the count is what their records hold: nothing to recount.
            let (len, sc) = self.node_list_and_count(node).await?;
            if len == users.len() as u64 && sc == sessions {
                return Ok(());
            }
        }
        // The users named count too: a check, which added none to the list, counts what a fix
        // would have added (and a fix has added them: they count once).
        let most = most.to_string();
        let mut args = vec![node, &most, flag(check)];
        args.extend_from_slice(users);
        let n = self
            .repair_call(&scripts().node_count, false, &args)
            .await?
            .ints;
        report.checked += count(&n, 0);
        report.add(fixed::NODE_LISTS, count(&n, 1));
        report.add(fixed::NODE_SESSION_COUNTS, count(&n, 2));
        report.add(fixed::DEAD_NODE_KEYS, count(&n, 3));
        Ok(())
    }

    /// A node's list length and stored session count.
    async fn node_list_and_count(&self, node: &str) -> Result<(u64, u64), StoreError> {
        let v: Value = redis::pipe()
            .cmd("LLEN")
            .arg(self.key(&format!("node:{node}:users")))
            .cmd("HGET")
            .arg(self.key(&format!("node:{node}:info")))
            .arg("sc")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let r = decode_repair_reply(&v, false)?;
        let sc = r.strings.first().and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((count(&r.ints, 0), sc))
    }

    async fn live_nodes(&self) -> Result<Vec<String>, StoreError> {
        let v: Value = redis::cmd("ZRANGE")
            .arg(self.key("nodes"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(decode_repair_reply(&v, false)?.strings)
    }

    /// The fields of `away_count`: scope → away users (HSCAN, so a big hash never blocks).
    async fn away_counts(&self, batch: usize) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut out = BTreeMap::new();
        let mut cursor = "0".to_string();
        loop {
            let v: Value = redis::cmd("HSCAN")
                .arg(self.key("away_count"))
                .arg(&cursor)
                .arg("COUNT")
                .arg(batch)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(store_error)?;
            let reply = decode_repair_reply(&v, true)?;
            let flat = reply.lists.into_iter().next().unwrap_or_default();
            for p in flat.chunks_exact(2) {
                out.insert(p[0].clone(), p[1].parse().unwrap_or(i64::MIN));
            }
            if reply.cursor == "0" {
                return Ok(out);
            }
            cursor = reply.cursor;
        }
    }

    async fn repair_whole(&self, check: bool) -> Result<RepairReport, StoreError> {
        let batch = presence_core::repair::REPAIR_BATCH;
        let mut report = RepairReport::default();
        // 1. The records.
        let mut found = Found::default();
        let mut cursor = "0".to_string();
        loop {
            cursor = self
                .repair_records_step(&cursor, batch, check, false, &mut report, &mut found)
                .await?;
            if cursor == "0" {
                break;
            }
        }
        // 2. Every member of every index set.
        let mut scopes = BTreeSet::new();
        for pattern in self.index_sets().await? {
            let sets = if pattern.contains('*') {
                self.all_keys(&pattern, batch, "zset").await?
            } else {
                BTreeSet::from([pattern])
            };
            for set in sets {
                if let Some(scope) = set.strip_prefix("online:") {
                    scopes.insert(scope.to_string());
                }
                let mut cursor = "0".to_string();
                loop {
                    cursor = self
                        .repair_members_step(&set, &cursor, batch, check, &mut report)
                        .await?;
                    if cursor == "0" {
                        break;
                    }
                }
            }
        }
        // 3. Every scope's away count: compared with the away users the records walk found in
        // the scope (exact while nothing changes meanwhile). A check reports the difference; a
        // fix recounts a scope that differs in one atomic call, whatever its size (about 3 s
        // of Redis at a million members, README "Repair"), and leaves alone one that agrees,
        // so a healthy store never pays that.
        let stored = self.away_counts(batch).await?;
        scopes.extend(stored.keys().cloned());
        for scope in &scopes {
            let want = found.away.get(scope).copied().unwrap_or(0) as i64;
            let have = stored.get(scope).copied().unwrap_or(0);
            if want == have {
                continue;
            }
            if check {
                report.add(fixed::AWAY_COUNT, 1);
            } else {
                self.repair_away_scope(scope, 0, check, &mut report).await?;
            }
        }
        // 4. Every node.
        let live: BTreeSet<String> = self.live_nodes().await?.into_iter().collect();
        let mut nodes = live.clone();
        for (pattern, kind) in [("node:*:users", "list"), ("node:*:info", "hash")] {
            for k in self.all_keys(pattern, batch, kind).await? {
                let id = k.strip_prefix("node:").and_then(|k| k.rsplit_once(':'));
                if let Some((id, _)) = id {
                    nodes.insert(id.to_string());
                }
            }
        }
        nodes.extend(found.nodes.keys().cloned());
        for node in &nodes {
            let users: Vec<&str> = found
                .nodes
                .get(node)
                .map(|u| u.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let agreed = live
                .contains(node)
                .then(|| found.sessions.get(node).copied().unwrap_or(0));
            self.repair_node(node, &users, agreed, 0, check, &mut report)
                .await?;
        }
        Ok(report)
    }

    async fn position(&self) -> Result<Position, StoreError> {
        let v: Value = redis::cmd("HMGET")
            .arg(self.key("repair:pos"))
            .arg(&["records", "set", "member", "scope", "node"][..])
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        let f = match v {
            Value::Array(a) => a,
            other => return Err(StoreError::Corrupt(format!("repair:pos: {other:?}"))),
        };
        let text = |i: usize| match f.get(i) {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => "0".to_string(),
        };
        Ok(Position {
            records: text(0),
            set: text(1).parse().unwrap_or(0),
            member: text(2),
            scope: text(3),
            node: text(4).parse().unwrap_or(0),
        })
    }

    async fn save_position(&self, p: &Position) -> Result<(), StoreError> {
        redis::cmd("HSET")
            .arg(self.key("repair:pos"))
            .arg("records")
            .arg(&p.records)
            .arg("set")
            .arg(p.set)
            .arg("member")
            .arg(&p.member)
            .arg("scope")
            .arg(&p.scope)
            .arg("node")
            .arg(p.node)
            .query_async::<Value>(&mut self.conn.clone())
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    /// One slice of the periodic pass: one bounded step of each part, from `repair:pos`.
    /// Two nodes reading the position at once repeat a slice, which is harmless: every
    /// step re-checks and is idempotent.
    async fn repair_slice(&self, check: bool, n: usize) -> Result<RepairReport, StoreError> {
        let whole = n.saturating_mul(PERIODIC_WHOLE_FACTOR);
        let mut report = RepairReport::default();
        let mut pos = self.position().await?;
        // Records, with the stale members of each user's own sets (the slice does not walk
        // every scope set), and the lists of the nodes they name.
        let mut found = Found::default();
        pos.records = self
            .repair_records_step(&pos.records, n, check, true, &mut report, &mut found)
            .await?;
        for (node, users) in &found.nodes {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            self.repair_node(node, &users, None, whole, check, &mut report)
                .await?;
        }
        // One step over one of the named index sets (patterns are for the whole pass).
        let sets: Vec<String> = self
            .index_sets()
            .await?
            .into_iter()
            .filter(|s| !s.contains('*'))
            .chain(["online:global".to_string()])
            .collect();
        let set = &sets[pos.set % sets.len()];
        pos.member = self
            .repair_members_step(set, &pos.member, n, check, &mut report)
            .await?;
        if pos.member == "0" {
            pos.set = (pos.set + 1) % sets.len();
        }
        // One SCAN step over the scope sets, recounting the small ones.
        let (next, keys) = self.keys_step("online:*", &pos.scope, n, "zset").await?;
        pos.scope = next;
        for k in keys {
            if let Some(scope) = k.strip_prefix("online:") {
                self.repair_away_scope(scope, whole, check, &mut report)
                    .await?;
            }
        }
        // One node's duplicates and count, if its list is small enough.
        let live = self.live_nodes().await?;
        if !live.is_empty() {
            let node = &live[pos.node % live.len()];
            self.repair_node(node, &[], None, whole, check, &mut report)
                .await?;
            pos.node = (pos.node + 1) % live.len();
        }
        self.save_position(&pos).await?;
        Ok(report)
    }
}
