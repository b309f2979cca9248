//! What a failed Redis call means to the service (SPEC §10). A store that cannot answer now —
//! connection refused or reset, a timeout, or the server refusing while it loads, is a
//! read-only replica, lost its master, runs a long script, is out of memory, is a cluster in
//! trouble, lost its script cache — is [`StoreError::Unavailable`]: REST answers 503 and the
//! node catches up later. Only data this code cannot read is [`StoreError::Corrupt`]: a reply
//! that does not parse or has the wrong type, a key of the wrong type (`WRONGTYPE`: a foreign
//! writer), or one of our scripts failing at run time on what it found.

use presence_core::StoreError;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// The store error a failed Redis call stands for.
pub(super) fn store_error(e: RedisError) -> StoreError {
    if is_undecodable_data(&e) {
        StoreError::Corrupt(e.to_string())
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

fn is_undecodable_data(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => true,
        ErrorKind::Extension => e.code() == Some("WRONGTYPE"),
        // A Lua run-time error (`ERR user_script:12: attempt to perform arithmetic on a nil
        // value`): one of our scripts met data it cannot read. Errors of the commands a script
        // calls keep their own code (`OOM …`, `READONLY …`) and land elsewhere.
        ErrorKind::Server(ServerErrorKind::ResponseError) => {
            e.detail().is_some_and(|d| d.starts_with("user_script:"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// An error as the server sends it (`-CODE detail`), through redis-rs's own parser.
    fn server(reply: &str) -> RedisError {
        redis::parse_redis_value(format!("-{reply}\r\n").as_bytes())
            .expect("an error reply parses")
            .extract_error()
            .expect_err("an error reply is an error")
    }

    fn io(kind: io::ErrorKind) -> RedisError {
        io::Error::from(kind).into()
    }

    fn is_unavailable(e: RedisError) -> bool {
        matches!(store_error(e), StoreError::Unavailable(_))
    }

    fn is_corrupt(e: RedisError) -> bool {
        matches!(store_error(e), StoreError::Corrupt(_))
    }

    #[test]
    fn a_store_that_cannot_answer_now_is_unavailable() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::TimedOut,
            io::ErrorKind::NotFound, // a unix socket that is not there (yet)
        ] {
            assert!(is_unavailable(io(kind)), "{kind:?}");
        }
        for reply in [
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "READONLY You can't write against a read only replica. script: 88c9, on @user_script:1.",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "OOM command not allowed when used memory > 'maxmemory'. script: 88c9, on @user_script:1.",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "NOSCRIPT No matching script. Please use EVAL.",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
            "NOREPLICAS Not enough good replicas to write.",
            "NOAUTH Authentication required.",
            "ERR max number of clients reached",
        ] {
            assert!(is_unavailable(server(reply)), "{reply}");
        }
        let timeout: RedisError = (ErrorKind::Io, "request timed out").into();
        assert!(is_unavailable(timeout));
    }

    #[test]
    fn only_data_we_cannot_read_is_corrupt() {
        for reply in [
            "WRONGTYPE Operation against a key holding the wrong kind of value script: 2e9d, on @user_script:1.",
            "ERR user_script:1: attempt to perform arithmetic on a nil value script: e8f6, on @user_script:1.",
        ] {
            assert!(is_corrupt(server(reply)), "{reply}");
        }
        let unparsable = redis::parse_redis_value(b"?what\r\n").expect_err("not RESP");
        assert_eq!(unparsable.kind(), ErrorKind::Parse);
        assert!(is_corrupt(unparsable));
        let wrong_type: RedisError = (
            ErrorKind::UnexpectedReturnType,
            "response was of incompatible type",
        )
            .into();
        assert!(is_corrupt(wrong_type));
    }
}
