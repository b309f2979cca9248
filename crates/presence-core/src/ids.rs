//! Validated identifiers (SPEC §2).
//!
//! Every id is an opaque string of 1–64 bytes from `[A-Za-z0-9_.:@-]`. The charset matters
//! beyond hygiene: the Redis store joins ids with `|` inside hash fields and sorted-set
//! members, which is only safe because `|` can never appear in an id.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which id (`user_id`, `zone_id`, …).
        kind: &'static str,
    },
    /// The id was longer than [`MAX_ID_BYTES`].
    #[error("{kind} must be at most {MAX_ID_BYTES} bytes")]
    TooLong {
        /// Which id.
        kind: &'static str,
    },
    /// The id held a byte outside `[A-Za-z0-9_.:@-]`.
    #[error("{kind} may only contain A-Z a-z 0-9 _ . : @ -")]
    BadCharacter {
        /// Which id.
        kind: &'static str,
    },
}

/// Checks `s` against the id rules of SPEC §2.
pub fn validate_id(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong { kind });
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdError::BadCharacter { kind })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, example = "123"))]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate_id($kind, &s)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        /// JSON input accepts a string or a non-negative integer (SPEC §2).
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    Str(String),
                    Int(u64),
                }
                let s = match Raw::deserialize(d).map_err(|_| {
                    serde::de::Error::custom(concat!($kind, " must be a string or an integer"))
                })? {
                    Raw::Str(s) => s,
                    Raw::Int(n) => n.to_string(),
                };
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Length of generated session and node ids: 8 base62 characters, about 47 bits. Session ids
/// need only be unique among one user's sessions and node ids among live nodes; every online
/// user's Redis hash holds one of each, so they are kept short.
pub const GENERATED_ID_LEN: usize = 8;

fn random_base62(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl SessionId {
    /// A new random session id.
    pub fn random() -> Self {
        Self(random_base62(GENERATED_ID_LEN))
    }
}

impl NodeId {
    /// A new random node id, made once per process start.
    pub fn random() -> Self {
        Self(random_base62(GENERATED_ID_LEN))
    }
}

id_type!(
    /// A user, as the product identifies them.
    UserId,
    "user_id"
);
id_type!(
    /// A zone (a room, a space, a map area: whatever the product calls it).
    ZoneId,
    "zone_id"
);
id_type!(
    /// An organisation.
    OrgId,
    "org_id"
);
id_type!(
    /// One live connection of a user: a WebSocket or a REST heartbeat lease.
    SessionId,
    "session_id"
);
id_type!(
    /// One running presenced process; random per start.
    NodeId,
    "node_id"
);
id_type!(
    /// A conversation (a chat, a channel, a thread: the product's own id), for typing
    /// indicators. presenced keeps no conversations and knows no members.
    ConversationId,
    "conversation_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_spec_charset_and_refuses_the_rest() {
        assert!(UserId::new("123").is_ok());
        assert!(UserId::new("a.b:c@d-e_f").is_ok());
        assert!(UserId::new("x".repeat(64)).is_ok());
        assert_eq!(UserId::new(""), Err(IdError::Empty { kind: "user_id" }));
        assert_eq!(
            UserId::new("x".repeat(65)),
            Err(IdError::TooLong { kind: "user_id" })
        );
        for bad in ["a b", "a|b", "é", "a/b", "a\n"] {
            assert_eq!(
                UserId::new(bad),
                Err(IdError::BadCharacter { kind: "user_id" }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_ids_are_valid_short_and_distinct() {
        let a = SessionId::random();
        assert_eq!(a.as_str().len(), GENERATED_ID_LEN);
        assert!(SessionId::new(a.as_str()).is_ok());
        assert_ne!(NodeId::random(), NodeId::random());
    }

    #[test]
    fn json_takes_strings_and_integers_and_writes_strings() {
        let a: UserId = serde_json::from_str("\"42\"").unwrap();
        let b: UserId = serde_json::from_str("42").unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"42\"");
        assert!(serde_json::from_str::<UserId>("-1").is_err());
        assert!(serde_json::from_str::<UserId>("\"a b\"").is_err());
        assert!(serde_json::from_str::<UserId>("null").is_err());
    }
}
