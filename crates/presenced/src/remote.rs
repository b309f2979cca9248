//! The command line's client commands: `status`, `online`, `count` and `watch`, over a node's
//! REST API with `presence-client`. Human tables by default, `--json` for machines.
//!
//! Exit codes: 0 done; 1 the node refused the call or could not be reached (the message says
//! which and what to do); 2 bad usage (clap's); 3 `status` of a user without presence.

use std::io::Write;

use clap::Args;
use futures::{StreamExt, TryStreamExt};
use presence_client::{Client, Error, OnlineQuery, PresenceView, Status, StreamItem};
use presence_core::FeedId;
use presence_core::time::format_rfc3339;

/// Exit code of `status` for a user without presence.
pub(crate) const NOT_FOUND: u8 = 3;

/// Where the node is and who asks.
#[derive(Args, Debug)]
pub(crate) struct Remote {
    /// The node's address.
    #[arg(long, env = "PRESENCE_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// A token (JWT); `presenced token --sub you` makes one, and a node started without
    /// configuration prints an admin token.
    #[arg(long, env = "PRESENCE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Remote {
    fn client(&self) -> anyhow::Result<Client> {
        let token = self.token.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| {
            anyhow::anyhow!(
                "no token: pass --token or set PRESENCE_TOKEN; `presenced token --sub you` makes one (a node started without configuration prints one)"
            )
        })?;
        Ok(Client::new(&self.url, token))
    }
}

/// The user to show.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// The user id.
    user: String,
    #[command(flatten)]
    remote: Remote,
}

/// Which users to list.
#[derive(Args, Debug)]
pub(crate) struct OnlineArgs {
    /// Only this zone.
    #[arg(long, conflicts_with = "org")]
    zone: Option<String>,
    /// Only this org.
    #[arg(long)]
    org: Option<String>,
    /// At most this many users (pages are fetched as needed).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Only online, or only away, users.
    #[arg(long, value_parser = ["online", "away"])]
    status: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

/// Which counts to show.
#[derive(Args, Debug)]
pub(crate) struct CountArgs {
    /// Also this zone's count.
    #[arg(long)]
    zone: Option<String>,
    /// Also this org's count.
    #[arg(long)]
    org: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

/// What to follow.
#[derive(Args, Debug)]
pub(crate) struct WatchArgs {
    /// A scope to follow (`global`, `zone:10`, `org:100`, `user:123`); repeatable. None: every
    /// event the token may see.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Resume after this feed id (from an earlier `--json` line) instead of starting now.
    #[arg(long)]
    after: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

/// What an API error means for the person at the terminal.
fn explain(e: Error, url: &str) -> anyhow::Error {
    match &e {
        Error::Unreachable(_) => anyhow::anyhow!(
            "{e}\n  is a node running at {url}? (`presenced serve`, or pass --url / set PRESENCE_URL)"
        ),
        Error::Api { code, .. } if code == "unauthenticated" => anyhow::anyhow!(
            "{e}\n  the token was refused: make one with `presenced token --sub you` using the node's secret"
        ),
        _ => anyhow::anyhow!("{e}"),
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

fn time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), format_rfc3339)
}

/// One line of a user's presence for people.
fn line(v: &PresenceView) -> Vec<String> {
    let status = match (v.status, v.away_reason) {
        (Status::Away, Some(r)) => format!("away ({})", r.as_str()),
        (s, _) => s.as_str().to_string(),
    };
    let devices: Vec<&str> = v.devices.iter().map(|d| d.as_str()).collect();
    let custom = v.custom_status.as_ref().map_or_else(
        || "-".into(),
        |c| {
            let text = c.text.as_deref().unwrap_or("");
            format!("{} {text}", c.kind.as_str()).trim().to_string()
        },
    );
    let seen = match &v.last_seen {
        Some(s) => serde_json::to_value(s)
            .ok()
            .and_then(|j| j.as_str().map(str::to_string))
            .unwrap_or_default(),
        None => time(v.last_activity),
    };
    vec![
        v.user_id.to_string(),
        status,
        if devices.is_empty() {
            "-".into()
        } else {
            devices.join(",")
        },
        v.zone_id.as_ref().map_or("-".into(), ToString::to_string),
        v.org_id.as_ref().map_or("-".into(), ToString::to_string),
        seen,
        custom,
    ]
}

/// Rows under a header, columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = fmt(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&fmt(r.clone()));
    }
    out
}

const HEADER: [&str; 7] = [
    "USER",
    "STATUS",
    "DEVICES",
    "ZONE",
    "ORG",
    "LAST SEEN / ACTIVE",
    "CUSTOM",
];

