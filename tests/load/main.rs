//! Concurrency and load (issue #9): many containers at once on one --root, many racing
//! operations on one ID, and `list`/`state` racing `create`/`delete`. Every nvbind call runs
//! under a timeout (a hang is a failure), every failure must be a clean one-line error, and each
//! test ends with no state dir, cgroup, mount or container process left.
//!
//! The defaults are the numbers: the file takes 35-60 s on a 2-core CI machine (more
//! when the machine is busy); the figures measured are in tests/RELIABILITY.md.
//!
//! Settings, for scripts/stress and for replaying a failure:
//! - NVBIND_LOAD_SCALE: a factor on every count below (3: 600 containers at once, about 3 min;
//!   each waiting nvbind holds about 12 MB, so mind the memory much beyond that);
//! - NVBIND_LOAD_PARALLEL (200): containers created, started, killed and deleted in phases;
//! - NVBIND_LOAD_RUNNING (150): containers running together, listed, then deleted;
//! - NVBIND_LOAD_ONE_ID_OPS (50) x NVBIND_LOAD_ONE_ID_ROUNDS (20): racing operations on one ID;
//!   NVBIND_LOAD_SEED replays the printed order of operations (not their timing);
//! - NVBIND_LOAD_RACE (60): containers deleted, and as many created and deleted, while
//!   NVBIND_LOAD_LISTERS (4) threads run list/state; NVBIND_LOAD_RACE_WORKERS (16) writers;
//! - NVBIND_LOAD_WORKERS: threads for the first two tests (default: one per container);
//! - NVBIND_LOAD_TIMEOUT_S (120): the per-call timeout.
//!
//! Run: `cargo test --test load -- --nocapture`; each test prints a `LOAD name: k=v ...` line
//! (figures are reported, not asserted) and the clean refusals it saw, by message.

#[path = "../common/mod.rs"]
mod common;
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use common::*;
use harness::*;
use serde_json::{json, Value};

#[test]
fn containers_created_started_and_deleted_in_parallel() {
    let _turn = serial();
    let n = count("NVBIND_LOAD_PARALLEL", 200);
    // All at once by default: the point is contention on one root (creates serialise on its
    // lock), and 200 nvbind processes fit the machine's pid and file limits.
    let workers = knob("NVBIND_LOAD_WORKERS", n);
    let env = Env::new();
    let bundles = Bundles::new(&env, 1);
    let ids: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
    let dirs: Vec<PathBuf> = ids.iter().map(|id| bundles.make(&env, id)).collect();
    let tally = Tally::default();
    let running = Gauge::default();
    let pids: Vec<Mutex<i64>> = (0..n).map(|_| Mutex::new(0)).collect();
    // A container that failed a phase sits out the later ones (its failure is recorded).
    let failed: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
    // Each phase runs for all containers at once, so every verb meets n - 1 others of its
    // kind and n containers are running together before they are killed.
    type Phase<'a> = (
        &'a str,
        Box<dyn Fn(usize) -> Result<(), String> + Sync + 'a>,
    );
    let step = |args: &[&str]| {
        let out = nv(&env, args);
        tally.ops.fetch_add(1, Ordering::Relaxed);
        if out.ok() {
            Ok(out)
        } else {
            Err(out.unclean().unwrap_or_else(|| out.describe()))
        }
    };
    let phases: [Phase; 4] = [
        (
            "create",
            Box::new(|i| step(&["create", "-b", dirs[i].to_str().unwrap(), &ids[i]]).map(|_| ())),
        ),
        (
            "start",
            Box::new(|i| {
                let id = &ids[i];
                step(&["start", id])?;
                running.up();
                let st: Value = serde_json::from_str(&step(&["state", id])?.stdout)
                    .map_err(|e| format!("state {id}: {e}"))?;
                let pid = st["pid"].as_i64().unwrap_or(0);
                if st["status"] != "running" || !in_cgroup_of(&env, pid, id) {
                    return Err(format!("{id} after start: {st}"));
                }
                *pids[i].lock().unwrap() = pid;
                Ok(())
            }),
        ),
        (
            "kill",
            Box::new(|i| {
                let (id, pid) = (&ids[i], *pids[i].lock().unwrap());
                step(&["kill", id, "KILL"])?;
                if !wait_long(|| !process_alive(pid)) {
                    return Err(format!("{id}: pid {pid} survived SIGKILL"));
                }
                running.down();
                let st = step(&["state", id])?.stdout;
                if !st.contains("\"stopped\"") {
                    return Err(format!("{id} after kill: {st}"));
                }
                Ok(())
            }),
        ),
        (
            "delete",
            Box::new(|i| step(&["delete", &ids[i]]).map(|_| ())),
        ),
    ];
    let mut times = Vec::new();
    let t0 = Instant::now();
    for (name, phase) in &phases {
        let t = Instant::now();
        parallel(n, workers, |i| {
            if failed[i].load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = phase(i) {
                failed[i].store(true, Ordering::SeqCst);
                tally.fail(format!("{name}: {e}"));
            }
        });
        times.push(format!("{name}={:.1}", t.elapsed().as_secs_f64()));
    }
    let wall = t0.elapsed();
    let failures = tally.failures();
    report(
        "parallel-lifecycle",
        &[
            ("containers", n.to_string()),
            ("workers", workers.min(n).to_string()),
            ("ops", tally.ops().to_string()),
            ("failures", failures.len().to_string()),
            ("peak_running", running.peak().to_string()),
            ("phases_s", times.join(",")),
            ("wall_s", format!("{:.1}", wall.as_secs_f64())),
        ],
    );
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    env.assert_clean();
    assert_no_strays(&env, &bundles.marker, &[]);
}

