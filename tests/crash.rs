//! Crash consistency: `nvbind create`, `start`, `exec`, `delete` and `checkpoint` are killed
//! with SIGKILL at random moments; after every kill `list` and `state` must still answer and
//! `nvbind delete --force ID` must leave no state entry, cgroup directory (any controller),
//! mount under the test's directory, container process or CRIU staging directory behind.
//!
//! The kill delays come from a seeded generator (printed; NVBIND_CRASH_SEED replays a run) and
//! are spread over the first 50 ms, three in four of them inside the window where the verb
//! actually works (measured first). NVBIND_CRASH_TRIALS sets the total number of trials,
//! shared among the verbs. Each verb prints one summary line; a leak fails the test with the
//! trial, the delay and what was left.
//!
//! The test process makes itself a child subreaper, so whatever a killed nvbind forked (the
//! container's init, CRIU) is re-parented to it and found by the process scan. All tests in
//! this file take turns, because that scan reaps zombie children with waitpid(-1).

mod common;
#[path = "crash/leaks.rs"]
mod leaks;
#[path = "crash/state_files.rs"]
mod state_files;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use common::{criu, Env, NVBIND};
use leaks::{Cleanup, Leaks};
use serde_json::json;

const DEFAULT_SEED: u64 = 0x6e76_6269_6e64_0009;
const DEFAULT_TRIALS: usize = 200;
const WINDOW: Duration = Duration::from_millis(50);

static TURN: Mutex<()> = Mutex::new(());
static SUBREAPER: Once = Once::new();

fn take_turn() -> MutexGuard<'static, ()> {
    SUBREAPER.call_once(|| {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "cannot become a child subreaper");
    });
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// splitmix64: small, seedable, good enough to spread delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, max).
    fn below(&mut self, max: Duration) -> Duration {
        let us = max.as_micros().max(1) as u64;
        Duration::from_micros(self.next() % us)
    }
}

fn seed() -> u64 {
    match std::env::var("NVBIND_CRASH_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("NVBIND_CRASH_SEED={s:?} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// This verb's share of NVBIND_CRASH_TRIALS (default 200 in all).
fn trials(share_percent: usize) -> usize {
    let total = std::env::var("NVBIND_CRASH_TRIALS")
        .ok()
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .unwrap_or_else(|_| panic!("NVBIND_CRASH_TRIALS={s:?} is not a number"))
        })
        .unwrap_or(DEFAULT_TRIALS);
    (total * share_percent).div_ceil(100).max(1)
}

/// One verb under test: what to set up before the verb, and the verb's arguments.
struct Verb<'a> {
    name: &'static str,
    share_percent: usize,
    env: &'a Env,
    bundle: PathBuf,
    criu: Option<PathBuf>,
    /// Brings container `id` to the state the verb expects.
    prepare: &'a dyn Fn(&Env, &Path, &str, usize),
    /// The verb's arguments for trial `n`.
    args: &'a dyn Fn(&Path, &str, usize) -> Vec<String>,
    /// Where CRIU writes images and stages a dump (removed between trials; nvbind's work
    /// files there are leftovers, as they are in the bundle).
    image_dir: Option<PathBuf>,
    /// Other bundles the verb's trials use.
    more_bundles: Vec<PathBuf>,
}

#[derive(Default)]
struct Tally {
    trials: usize,
    killed: usize,
    exited_ok: usize,
    exited_err: Vec<String>,
    /// What each leaking trial left (one line per problem).
    leaks: Vec<String>,
    leaky_trials: usize,
}

