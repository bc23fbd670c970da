//! What a crash can leave in the state root, made by hand: state.json empty, truncated or
//! garbage, a container directory without state.json or with only a lock file (each with
//! nvbind's record, as every container of nvbind's has), and the record of a create killed
//! after it made a cgroup. `state` and `list` report each one
//! (with a warning) and keep reporting the healthy container next to them; `delete --force`
//! removes each one with everything it holds.

use std::fs;
use std::path::Path;

use serde_json::{json, Value};

use super::common::{leaked_cgroups, process_alive, Env};
use super::leaks::{Cleanup, Leaks};
use super::take_turn;

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Breaks a container directory in one way.
type Breakage<'a> = &'a dyn Fn(&Path);

#[test]
fn broken_state_files_are_reported_and_deleted_and_hide_no_other_container() {
    let _turn = take_turn();
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let b = env.bundle("good", &["sleep", "1000"]);
    env.ok(&["run", "-d", "-b", b.to_str().unwrap(), "good"]);
    let good_state = fs::read(env.root.join("good/state.json")).unwrap();

    let cases: [(&str, Breakage); 5] = [
        ("empty", &|d| fs::write(d.join("state.json"), "").unwrap()),
        ("truncated", &|d| {
            fs::write(d.join("state.json"), &good_state[..good_state.len() / 2]).unwrap()
        }),
        ("garbage", &|d| {
            fs::write(d.join("state.json"), b"\x00\xffnot json at all").unwrap()
        }),
        ("no-state", &|d| {
            fs::write(
                d.join("youki_config.json"),
                r#"{"hooks":null,"cgroup_path":"/x"}"#,
            )
            .unwrap()
        }),
        ("lock-only", &|d| {
            fs::write(d.join(".nvbind.lock"), "").unwrap()
        }),
    ];
    for (id, make) in &cases {
        // nvbind's record, which its create writes first and its delete removes last: a
        // directory without one is not nvbind's to report or remove (tests/shared_root.rs).
        let record = json!({"id": id, "bundle": b, "cgroup_path": null, "systemd": false,
            "pid": 999_999_999u32});
        let path = env.root.join(format!(".nvbind-container-{id}.json"));
        fs::write(path, record.to_string()).unwrap();
        let d = env.root.join(id);
        fs::create_dir(&d).unwrap();
        make(&d);
    }

    let list = env.nvbind(&["list", "--format", "json"]);
    assert!(list.status.success(), "list failed: {list:?}");
    let docs = json_of(&list);
    let status_of = |id: &str| {
        docs.as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .map(|d| d["status"].clone())
    };
    assert_eq!(status_of("good"), Some(json!("running")), "{docs}");
    let warnings = String::from_utf8_lossy(&list.stderr);
    for (id, _) in &cases {
        assert_eq!(status_of(id), Some(json!("stopped")), "{id}: {docs}");
        assert!(
            warnings.contains(&format!("\"{id}\" is half-made")),
            "no warning about {id}: {warnings}"
        );
        let state = env.nvbind(&["state", id]);
        assert!(state.status.success(), "state {id}: {state:?}");
        assert_eq!(json_of(&state)["status"], "stopped");
        assert!(String::from_utf8_lossy(&state.stderr).contains("delete --force"));
        let err = env.fails(&["delete", id]);
        assert!(err.contains("delete --force"), "{err}");
    }
    assert_eq!(env.state("good")["status"], "running");

    for (id, _) in &cases {
        env.ok(&["delete", "--force", id]);
        assert!(!env.root.join(id).exists(), "{id} left");
    }
    assert_eq!(env.ids(), vec!["good".to_string()]);
    env.ok(&["delete", "--force", "good"]);
    env.assert_clean();
}

/// A create killed after its init joined the cgroup and before state.json was written: only
/// the create record knows the cgroup. With the record, `delete --force` kills the init and
/// removes the cgroup; without it (the control) the directory is not nvbind's at all (it may
/// be another runtime's in a shared root): `state` and `delete --force` refuse it and touch
/// nothing, so the cgroup and the init stay, and the leak check says so.
#[test]
fn the_create_record_is_what_lets_delete_find_the_cgroup() {
    let _turn = take_turn();
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    for with_record in [true, false] {
        let id = if with_record { "recorded" } else { "control" };
        let b = env.bundle(id, &["sleep", "1000"]);
        env.ok(&["create", "-b", b.to_str().unwrap(), id]);
        let init = env.state(id)["pid"].as_i64().unwrap();
        let dir = env.root.join(id);
        let config: Value =
            serde_json::from_slice(&fs::read(dir.join("youki_config.json")).unwrap()).unwrap();
        fs::remove_file(dir.join("state.json")).unwrap();
        fs::remove_file(dir.join("youki_config.json")).unwrap();
        let path = env.root.join(format!(".nvbind-container-{id}.json"));
        if with_record {
            // Replaced by one that names a create long gone (not this test's nvbind).
            let record = json!({"id": id, "bundle": b, "cgroup_path": config["cgroup_path"],
                "systemd": false, "pid": 999_999_999u32});
            fs::write(path, record.to_string()).unwrap();
        } else {
            fs::remove_file(path).unwrap();
            let err = env.fails(&["state", id]);
            assert!(err.contains("not made by nvbind"), "{err}");
            let err = env.fails(&["delete", "--force", id]);
            assert!(err.contains("not made by nvbind"), "{err}");
            assert!(dir.exists() && process_alive(init));
            let leaks = Leaks::find(&env, &[]);
            assert!(
                !leaked_cgroups(&env.cgroup_prefix).is_empty(),
                "{}",
                leaks.describe()
            );
            leaks.remove(&env);
            continue;
        }
        assert_eq!(env.state(id)["status"], "stopped");
        env.ok(&["delete", "--force", id]);
        let cgroup_left = !leaked_cgroups(&env.cgroup_prefix).is_empty();
        assert!(!cgroup_left, "the recorded cgroup was not removed");
        assert!(
            super::common::wait_for(|| !process_alive(init)),
            "init {init} survived"
        );
        assert!(Leaks::find(&env, &[]).is_empty());
    }
    env.assert_clean();
}