/// The errors a racing operation on one ID may end with: each names what was in the way.
const EXPECTED_REFUSALS: [&str; 5] = [
    "already exists",
    "does not exist",
    "not running",
    "not created",
    "stop it first",
];

#[test]
fn concurrent_operations_on_one_id_keep_its_state_whole() {
    let _turn = serial();
    let ops = count("NVBIND_LOAD_ONE_ID_OPS", 50);
    let rounds = count("NVBIND_LOAD_ONE_ID_ROUNDS", 20);
    // Read as an integer: the printed seeds are beyond f64's exact range.
    let seed: u64 = match std::env::var("NVBIND_LOAD_SEED") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("NVBIND_LOAD_SEED={v:?} is not an unsigned integer")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    let env = Env::new();
    let bundles = Bundles::new(&env, 2);
    let id = "one";
    let bundle = bundles.make(&env, id);
    let b = bundle.to_str().unwrap();
    // Readers race the writers too; their answers are checked as they come.
    let menu: [&[&str]; 10] = [
        &["create", "-b", b, id],
        &["create", "-b", b, id],
        &["start", id],
        &["start", id],
        &["kill", id, "KILL"],
        &["kill", id, "TERM"],
        &["delete", id],
        &["delete", "--force", id],
        &["state", id],
        &["list", "--format", "json"],
    ];
    // xorshift never leaves 0.
    let mut rng = Rng(seed | 1);
    let tally = Tally::default();
    let mut seen = BTreeMap::<String, usize>::new();
    let t0 = Instant::now();
    for round in 0..rounds {
        let picks: Vec<usize> = (0..ops).map(|_| rng.below(menu.len())).collect();
        parallel(ops, ops, |i| {
            let read = match menu[picks[i]][0] {
                "state" => checked_state(&env, id).map(|_| ()),
                "list" => checked_list_json(&env).map(|_| ()),
                _ => return tally.record(&env, &nv(&env, menu[picks[i]])),
            };
            tally.ops.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = read {
                tally.fail(e);
            }
        });
        // Between rounds: the state is whole, list agrees with it, and the only process of
        // ours alive is the container's own init (if it has one).
        let st = checked_state(&env, id).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let listed = checked_list_json(&env).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let status = st
            .as_ref()
            .map_or("gone", |s| s["status"].as_str().unwrap());
        *seen.entry(status.to_string()).or_default() += 1;
        assert_eq!(
            listed.iter().map(|d| &d["id"]).collect::<Vec<_>>(),
            st.iter().map(|s| &s["id"]).collect::<Vec<_>>(),
            "round {round}: list and state disagree"
        );
        let dir = env.root.join(id);
        if dir.join("state.json").exists() {
            let raw = fs::read(dir.join("state.json")).unwrap();
            serde_json::from_slice::<Value>(&raw)
                .unwrap_or_else(|e| panic!("round {round}: state.json is corrupt ({e})"));
        }
        if st.is_none() && dir.exists() {
            let left: Vec<_> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            print_errors(&tally);
            panic!("round {round}: no container, but its state dir is left with {left:?}");
        }
        let pid = st.as_ref().and_then(|s| s["pid"].as_i64()).unwrap_or(0);
        if matches!(status, "created" | "running") {
            assert!(
                process_alive(pid),
                "round {round}: {status} but {pid} is dead"
            );
            assert!(
                in_cgroup_of(&env, pid, id),
                "round {round}: {pid} not in its cgroup"
            );
        }
        assert_no_strays(&env, &bundles.marker, &[pid]);
    }
    let wall = t0.elapsed();
    let out = nv(&env, &["delete", "--force", id]);
    assert!(out.ok(), "{}", out.describe());
    let failures = tally.failures();
    report(
        "one-id",
        &[
            ("rounds", rounds.to_string()),
            ("ops_per_round", ops.to_string()),
            ("ops", tally.ops().to_string()),
            ("seed", seed.to_string()),
            ("failures", failures.len().to_string()),
            ("end_states", format!("{seen:?}")),
            ("wall_s", format!("{:.1}", wall.as_secs_f64())),
        ],
    );
    print_errors(&tally);
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    let errors = tally.errors.lock().unwrap().clone();
    for msg in errors.keys() {
        assert!(
            EXPECTED_REFUSALS.iter().any(|r| msg.contains(r)),
            "an operation failed for an unexpected reason: {msg}"
        );
    }
    env.assert_clean();
    assert_no_strays(&env, &bundles.marker, &[]);
}

