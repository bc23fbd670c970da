//! A small argument reader. Hooks are called with fixed argument lists written into specs
//! by other programs (CDI generators, dockerd, LXC), so parsing is deliberately plain:
//! `--flag VALUE` or `--flag=VALUE`, and an error for anything left over.

use anyhow::{bail, Result};

#[derive(Debug, Clone)]
pub struct Args {
    sub: String,
    rest: Vec<String>,
}

impl Args {
    pub fn new(sub: &str, rest: Vec<String>) -> Args {
        Args {
            sub: sub.to_string(),
            rest,
        }
    }

    /// Removes and returns every value of `flag`.
    pub fn values(&mut self, flag: &str) -> Result<Vec<String>> {
        let eq = format!("{flag}=");
        let mut out = Vec::new();
        let mut keep = Vec::new();
        let mut it = std::mem::take(&mut self.rest).into_iter();
        while let Some(a) = it.next() {
            if a == flag {
                match it.next() {
                    Some(v) => out.push(v),
                    None => bail!("{}: {flag} needs a value", self.sub),
                }
            } else if let Some(v) = a.strip_prefix(&eq) {
                out.push(v.to_string());
            } else {
                keep.push(a);
            }
        }
        self.rest = keep;
        Ok(out)
    }

    /// Removes and returns the last value of `flag`.
    pub fn value(&mut self, flag: &str) -> Result<Option<String>> {
        Ok(self.values(flag)?.pop())
    }

    /// Removes `flag` (a switch) and says whether it was there.
    pub fn switch(&mut self, flag: &str) -> bool {
        let before = self.rest.len();
        self.rest.retain(|a| a != flag);
        self.rest.len() != before
    }

    /// Removes and returns the positional arguments (those not starting with `-`).
    pub fn positionals(&mut self) -> Vec<String> {
        let (pos, rest): (Vec<String>, Vec<String>) = std::mem::take(&mut self.rest)
            .into_iter()
            .partition(|a| !a.starts_with('-'));
        self.rest = rest;
        pos
    }

    /// Fails on anything not consumed.
    pub fn finish(self) -> Result<()> {
        if let Some(a) = self.rest.first() {
            bail!("{}: unexpected argument {a:?}", self.sub);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Args {
        Args::new("t", v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn flags_and_leftovers() {
        let mut x = a(&["--folder", "/a", "--folder=/b", "pos", "--ro"]);
        assert_eq!(x.values("--folder").unwrap(), ["/a", "/b"]);
        assert!(x.switch("--ro"));
        assert_eq!(x.positionals(), ["pos"]);
        x.finish().unwrap();
        let err = a(&["--what"]).finish().unwrap_err();
        assert!(err.to_string().contains("--what"));
        assert!(a(&["--link"]).values("--link").is_err());
    }
}