impl Verb<'_> {
    /// nvbind with this test's root (and CRIU), output to a file; returns the child.
    fn spawn(&self, args: &[String], log: &Path) -> std::process::Child {
        let mut cmd = Command::new(NVBIND);
        cmd.arg("--root").arg(&self.env.root);
        if let Some(c) = &self.criu {
            cmd.arg("--criu").arg(c);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(log.with_extension("out")).unwrap())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .expect("cannot run nvbind")
    }

    /// The verb's duration when left alone: the median of five runs after a warm-up run
    /// (the first one pays for cold caches).
    fn measure(&self) -> Duration {
        let mut times = Vec::new();
        for n in 0..6 {
            let id = format!("{}-measure-{n}", self.name);
            (self.prepare)(self.env, &self.bundle, &id, n);
            let log = self.env.dir.path().join("measure.err");
            let started = Instant::now();
            let status = self.spawn(&(self.args)(&self.bundle, &id, n), &log).wait();
            times.push(started.elapsed());
            assert!(
                status.as_ref().is_ok_and(|s| s.success()),
                "{} {id} failed when not killed: {}",
                self.name,
                fs::read_to_string(&log).unwrap_or_default()
            );
            self.env.ok(&["delete", "--force", &id]);
            self.clean_images();
        }
        times.remove(0);
        times.sort();
        times[2]
    }

    fn clean_images(&self) {
        if let Some(d) = &self.image_dir {
            let _ = fs::remove_dir_all(d);
        }
    }

    fn run(&self) -> Tally {
        let n = trials(self.share_percent);
        let seed = seed();
        let verb_seed = seed
            ^ self
                .name
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31) + b as u64);
        let mut rng = Rng(verb_seed);
        let duration = self.measure();
        // Where the verb works: its measured duration (a little more, for a slower moment).
        let busy = duration.mul_f64(1.2);
        println!(
            "{}: takes {} ms when left alone; seed {seed:#x}; {n} trials, 3 in 4 killed within \
             {} ms, the rest within {} ms",
            self.name,
            duration.as_millis(),
            busy.as_millis(),
            WINDOW.max(busy).as_millis()
        );
        let mut tally = Tally::default();
        for trial in 0..n {
            let delay = if rng.next() % 4 == 0 {
                rng.below(WINDOW.max(busy))
            } else {
                rng.below(busy)
            };
            self.trial(trial, delay, &mut tally);
        }
        println!(
            "{}: {} trials, {} killed mid-command, {} finished first ({} of them failing), {} \
             leaks",
            self.name,
            tally.trials,
            tally.killed,
            tally.exited_ok + tally.exited_err.len(),
            tally.exited_err.len(),
            tally.leaky_trials
        );
        for e in tally.exited_err.iter().take(5) {
            println!("  finished with an error: {e}");
        }
        tally
    }

    fn trial(&self, trial: usize, delay: Duration, tally: &mut Tally) {
        let id = format!("{}-{trial}", self.name);
        // A cgroup of its own per trial: whatever is left names the trial that left it.
        let cgroup = format!("/{}-{id}", self.env.cgroup_prefix);
        for b in std::iter::once(&self.bundle).chain(&self.more_bundles) {
            self.env
                .edit(b, |c| c["linux"]["cgroupsPath"] = json!(cgroup));
        }
        (self.prepare)(self.env, &self.bundle, &id, trial);
        // nvbind never writes the engine's bundle: after the trial, every bundle must be
        // byte for byte as it is now (config.json, and the entries beside it).
        let pristine: Vec<(PathBuf, Fingerprint)> = std::iter::once(&self.bundle)
            .chain(&self.more_bundles)
            .map(|b| (b.clone(), fingerprint(b)))
            .collect();
        let log = self.env.dir.path().join("trial.err");
        let mut child = self.spawn(&(self.args)(&self.bundle, &id, trial), &log);
        std::thread::sleep(delay);
        // SAFETY: kill(2) on our own child, which is not reaped yet (its pid is still ours).
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().expect("cannot wait for nvbind");
        tally.trials += 1;
        if status.signal() == Some(libc::SIGKILL) {
            tally.killed += 1;
        } else if status.success() {
            tally.exited_ok += 1;
        } else {
            tally.exited_err.push(format!(
                "trial {trial} ({status:?}): {}",
                fs::read_to_string(&log).unwrap_or_default().trim()
            ));
        }
        let what = format!(
            "{} trial {trial} (killed after {:.1} ms, {})",
            self.name,
            delay.as_secs_f64() * 1000.0,
            if status.signal() == Some(libc::SIGKILL) {
                "mid-command"
            } else {
                "after it finished"
            }
        );
        let mut problems = self.after_kill(&id);
        for (b, before) in &pristine {
            let now = fingerprint(b);
            if now.config != before.config {
                problems.push(format!("{}/config.json was changed", b.display()));
            }
            if now.entries != before.entries {
                problems.push(format!(
                    "the bundle {} changed: {:?} -> {:?}",
                    b.display(),
                    before.entries,
                    now.entries
                ));
            }
        }
        if !problems.is_empty() {
            tally.leaky_trials += 1;
        }
        for problem in problems {
            tally.leaks.push(format!("{what}: {problem}"));
        }
        self.clean_images();
    }

    /// What a supervisor does after the crash: list, state, delete --force; then the leak
    /// check. Returns the problems found (and removes what leaked, so the next trial starts
    /// clean).
    fn after_kill(&self, id: &str) -> Vec<String> {
        let env = self.env;
        let mut problems = Vec::new();
        let list = env.nvbind(&["list", "--format", "json"]);
        if !list.status.success()
            || serde_json::from_slice::<serde_json::Value>(&list.stdout).is_err()
        {
            problems.push(format!(
                "`list` failed: {}",
                String::from_utf8_lossy(&list.stderr).trim()
            ));
        }
        let state = env.nvbind(&["state", id]);
        let state_err = String::from_utf8_lossy(&state.stderr).into_owned();
        let state_ok = if state.status.success() {
            serde_json::from_slice::<serde_json::Value>(&state.stdout).is_ok()
        } else {
            state.status.code() == Some(1) && state_err.trim_end().lines().count() == 1
        };
        if !state_ok {
            problems.push(format!("`state` broke ({:?}): {state_err:?}", state.status));
        }
        let del = env.nvbind(&["delete", "--force", id]);
        if !del.status.success() {
            problems.push(format!(
                "`delete --force` failed: {}",
                String::from_utf8_lossy(&del.stderr).trim()
            ));
        }
        let mut watch = vec![self.bundle.as_path()];
        watch.extend(self.image_dir.as_deref());
        let mut leaks = Leaks::find(env, &watch);
        // A process killed by delete may need a moment to be gone from /proc.
        for _ in 0..20 {
            if leaks.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            leaks = Leaks::find(env, &watch);
        }
        if !leaks.is_empty() {
            problems.push(leaks.describe());
            leaks.remove(env);
        }
        // Written atomically (NVBIND-PATCHES.md #22): absent, or a whole pid.
        let pid_file = self.bundle.with_file_name(format!("{id}.pid"));
        if let Ok(text) = fs::read_to_string(&pid_file) {
            if text.trim().parse::<u32>().is_err() {
                problems.push(format!("the pid file holds {text:?}"));
            }
            let _ = fs::remove_file(&pid_file);
        }
        problems
    }
}