#[test]
fn many_running_containers_are_listed_with_their_pids_then_deleted() {
    let _turn = serial();
    let n = count("NVBIND_LOAD_RUNNING", 150);
    let workers = knob("NVBIND_LOAD_WORKERS", n);
    let env = Env::new();
    let bundles = Bundles::new(&env, 3);
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    let dirs: Vec<PathBuf> = ids.iter().map(|id| bundles.make(&env, id)).collect();
    let tally = Tally::default();
    let t0 = Instant::now();
    parallel(n, workers, |i| {
        let create = nv(&env, &["create", "-b", dirs[i].to_str().unwrap(), &ids[i]]);
        tally.record(&env, &create);
        let start = create.ok().then(|| nv(&env, &["start", &ids[i]]));
        if let Some(start) = &start {
            tally.record(&env, start);
        }
        if !start.is_some_and(|s| s.ok()) {
            tally.fail(format!("{} did not start: {}", ids[i], create.describe()));
        }
    });
    let up = t0.elapsed();
    let failures = tally.failures();
    assert!(
        failures.is_empty(),
        "{} did not start: {failures:#?}",
        failures.len()
    );

    let t1 = Instant::now();
    let table = checked_list_table(&env).unwrap();
    let list_ms = t1.elapsed().as_millis();
    let json = checked_list_json(&env).unwrap();
    let quiet = nv(&env, &["list", "-q"]);
    assert!(quiet.ok(), "{}", quiet.describe());
    let want: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let listed: BTreeSet<&str> = table.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        listed, want,
        "list (table) does not show exactly the containers"
    );
    assert_eq!(
        quiet.stdout.lines().collect::<BTreeSet<_>>(),
        want,
        "list -q"
    );
    let mut pids = BTreeSet::new();
    for ((id, pid, status), doc) in table.iter().zip(&json) {
        assert_eq!(
            (&doc["id"], &doc["pid"]),
            (&json!(id), &json!(pid)),
            "table vs json"
        );
        assert_eq!(status, "running", "{id}");
        assert!(process_alive(*pid), "{id}: listed pid {pid} is not alive");
        assert_eq!(
            cmdline(*pid),
            format!("sleep {} ", bundles.marker),
            "{id}: {pid}"
        );
        assert!(
            in_cgroup_of(&env, *pid, id),
            "{id}: pid {pid} is another container's"
        );
        pids.insert(*pid);
    }
    assert_eq!(pids.len(), n, "two containers listed with one pid");
    // Nothing of ours runs besides the listed inits.
    let ours = our_processes(&env, &bundles.marker);
    let test_fds = fs::read_dir("/proc/self/fd").unwrap().count();
    let extra: Vec<_> = ours.iter().filter(|(p, _)| !pids.contains(p)).collect();
    assert!(extra.is_empty(), "unlisted processes: {extra:?}");

    let t2 = Instant::now();
    parallel(n, workers, |i| {
        tally.record(&env, &nv(&env, &["delete", "--force", &ids[i]]))
    });
    let down = t2.elapsed();
    let failures = tally.failures();
    report(
        "running-at-once",
        &[
            ("containers", n.to_string()),
            ("workers", workers.min(n).to_string()),
            ("ops", tally.ops().to_string()),
            ("failures", failures.len().to_string()),
            ("peak_running", table.len().to_string()),
            ("container_procs", ours.len().to_string()),
            ("test_fds", test_fds.to_string()),
            ("up_s", format!("{:.1}", up.as_secs_f64())),
            ("list_ms", list_ms.to_string()),
            ("delete_s", format!("{:.1}", down.as_secs_f64())),
        ],
    );
    print_errors(&tally);
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    assert!(tally.errors.lock().unwrap().is_empty(), "some calls failed");
    assert!(
        pids.iter().all(|p| wait_long(|| !process_alive(*p))),
        "a deleted container's init is alive"
    );
    env.assert_clean();
    assert_no_strays(&env, &bundles.marker, &[]);
}

