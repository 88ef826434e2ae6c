//! The environment handed to the component: the process environment plus an
//! optional `.env` file, the process environment winning (as `dotenv` tools
//! do, so an explicit `VAR=x spaces-backup run` overrides the file).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _, Result};

/// `(name, value)` pairs, sorted by name.
pub type EnvVars = Vec<(String, String)>;

/// Process environment plus `env_file`. A missing file is an error only when
/// `required` (an explicit `--env-file`); the default `.env` is optional.
///
/// Variables whose name or value is not valid UTF-8 are skipped: WASI
/// environment variables are strings.
pub fn load(env_file: &Path, required: bool) -> Result<EnvVars> {
    let mut vars = BTreeMap::new();
    if env_file.exists() {
        for (k, v) in read_env_file(env_file)? {
            vars.insert(k, v);
        }
    } else if required {
        bail!("env file {} does not exist", env_file.display());
    }
    for (k, v) in std::env::vars_os() {
        if let (Some(k), Some(v)) = (k.to_str(), v.to_str()) {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    Ok(vars.into_iter().collect())
}

/// Parses a `.env` file without touching the process environment.
///
/// A syntax error names the file and line but never quotes the line: it may
/// hold a secret.
pub fn read_env_file(path: &Path) -> Result<EnvVars> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for item in dotenvy::from_read_iter(content.as_bytes()) {
        match item {
            Ok((k, v)) => out.push((k, v)),
            Err(dotenvy::Error::LineParse(line, _)) => {
                let line_no = content
                    .lines()
                    .position(|l| l == line || l.trim() == line.trim())
                    .map(|i| format!(" line {}", i + 1))
                    .unwrap_or_default();
                bail!(
                    "cannot parse {}{line_no}: expected NAME=value",
                    path.display()
                );
            }
            Err(e) => {
                // Other dotenvy errors (I/O, bad escape) carry no file content.
                bail!("cannot parse {}: {e}", path.display());
            }
        }
    }
    Ok(out)
}

/// Looks up a variable in an [`EnvVars`] list.
pub fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_hides_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.env");
        std::fs::write(
            &ok,
            "# comment\nSOURCE_BUCKET=src\nexport DEST_BUCKET=\"dst\"\n\nSPACES_SECRET='s e c'\n",
        )
        .unwrap();
        let vars = read_env_file(&ok).unwrap();
        assert_eq!(get(&vars, "SOURCE_BUCKET"), Some("src"));
        assert_eq!(get(&vars, "DEST_BUCKET"), Some("dst"));
        assert_eq!(get(&vars, "SPACES_SECRET"), Some("s e c"));

        let bad = dir.path().join("bad.env");
        std::fs::write(&bad, "A=1\nSPACES_SECRET topsecret\n").unwrap();
        let err = format!("{:#}", read_env_file(&bad).unwrap_err());
        assert!(!err.contains("topsecret"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn process_env_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".env");
        // PATH is set in any test environment; the file must not override it.
        std::fs::write(&file, "PATH=/from/file\nSPACES_BACKUP_TEST_ONLY_FILE=1\n").unwrap();
        let vars = load(&file, true).unwrap();
        assert_ne!(get(&vars, "PATH"), Some("/from/file"));
        assert_eq!(get(&vars, "SPACES_BACKUP_TEST_ONLY_FILE"), Some("1"));
        assert!(load(&dir.path().join("missing"), true).is_err());
        assert!(load(&dir.path().join("missing"), false).is_ok());
    }
}

/// The cap on the component's memory: `MAX_MEMORY` (bytes, or `512MiB`, `2GiB`...), or
/// 1 GiB. The component checks the same variable against its own needs and fails with
/// a clear error before reaching the cap; a value it rejects is reported by it, by name.
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;

pub fn max_memory(vars: &[(String, String)]) -> u64 {
    use spaces_backup::model::parse_size;
    get(vars, "MAX_MEMORY")
        .and_then(parse_size)
        .unwrap_or(DEFAULT_MAX_MEMORY)
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn sizes() {
        let vars = vec![("MAX_MEMORY".to_string(), "768MiB".to_string())];
        assert_eq!(max_memory(&vars), 768 << 20);
        assert_eq!(max_memory(&[]), DEFAULT_MAX_MEMORY);
    }
}
