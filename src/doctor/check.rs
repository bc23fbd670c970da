//! What a check reports: its status and the lines that say what it found and what to do.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but something is missing or could be better; nvbind still runs containers.
    Warn,
    /// Something nvbind or an engine needs is broken.
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable identifier for tools (`cgroups`, `engine.docker`, ...).
    pub id: String,
    pub status: Status,
    /// What was found, one line.
    pub summary: String,
    /// What to do about it, one line; absent when the check is ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Check {
    pub fn ok(id: impl Into<String>, summary: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            status: Status::Ok,
            summary: summary.into(),
            remedy: None,
        }
    }

    pub fn warn(
        id: impl Into<String>,
        summary: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Check {
        Check::with_remedy(Status::Warn, id.into(), summary.into(), remedy.into())
    }

    pub fn fail(
        id: impl Into<String>,
        summary: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Check {
        Check::with_remedy(Status::Fail, id.into(), summary.into(), remedy.into())
    }

    fn with_remedy(status: Status, id: String, summary: String, remedy: String) -> Check {
        Check {
            id,
            status,
            summary,
            remedy: Some(remedy),
        }
    }
}