/// `presenced status USER`: exit 3 when the user has no presence.
pub(crate) async fn status(a: StatusArgs) -> anyhow::Result<u8> {
    let client = a.remote.client()?;
    let Some(view) = client
        .status(&a.user)
        .await
        .map_err(|e| explain(e, &a.remote.url))?
    else {
        eprintln!("no presence for user {}", a.user);
        return Ok(NOT_FOUND);
    };
    if a.remote.json {
        print_json(&view)?;
    } else {
        println!("{}", table(&HEADER, &[line(&view)]));
    }
    Ok(0)
}

/// `presenced online`.
pub(crate) async fn online(a: OnlineArgs) -> anyhow::Result<u8> {
    if a.limit == 0 {
        anyhow::bail!("--limit must be at least 1");
    }
    let client = a.remote.client()?;
    let query = OnlineQuery {
        zone: a.zone,
        org: a.org,
        status: match a.status.as_deref() {
            Some("online") => Some(Status::Online),
            Some("away") => Some(Status::Away),
            _ => None,
        },
        limit: Some(a.limit.min(1000)),
    };
    let total = client
        .online_page(
            &OnlineQuery {
                limit: Some(1),
                ..query.clone()
            },
            None,
        )
        .await
        .map_err(|e| explain(e, &a.remote.url))?
        .count;
    let users: Vec<PresenceView> = client
        .online(query)
        .take(a.limit)
        .try_collect()
        .await
        .map_err(|e| explain(e, &a.remote.url))?;
    if a.remote.json {
        print_json(&serde_json::json!({"online_users": users, "count": total}))?;
    } else {
        let rows: Vec<Vec<String>> = users.iter().map(line).collect();
        println!("{}", table(&HEADER, &rows));
        println!("{} shown of {total}", users.len());
    }
    Ok(0)
}

/// `presenced count`.
pub(crate) async fn count(a: CountArgs) -> anyhow::Result<u8> {
    let client = a.remote.client()?;
    let c = client
        .count(a.zone.as_deref(), a.org.as_deref())
        .await
        .map_err(|e| explain(e, &a.remote.url))?;
    if a.remote.json {
        print_json(&serde_json::json!({"global": c.global, "zone": c.zone, "org": c.org}))?;
    } else {
        let mut rows = vec![vec!["global".to_string(), c.global.to_string()]];
        if let (Some(z), Some(n)) = (&a.zone, c.zone) {
            rows.push(vec![format!("zone:{z}"), n.to_string()]);
        }
        if let (Some(o), Some(n)) = (&a.org, c.org) {
            rows.push(vec![format!("org:{o}"), n.to_string()]);
        }
        println!("{}", table(&["SCOPE", "ONLINE"], &rows));
    }
    Ok(0)
}

/// `presenced watch`: one line per event until interrupted. A dropped stream is resumed from
/// the last event's feed id (the node replays what was missed while its feed holds it).
pub(crate) async fn watch(a: WatchArgs) -> anyhow::Result<u8> {
    let client = a.remote.client()?;
    let mut after: Option<FeedId> = a
        .after
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--after: {e}"))?;
    let scopes: Vec<&str> = a.scopes.iter().map(String::as_str).collect();
    let mut stdout = std::io::stdout();
    let mut failures = 0u32;
    loop {
        let mut events = match client.events(&scopes, after).await {
            Ok(s) => s,
            // The node refused: retrying will not help.
            Err(e @ Error::Api { .. }) => return Err(explain(e, &a.remote.url)),
            Err(e) if failures >= 5 => return Err(explain(e, &a.remote.url)),
            Err(e) => {
                eprintln!("watch: {e}; retrying");
                failures += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(item) = events.next().await {
            failures = 0;
            let text = match item {
                Ok(StreamItem::Event(e)) => {
                    after = Some(e.feed_id);
                    if a.remote.json {
                        serde_json::to_string(&e)?
                    } else {
                        let v = &e.user;
                        format!(
                            "{}  {:<12} {} -> {}{}",
                            format_rfc3339(e.ts),
                            v.user_id,
                            e.prev_status.as_str(),
                            line(v)[1],
                            v.zone_id
                                .as_ref()
                                .map(|z| format!("  zone {z}"))
                                .unwrap_or_default()
                        )
                    }
                }
                Ok(StreamItem::Reset { feed_id, snapshot }) => {
                    after = Some(feed_id);
                    if a.remote.json {
                        serde_json::to_string(&serde_json::json!({
                            "type": "reset", "feed_id": feed_id, "snapshot": snapshot,
                        }))?
                    } else {
                        format!(
                            "-- the events after the id asked have aged out: starting again from {feed_id}"
                        )
                    }
                }
                Err(e) => {
                    eprintln!("watch: {e}; resuming");
                    break;
                }
            };
            // A closed pipe (`| head`) ends the watch quietly.
            if writeln!(stdout, "{text}")
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return Ok(0);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_the_widest_cell() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long".into(), "x".into()],
                vec!["s".into(), "yy".into()],
            ],
        );
        assert_eq!(t, "A     BB\nlong  x\ns     yy");
    }
}