/// A bundle as nvbind must leave it: config.json's bytes and the names beside it (the
/// rootfs's contents are the container's to change).
#[derive(PartialEq, Eq)]
struct Fingerprint {
    config: Vec<u8>,
    entries: Vec<String>,
}

fn fingerprint(bundle: &Path) -> Fingerprint {
    let mut entries: Vec<String> = fs::read_dir(bundle)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    Fingerprint {
        config: fs::read(bundle.join("config.json")).unwrap_or_default(),
        entries,
    }
}

fn assert_no_leaks(tally: &Tally) {
    assert!(
        tally.leaks.is_empty(),
        "{} of {} trials leaked:\n{}",
        tally.leaky_trials,
        tally.trials,
        tally.leaks.join("\n")
    );
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A CDI spec dir describing one fake GPU (a device node made with mknod).
fn fake_gpu(env: &Env) -> PathBuf {
    let dev = env.dir.path().join("host");
    fs::create_dir_all(&dev).unwrap();
    let node = dev.join("nvidia0");
    let made = Command::new("mknod")
        .args(["-m", "666"])
        .arg(&node)
        .args(["c", "195", "0"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod needs root");
    let spec_dir = env.dir.path().join("cdi");
    fs::create_dir_all(&spec_dir).unwrap();
    let yaml = format!(
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    \
         deviceNodes:\n    - path: /dev/nvidia0\n      hostPath: {}\n",
        node.display()
    );
    fs::write(spec_dir.join("nvidia.yaml"), yaml).unwrap();
    spec_dir
}

fn no_prep(_: &Env, _: &Path, _: &str, _: usize) {}

fn created(env: &Env, b: &Path, id: &str, _: usize) {
    env.ok(&["create", "-b", &s(b), id]);
}

fn running(env: &Env, b: &Path, id: &str, n: usize) {
    created(env, b, id, n);
    env.ok(&["start", id]);
}

#[test]
fn create_killed_at_random_moments_leaves_nothing() {
    let _turn = take_turn();
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let bundle = env.bundle("create", &["sleep", "1000"]);
    // Every other trial asks for a (fake) GPU: the CDI edits go to libcontainer in memory,
    // and the bundle must stay byte-identical whenever the create is killed.
    let gpu = env.bundle("create-gpu", &["sleep", "1000"]);
    env.edit(&gpu, |c| {
        c["annotations"] = json!({"cdi.k8s.io/crash": "nvidia.com/gpu=0"})
    });
    let cdi = fake_gpu(&env);
    let verb = Verb {
        name: "create",
        share_percent: 25,
        env: &env,
        bundle,
        criu: None,
        prepare: &no_prep,
        args: &|b, id, n| {
            let pid_file = b.with_file_name(format!("{id}.pid"));
            let mut args = vec![];
            let mut b = b.to_path_buf();
            if n % 2 == 1 {
                args.push(format!("--cdi-spec-dir={}", cdi.display()));
                b = b.with_file_name("create-gpu");
            }
            args.extend(strings(&[
                "create",
                "--pid-file",
                &s(&pid_file),
                "-b",
                &s(&b),
                id,
            ]));
            args
        },
        image_dir: None,
        more_bundles: vec![gpu.clone()],
    };
    let tally = verb.run();
    // The GPU trials did go through injection: a created GPU container has the node.
    let id = "gpu-check";
    let flag = format!("--cdi-spec-dir={}", cdi.display());
    env.ok(&[&flag, "create", "-b", &s(&gpu), id]);
    let saved = fs::read_to_string(env.root.join(id).join("config.json")).unwrap();
    env.ok(&["delete", "--force", id]);
    assert!(saved.contains("/dev/nvidia0"), "no CDI edits in {saved}");
    assert_no_leaks(&tally);
}

/// A create from a snapshot: the rootfs is an overlay clone of a base, mounted in the
/// bundle's `.nvbind-clones/ID/`, recorded in the root's `.nvbind-clones/ID.json`.
#[test]
fn create_from_a_snapshot_killed_at_random_moments_leaves_nothing() {
    let _turn = take_turn();
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let bundle = env.bundle("clone", &["sleep", "1000"]);
    env.edit(&bundle, |c| {
        c["annotations"] = json!({"org.nvbind.snapshot.from": "./rootfs"})
    });
    let verb = Verb {
        name: "create-from-snapshot",
        share_percent: 10,
        env: &env,
        bundle,
        criu: None,
        prepare: &no_prep,
        args: &|b, id, _| strings(&["create", "-b", &s(b), id]),
        image_dir: None,
        more_bundles: vec![],
    };
    assert_no_leaks(&verb.run());
}

#[test]
fn start_killed_at_random_moments_leaves_nothing() {
    let _turn = take_turn();
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let bundle = env.bundle("start", &["sleep", "1000"]);
    let verb = Verb {
        name: "start",
        share_percent: 20,
        env: &env,
        bundle,
        criu: None,
        prepare: &created,
        args: &|_, id, _| strings(&["start", id]),
        image_dir: None,
        more_bundles: vec![],
    };
    assert_no_leaks(&verb.run());
}

#[test]
fn exec_killed_at_random_moments_leaves_nothing() {
    let _turn = take_turn();
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let bundle = env.bundle("exec", &["sleep", "1000"]);
    let verb = Verb {
        name: "exec",
        share_percent: 20,
        env: &env,
        bundle,
        criu: None,
        prepare: &running,
        // Half detached (nvbind returns once the process runs), half waiting for `true`.
        args: &|_, id, n| {
            if n % 2 == 0 {
                strings(&["exec", "-d", id, "sleep", "1000"])
            } else {
                strings(&["exec", id, "true"])
            }
        },
        image_dir: None,
        more_bundles: vec![],
    };
    assert_no_leaks(&verb.run());
}

#[test]
fn delete_killed_at_random_moments_leaves_nothing() {
    let _turn = take_turn();
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let bundle = env.bundle("delete", &["sleep", "1000"]);
    let verb = Verb {
        name: "delete",
        share_percent: 10,
        env: &env,
        bundle,
        criu: None,
        // Half running, half created (its init waiting for start).
        prepare: &|env, b, id, n| {
            if n % 2 == 0 {
                running(env, b, id, n)
            } else {
                created(env, b, id, n)
            }
        },
        args: &|_, id, _| strings(&["delete", "--force", id]),
        image_dir: None,
        more_bundles: vec![],
    };
    assert_no_leaks(&verb.run());
}

#[test]
fn checkpoint_killed_at_random_moments_leaves_nothing() {
    let Some(criu_path) = criu::working_criu() else {
        println!("checkpoint: skipped, no working CRIU (scripts/setup-criu installs one)");
        return;
    };
    let _turn = take_turn();
    let env = Env::new();
    let _cleanup = Cleanup(&env);
    let bundle = env.bundle("checkpoint", &["sleep", "1000"]);
    env.edit(&bundle, |c| c["root"]["readonly"] = json!(false));
    let images = env.dir.path().join("images");
    let keep = Mutex::new(Vec::new());
    let criu_for_prep = criu_path.clone();
    let prep = move |env: &Env, b: &Path, id: &str, _: usize| {
        let mut keep = keep.lock().unwrap();
        criu::detached(
            env,
            &criu_for_prep,
            &["run", "-d", "-b", &s(b), id],
            &mut keep,
        );
        // The pipes of earlier trials' containers are no longer needed.
        let len = keep.len();
        if len > 2 {
            keep.drain(..len - 2);
        }
    };
    let images_arg = images.clone();
    let verb = Verb {
        name: "checkpoint",
        share_percent: 15,
        env: &env,
        bundle,
        criu: Some(criu_path),
        prepare: &prep,
        // Half leave the container running after the dump, half let CRIU kill it.
        args: &|_, id, n| {
            let mut a = strings(&["checkpoint", "--image-path", &s(&images_arg)]);
            if n % 2 == 1 {
                a.push("--leave-running".into());
            }
            a.push(id.into());
            a
        },
        image_dir: Some(images),
        more_bundles: vec![],
    };
    assert_no_leaks(&verb.run());
}
