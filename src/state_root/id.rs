//! Container IDs: what may name a container under the state root.

use anyhow::{bail, Result};

/// Container IDs become directory names under --root, so anything that could escape it or
/// confuse a path join is refused up front (runc accepts the same alphabet).
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        bail!("the container ID is empty; give a name made of letters, digits, '_', '+', '-', '.'");
    }
    if id == "." || id == ".." || id.contains("..") {
        bail!("invalid container ID {id:?}: it must not contain \"..\"");
    }
    if id.starts_with(".nvbind") {
        // The root keeps its lock file and its records (creates, clones) under such names.
        bail!("invalid container ID {id:?}: names starting with \".nvbind\" are reserved");
    }
    if id.len() > 1024 {
        bail!("invalid container ID: longer than 1024 characters");
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
    {
        bail!(
            "invalid container ID {id:?}: character {c:?} is not allowed \
             (use letters, digits, '_', '+', '-', '.')"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_the_root_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a..b",
            "a b",
            "x\n",
            "é",
            ".nvbind-creating",
            ".nvbind.lock",
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "abc-123", "A_b+c.d", "0"] {
            validate_id(good).unwrap();
        }
    }

    #[test]
    fn error_names_the_bad_character() {
        let err = validate_id("a/b").unwrap_err().to_string();
        assert!(err.contains("'/'"), "{err}");
    }
}