#[test]
fn list_and_state_stay_whole_while_containers_come_and_go() {
    let _turn = serial();
    let n = count("NVBIND_LOAD_RACE", 60);
    let workers = knob("NVBIND_LOAD_RACE_WORKERS", 16);
    let listers = knob("NVBIND_LOAD_LISTERS", 4);
    let env = Env::new();
    let bundles = Bundles::new(&env, 4);
    // n containers running before the race, deleted during it; n more created, started and
    // deleted during it.
    let ids: Vec<String> = (0..2 * n)
        .map(|i| format!("{}{i}", if i < n { "old" } else { "new" }))
        .collect();
    let dirs: Vec<PathBuf> = ids.iter().map(|id| bundles.make(&env, id)).collect();
    let tally = Tally::default();
    parallel(n, workers, |i| {
        for args in [
            &["create", "-b", dirs[i].to_str().unwrap(), &ids[i]][..],
            &["start", &ids[i]],
        ] {
            let out = nv(&env, args);
            assert!(out.ok(), "setup: {}", out.describe());
        }
    });

    let done = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    let max_listed = AtomicUsize::new(0);
    let known: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for l in 0..listers {
            let (done, reads, max_listed, known, tally, ids) =
                (&done, &reads, &max_listed, &known, &tally, &ids);
            let env = &env;
            s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ l as u64 | 1);
                while !done.load(Ordering::SeqCst) {
                    let listed: Result<Vec<String>, String> = match rng.below(4) {
                        0 => checked_list_table(env)
                            .map(|rows| rows.into_iter().map(|r| r.0).collect()),
                        1 => checked_list_json(env).map(|docs| {
                            docs.iter()
                                .map(|d| d["id"].as_str().unwrap().to_string())
                                .collect()
                        }),
                        2 => {
                            let out = nv(env, &["list", "-q"]);
                            if out.ok() && out.stderr.is_empty() {
                                Ok(out.stdout.lines().map(String::from).collect())
                            } else {
                                Err(out.describe())
                            }
                        }
                        _ => checked_state(env, &ids[rng.below(ids.len())]).map(|_| vec![]),
                    };
                    reads.fetch_add(1, Ordering::Relaxed);
                    match listed {
                        Ok(listed) => {
                            max_listed.fetch_max(listed.len(), Ordering::Relaxed);
                            if let Some(bad) = listed.iter().find(|id| !known.contains(id.as_str()))
                            {
                                tally.fail(format!("list showed an unknown container {bad:?}"));
                            }
                        }
                        Err(e) => tally.fail(e),
                    }
                }
            });
        }
        parallel(2 * n, workers, |i| {
            let id = ids[i].as_str();
            let steps: Vec<Vec<&str>> = match (i < n, i % 2) {
                (true, 0) => vec![vec!["delete", "--force", id]],
                (true, _) => vec![vec!["kill", id, "KILL"], vec!["delete", "--force", id]],
                (false, _) => vec![
                    vec!["create", "-b", dirs[i].to_str().unwrap(), id],
                    vec!["start", id],
                    vec!["delete", "--force", id],
                ],
            };
            for args in steps {
                let out = nv(&env, &args);
                tally.record(&env, &out);
                if !out.ok() {
                    tally.fail(out.describe());
                    break;
                }
            }
        });
        done.store(true, Ordering::SeqCst);
    });
    let wall = t0.elapsed();
    let failures = tally.failures();
    report(
        "list-vs-delete",
        &[
            ("containers", (2 * n).to_string()),
            ("workers", workers.to_string()),
            ("listers", listers.to_string()),
            ("changes", tally.ops().to_string()),
            ("reads", reads.load(Ordering::Relaxed).to_string()),
            ("max_listed", max_listed.load(Ordering::Relaxed).to_string()),
            ("failures", failures.len().to_string()),
            ("wall_s", format!("{:.1}", wall.as_secs_f64())),
        ],
    );
    print_errors(&tally);
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    assert_eq!(
        checked_list_json(&env).unwrap().len(),
        0,
        "containers left listed"
    );
    env.assert_clean();
    assert_no_strays(&env, &bundles.marker, &[]);
}

