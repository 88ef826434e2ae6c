//! Who may call what: with `BACKUP_TOKEN` in the component's environment, every request
//! but `GET /health` needs `Authorization: Bearer <BACKUP_TOKEN>`; with `RESTORE_TOKEN`,
//! `POST /restore` needs that one instead, so a holder of the backup token cannot write
//! an old archive over a bucket. Tokens are compared in constant time and never logged.
//! This is what protects `wasmtime serve`, which knows nothing of tokens.

use std::collections::BTreeMap;

pub const BACKUP_TOKEN: &str = "BACKUP_TOKEN";
pub const RESTORE_TOKEN: &str = "RESTORE_TOKEN";

/// What a request asks for, as far as the tokens go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `GET /health`: open to anyone.
    Open,
    /// Backups, verification and anything else: the backup token.
    Backup,
    /// Writes over a bucket: the restore token when there is one.
    Restore,
}

impl Access {
    pub fn of(path: &str) -> Self {
        match path.trim_end_matches('/') {
            "/health" | "" => Access::Open,
            "/restore" => Access::Restore,
            _ => Access::Backup,
        }
    }
}

/// The tokens of the environment (unset and empty alike mean none).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    backup: Option<String>,
    restore: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { <redacted> }")
    }
}

impl Tokens {
    pub fn from_env(env: &BTreeMap<String, String>) -> Self {
        let get = |name: &str| {
            env.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Self {
            backup: get(BACKUP_TOKEN),
            restore: get(RESTORE_TOKEN),
        }
    }

    /// The values the log must never show.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.backup.iter().chain(&self.restore).map(String::as_str)
    }

    /// `Ok` when a request for `access` with this `Authorization` header may go on;
    /// otherwise the variable whose token it needs.
    pub fn check(&self, access: Access, authorization: Option<&[u8]>) -> Result<(), &'static str> {
        let (name, token) = match access {
            Access::Open => return Ok(()),
            Access::Restore if self.restore.is_some() => (RESTORE_TOKEN, &self.restore),
            _ => (BACKUP_TOKEN, &self.backup),
        };
        let Some(token) = token else {
            return Ok(());
        };
        match authorization.and_then(bearer) {
            Some(given) if constant_time_eq(given, token.as_bytes()) => Ok(()),
            _ => Err(name),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, given) = header.split_first_chunk::<7>()?;
    scheme.eq_ignore_ascii_case(b"Bearer ").then_some(given)
}

/// `a == b` in a time that depends only on their lengths (a length mismatch is refused
/// at once: the token's length is not the secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(pairs: &[(&str, &str)]) -> Tokens {
        Tokens::from_env(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn routes_need_their_token() {
        let open = tokens(&[]);
        assert!(open.check(Access::Backup, None).is_ok());
        assert!(open.check(Access::Restore, None).is_ok());

        let backup = tokens(&[(BACKUP_TOKEN, "b-token"), (RESTORE_TOKEN, " ")]);
        assert!(backup.check(Access::Open, None).is_ok());
        assert_eq!(backup.check(Access::Backup, None), Err(BACKUP_TOKEN));
        assert!(backup
            .check(Access::Backup, Some(b"Bearer b-token"))
            .is_ok());
        assert!(backup
            .check(Access::Backup, Some(b"bearer b-token"))
            .is_ok());
        assert!(backup
            .check(Access::Restore, Some(b"Bearer b-token"))
            .is_ok());
        for wrong in [
            &b"Bearer b-tokeN"[..],
            b"Bearer b-token2",
            b"Basic b-token",
            b"b-token",
            b"Bearer",
        ] {
            assert!(
                backup.check(Access::Backup, Some(wrong)).is_err(),
                "{wrong:?}"
            );
        }

        let both = tokens(&[(BACKUP_TOKEN, "b-token"), (RESTORE_TOKEN, "r-token")]);
        assert_eq!(
            both.check(Access::Restore, Some(b"Bearer b-token")),
            Err(RESTORE_TOKEN)
        );
        assert!(both.check(Access::Restore, Some(b"Bearer r-token")).is_ok());
        assert!(both.check(Access::Backup, Some(b"Bearer b-token")).is_ok());

        let restore_only = tokens(&[(RESTORE_TOKEN, "r-token")]);
        assert!(restore_only.check(Access::Backup, None).is_ok());
        assert!(restore_only.check(Access::Restore, None).is_err());
        assert_eq!(format!("{both:?}"), "Tokens { <redacted> }");
        assert_eq!(both.secrets().count(), 2);
    }

    #[test]
    fn paths() {
        assert_eq!(Access::of("/health"), Access::Open);
        assert_eq!(Access::of("/"), Access::Open);
        assert_eq!(Access::of("/restore/"), Access::Restore);
        assert_eq!(Access::of("/backup"), Access::Backup);
        assert_eq!(Access::of("/anything"), Access::Backup);
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
    }
}
