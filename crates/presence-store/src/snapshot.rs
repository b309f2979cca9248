//! The memory store's snapshots: the durable parts (every record, with its last seen, privacy
//! and custom status, and the online history) as one JSON file in the data directory,
//! replaced atomically (written beside it, synced, then renamed over it), so a crash while
//! saving leaves the previous snapshot whole.

use std::io::Write;
use std::path::PathBuf;

use presence_core::{Day, Millis, StoreError, UserId, UserRecord};
use serde::{Deserialize, Serialize};

/// The file's name in the data directory.
const FILE: &str = "presence-memory.json";

/// What a snapshot holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Durable {
    /// When it was taken (ms): users present then are last seen then after a restart.
    pub(crate) saved_at: Millis,
    pub(crate) users: Vec<UserRecord>,
    /// Per user, ms present per UTC day.
    pub(crate) history: Vec<(UserId, Vec<(Day, Millis)>)>,
}

/// The snapshot file of one data directory.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFile {
    path: PathBuf,
}

fn io_error(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

impl SnapshotFile {
    /// The snapshot of `dir`, which is created if missing.
    pub(crate) fn in_dir(dir: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&dir).map_err(|e| io_error("cannot create", &dir, e))?;
        Ok(Self {
            path: dir.join(FILE),
        })
    }

    /// The last snapshot, `None` when there is none yet.
    pub(crate) fn load(&self) -> Result<Option<Durable>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("cannot read", &self.path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", self.path.display())))
    }

    /// Replaces the snapshot with `durable`.
    pub(crate) fn save(&self, durable: &Durable) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            // Only the node's own user may read it: it holds every record, metadata included.
            let mut open = std::fs::OpenOptions::new();
            open.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
            let mut f = std::io::BufWriter::new(open.open(&tmp)?);
            serde_json::to_writer(&mut f, durable)?;
            f.flush()?;
            f.get_ref().sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename itself is durable once the directory is synced.
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| io_error("cannot write", &self.path, e))
    }
}
