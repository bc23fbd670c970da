//! The state guard a verb runs before it acts on a container: whether the container's status
//! allows the action, and when it does not, the one line that says why (the wording each verb
//! has always used, which scripts and engines may match).

use anyhow::{bail, Result};
use libcontainer::container::{Container, ContainerStatus};
use nvbind::state_doc::status_name;

/// What a verb is about to do to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    /// `kill`; with `all`, a stopped container's leftover processes may be signalled too.
    Kill {
        all: bool,
    },
    /// `delete`; with `force`, a running or paused container is killed first.
    Delete {
        force: bool,
    },
    Pause,
    Resume,
    Exec,
    Update,
    Checkpoint,
    /// `snapshot restore`: roll the rootfs back; with `force`, in place under a paused or
    /// created container.
    Rollback {
        force: bool,
    },
}

/// Refuses `action` on `container` unless its status allows it.
pub fn ensure(container: &Container, action: Action) -> Result<()> {
    use ContainerStatus as S;
    let id = container.id();
    let status = container.status();
    let is = status_name(status);
    match action {
        Action::Start if !container.can_start() => {
            bail!("cannot start container {id:?}: it is {is}, not created")
        }
        // runc's words: containerd's shim (checkKillError) and CRI-O read "container not
        // running" as "the process already finished"; in other words a StopContainer whose
        // SIGTERM races the init's exit fails the kubelet's call ("unknown error after kill").
        Action::Kill { all: false } if status == S::Stopped => {
            bail!("cannot kill container {id:?}: container not running")
        }
        Action::Delete { force: false } if matches!(status, S::Running | S::Paused) => {
            bail!("cannot delete container {id:?}: it is {is}; stop it first or use --force")
        }
        Action::Pause if !container.can_pause() => {
            bail!("cannot pause container {id:?}: it is {is}, not running")
        }
        Action::Resume if !container.can_resume() => {
            bail!("cannot resume container {id:?}: it is {is}, not paused")
        }
        // runc execs into a created container too (its init waits in the namespaces), and
        // names the paused case in words its tests and engines match.
        Action::Exec if status == S::Paused => {
            bail!("cannot exec in a paused container {id:?}; resume it first")
        }
        Action::Exec if !matches!(status, S::Created | S::Running) => {
            bail!("cannot exec in container {id:?}: it is {is}, not running")
        }
        Action::Update if !matches!(status, S::Running | S::Paused | S::Created) => {
            bail!("cannot update container {id:?}: it is {is}")
        }
        Action::Checkpoint if status != S::Running => bail!(
            "cannot checkpoint container {id:?}: it is {is}; only a running container can be \
             checkpointed"
        ),
        Action::Rollback { force } => match status {
            S::Stopped => Ok(()),
            S::Paused | S::Created if force => Ok(()),
            S::Running => bail!(
                "cannot roll back container {id:?}: it is {is}; stop it first, or pause it and \
                 pass --force"
            ),
            _ => bail!(
                "cannot roll back container {id:?}: it is {is}; stop it first or pass --force"
            ),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ContainerStatus; 5] = [
        ContainerStatus::Creating,
        ContainerStatus::Created,
        ContainerStatus::Running,
        ContainerStatus::Stopped,
        ContainerStatus::Paused,
    ];

    fn container(dir: &std::path::Path, status: ContainerStatus) -> Container {
        Container::new("c1", status, None, dir, dir).unwrap()
    }

    /// The statuses `action` is allowed in, and the message for one it is refused in.
    fn verdicts(action: Action) -> (Vec<&'static str>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let (mut ok, mut refused) = (vec![], vec![]);
        for s in ALL {
            match ensure(&container(dir.path(), s), action) {
                Ok(()) => ok.push(status_name(s)),
                Err(e) => refused.push(e.to_string()),
            }
        }
        (ok, refused)
    }

    #[test]
    fn each_action_is_allowed_where_libcontainer_allows_it() {
        use Action::*;
        let ok = |a| verdicts(a).0;
        assert_eq!(ok(Start), ["created"]);
        assert_eq!(
            ok(Kill { all: false }),
            ["creating", "created", "running", "paused"]
        );
        assert_eq!(ok(Kill { all: true }).len(), 5);
        assert_eq!(
            ok(Delete { force: false }),
            ["creating", "created", "stopped"]
        );
        assert_eq!(ok(Delete { force: true }).len(), 5);
        assert_eq!(ok(Pause), ["running"]);
        assert_eq!(ok(Resume), ["paused"]);
        assert_eq!(ok(Exec), ["created", "running"]);
        assert_eq!(ok(Update), ["created", "running", "paused"]);
        assert_eq!(ok(Checkpoint), ["running"]);
        assert_eq!(ok(Rollback { force: false }), ["stopped"]);
        assert_eq!(
            ok(Rollback { force: true }),
            ["created", "stopped", "paused"]
        );
    }

    #[test]
    fn each_refusal_is_the_verbs_message() {
        let first = |a| verdicts(a).1.into_iter().next().unwrap();
        assert_eq!(
            first(Action::Start),
            "cannot start container \"c1\": it is creating, not created"
        );
        assert_eq!(
            first(Action::Kill { all: false }),
            "cannot kill container \"c1\": container not running"
        );
        assert_eq!(
            first(Action::Delete { force: false }),
            "cannot delete container \"c1\": it is running; stop it first or use --force"
        );
        assert_eq!(
            first(Action::Pause),
            "cannot pause container \"c1\": it is creating, not running"
        );
        assert_eq!(
            first(Action::Resume),
            "cannot resume container \"c1\": it is creating, not paused"
        );
        assert_eq!(
            first(Action::Exec),
            "cannot exec in container \"c1\": it is creating, not running"
        );
        // runc's words (cgroups.bats matches "cannot exec in a paused container")
        assert_eq!(
            verdicts(Action::Exec).1.last().unwrap(),
            "cannot exec in a paused container \"c1\"; resume it first"
        );
        assert_eq!(
            first(Action::Update),
            "cannot update container \"c1\": it is creating"
        );
        assert_eq!(
            first(Action::Checkpoint),
            "cannot checkpoint container \"c1\": it is creating; only a running container can \
             be checkpointed"
        );
        let rollback = verdicts(Action::Rollback { force: false }).1;
        assert!(rollback.contains(
            &"cannot roll back container \"c1\": it is running; stop it first, or pause it and \
              pass --force"
                .to_string()
        ));
        assert!(rollback.contains(
            &"cannot roll back container \"c1\": it is paused; stop it first or pass --force"
                .to_string()
        ));
    }
}