/// A create held in the middle by a createRuntime hook (state.json written, no init yet):
/// `state` and `list` say "creating" (libcontainer alone says "stopped"), and a `delete
/// --force` meanwhile waits for the create instead of removing the directory from under it.
#[test]
fn a_container_being_created_is_creating_and_delete_waits_for_it() {
    let _turn = serial();
    let env = Env::new();
    let bundles = Bundles::new(&env, 5);
    let b = bundles.make(&env, "slow");
    env.edit(&b, |c| {
        c["hooks"] = json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "2"]}]});
    });
    std::thread::scope(|s| {
        let create = s.spawn(|| nv(&env, &["create", "-b", b.to_str().unwrap(), "slow"]));
        assert!(
            wait_long(|| env.root.join("slow/state.json").exists()),
            "create never wrote its state"
        );
        let st = checked_state(&env, "slow")
            .unwrap()
            .expect("state: no container");
        assert_eq!(st["status"], "creating", "state during create: {st}");
        let listed = checked_list_json(&env).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["status"], "creating", "list during create");
        let delete = s.spawn(|| nv(&env, &["delete", "--force", "slow"]));
        let create = create.join().unwrap();
        assert!(create.ok(), "create raced by delete: {}", create.describe());
        let delete = delete.join().unwrap();
        assert!(delete.ok(), "{}", delete.describe());
    });
    env.assert_clean();
    assert_no_strays(&env, &bundles.marker, &[]);
}

/// Releases a createRuntime hook that reads a line from a FIFO (`read x < FIFO`): the FIFO is
/// held open for writing from the start, so the hook's open never waits for a writer and the
/// line, once written, stays until it is read.
struct Gate {
    path: PathBuf,
    fifo: fs::File,
}

impl Gate {
    fn new(env: &Env, name: &str) -> Self {
        let path = env.dir.path().join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // O_RDWR: a FIFO opened so never waits for the other end (Linux).
        let fifo = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        Self { path, fifo }
    }

    fn hook(&self) -> Value {
        let cmd = format!("read x < {}", self.path.display());
        json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", cmd]}]})
    }

    fn open(&self) {
        use std::io::Write;
        let _ = (&self.fifo).write_all(b"go\n");
    }
}

/// Opens the gate when dropped: a failed assertion inside a thread scope must not leave the
/// scope's join waiting on a hook that nobody releases.
struct OpenOnDrop<'a>(&'a Gate);

impl Drop for OpenOnDrop<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Issue 19: creates in one --root used to run one at a time (one lock for the whole root):
/// a create held in the middle (its createRuntime hook waits on a FIFO) stalled every other
/// create. Now a create of another ID, its start, kill and delete all finish while the first is
/// still held; a second create of the held ID waits for it, then fails as "already exists".
#[test]
fn a_create_held_midway_holds_up_its_own_id_and_no_other() {
    let _turn = serial();
    let env = Env::new();
    let bundles = Bundles::new(&env, 6);
    let gate = Gate::new(&env, "gate");
    let held = bundles.make(&env, "held");
    env.edit(&held, |c| c["hooks"] = gate.hook());
    let again = bundles.make(&env, "held-again");
    let other = bundles.make(&env, "other");
    std::thread::scope(|s| {
        let _open = OpenOnDrop(&gate);
        let create = s.spawn(|| nv(&env, &["create", "-b", held.to_str().unwrap(), "held"]));
        // state.json is written under the ID's lock, before the hook; the hook waits for the
        // gate, so from here on the create holds the lock until the gate opens.
        assert!(
            wait_long(|| env.root.join("held/state.json").exists()),
            "create never wrote its state"
        );
        let same = s.spawn(|| nv(&env, &["create", "-b", again.to_str().unwrap(), "held"]));
        let lifecycle = s.spawn(|| {
            let mut outs = vec![nv(
                &env,
                &["create", "-b", other.to_str().unwrap(), "other"],
            )];
            for verb in [
                &["start", "other"][..],
                &["kill", "other", "KILL"],
                &["delete", "--force", "other"],
            ] {
                if outs.last().is_some_and(Out::ok) {
                    outs.push(nv(&env, verb));
                }
            }
            outs
        });
        // Bounded by the calls' own timeout: with one lock for the root the other create
        // waits for the gate, which only opens after this wait.
        let deadline = Instant::now() + timeout();
        while !lifecycle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let other_done = lifecycle.is_finished();
        let same_done = same.is_finished();
        let st = checked_state(&env, "held")
            .unwrap()
            .expect("held: no container");
        gate.open();
        let create = create.join().unwrap();
        let same = same.join().unwrap();
        let outs = lifecycle.join().unwrap();
        assert!(
            other_done,
            "another ID's create/start/kill/delete waited for the held create"
        );
        for out in &outs {
            assert!(out.ok(), "{}", out.describe());
        }
        assert_eq!(outs.len(), 4);
        assert_eq!(st["status"], "creating", "held while the other ran: {st}");
        assert!(
            !same_done,
            "a second create of the held ID did not wait for the first: {}",
            same.describe()
        );
        assert!(create.ok(), "{}", create.describe());
        assert!(same.unclean().is_none(), "{}", same.describe());
        assert!(
            !same.ok() && same.stderr.contains("already exists"),
            "{}",
            same.describe()
        );
    });
    let st = checked_state(&env, "held")
        .unwrap()
        .expect("held: no container");
    assert_eq!(st["status"], "created");
    assert!(nv(&env, &["delete", "--force", "held"]).ok());
    drop(gate);
    env.assert_clean();
    assert_no_strays(&env, &bundles.marker, &[]);
}

/// Many creates of one ID at the same moment: exactly one makes the container, every other
/// fails in one line saying it exists, and nothing of the losers is left (no second cgroup,
/// process or record); then creates of as many different IDs at once all succeed.
#[test]
fn creates_of_one_id_at_once_make_exactly_one_container() {
    let _turn = serial();
    let env = Env::new();
    let bundles = Bundles::new(&env, 7);
    let racers = count("NVBIND_LOAD_SAME_ID", 8);
    let rounds = 3;
    let tally = Tally::default();
    let bundle: Vec<PathBuf> = (0..racers)
        .map(|i| bundles.make(&env, &format!("racer{i}")))
        .collect();
    for round in 0..rounds {
        let won = AtomicUsize::new(0);
        parallel(racers, racers, |i| {
            let out = nv(&env, &["create", "-b", bundle[i].to_str().unwrap(), "same"]);
            tally.record(&env, &out);
            if out.ok() {
                won.fetch_add(1, Ordering::SeqCst);
            } else if !out.stderr.contains("already exists") {
                tally.fail(format!("round {round}: {}", out.describe()));
            }
        });
        assert_eq!(won.load(Ordering::SeqCst), 1, "round {round}: winners");
        let st = checked_state(&env, "same").unwrap().expect("no container");
        assert_eq!(st["status"], "created", "round {round}: {st}");
        assert_eq!(checked_list_json(&env).unwrap().len(), 1, "round {round}");
        // The winner's init is in the winner's cgroup, and the only process of ours.
        let pid = st["pid"].as_i64().unwrap();
        assert_no_strays(&env, &bundles.marker, &[pid]);
        let out = nv(&env, &["delete", "--force", "same"]);
        assert!(out.ok(), "{}", out.describe());
    }
    parallel(racers, racers, |i| {
        let out = nv(
            &env,
            &[
                "create",
                "-b",
                bundle[i].to_str().unwrap(),
                &format!("racer{i}"),
            ],
        );
        if !out.ok() {
            tally.fail(format!("different IDs: {}", out.describe()));
        }
    });
    assert_eq!(checked_list_json(&env).unwrap().len(), racers);
    parallel(racers, racers, |i| {
        let out = nv(&env, &["delete", "--force", &format!("racer{i}")]);
        if !out.ok() {
            tally.fail(out.describe());
        }
    });
    print_errors(&tally);
    assert!(tally.failures().is_empty(), "{:#?}", tally.failures());
    env.assert_clean();
    assert_no_strays(&env, &bundles.marker, &[]);
}
