//! `events`: runc's event stream. Each line is one JSON object, `{"type":"stats","id":ID,
//! "data":{...}}` every --interval and `{"type":"oom","id":ID}` when the kernel's OOM killer
//! acted in the container's memory cgroup; the stream ends when the container stops or is
//! deleted. `--stats` prints one stats line and returns.

use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager as _;
use libcontainer::container::{Container, ContainerStatus};

use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Time between stats lines, as runc takes it: a duration such as 5s, 100ms, 1m30s (a bare
    /// number is seconds)
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Print one stats line and exit
    #[arg(long)]
    pub stats: bool,
    /// Container ID
    pub id: String,
}

/// A Go duration (time.ParseDuration: "300ms", "1.5h", "2h45m"), which runc's --interval is;
/// a bare number is taken as seconds, as nvbind's --interval took it before.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (such as 5s, 100ms or 1m30s)");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// How often the OOM counter is read between stats lines: an OOM shows within this.
const OOM_POLL: Duration = Duration::from_millis(200);

pub fn run(args: &EventsArgs, ctx: &Ctx) -> Result<()> {
    if args.interval.is_zero() {
        bail!("--interval must be more than 0");
    }
    let c = ctx.load(&args.id)?;
    crate::rootless::require_cgroup(&c)?;
    if c.status() != ContainerStatus::Running {
        bail!(
            "container {:?} is not running; events reads a running container",
            args.id
        );
    }
    if args.stats {
        return print_stats(&c, ctx);
    }
    let oom_file = c.init_pid().and_then(|pid| oom_counter(pid.as_raw()));
    let mut ooms = oom_file.as_ref().and_then(read_oom_kills).unwrap_or(0);
    let mut next_stats = Instant::now();
    loop {
        // The stream ends with the container, as runc's does.
        let c = match ctx.load(&args.id) {
            Ok(c)
                if matches!(
                    c.status(),
                    ContainerStatus::Running | ContainerStatus::Paused
                ) =>
            {
                c
            }
            _ => return Ok(()),
        };
        if let Some(n) = oom_file.as_ref().and_then(read_oom_kills) {
            if n > ooms {
                println!("{}", envelope("oom", &args.id, None));
            }
            ooms = n;
        }
        if Instant::now() >= next_stats {
            if let Err(e) = print_stats(&c, ctx) {
                // A container deleted between the load and the read is the end, not an error.
                if ctx.load(&args.id).is_err() {
                    return Ok(());
                }
                return Err(e);
            }
            next_stats += args.interval;
        }
        thread::sleep(OOM_POLL.min(next_stats.saturating_duration_since(Instant::now())));
    }
}

fn print_stats(c: &Container, ctx: &Ctx) -> Result<()> {
    let stats = ctx
        .cgroup_manager(c)?
        .stats()
        .with_context(|| format!("cannot read the cgroup stats of {:?}", c.id()))?;
    let data = serde_json::to_string(&stats).context("cannot encode the cgroup stats")?;
    println!("{}", envelope("stats", c.id(), Some(&data)));
    Ok(())
}

/// One event line with runc's key order, type first: consumers (and runc's events.bats)
/// match the line's start, and serde_json's map would sort the keys.
fn envelope(kind: &str, id: &str, data: Option<&str>) -> String {
    let id = serde_json::Value::from(id);
    match data {
        Some(data) => format!(r#"{{"type":"{kind}","id":{id},"data":{data}}}"#),
        None => format!(r#"{{"type":"{kind}","id":{id}}}"#),
    }
}

/// The file whose `oom_kill` count grows each time the OOM killer acts in the cgroup of PID:
/// memory.oom_control of the v1 memory controller, or memory.events on a unified host.
fn oom_counter(pid: i32) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let unified = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    text.lines().find_map(|line| {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let path = path.trim_start_matches('/');
        if unified && controllers.is_empty() {
            Some(
                PathBuf::from("/sys/fs/cgroup")
                    .join(path)
                    .join("memory.events"),
            )
        } else if !unified && controllers.split(',').any(|c| c == "memory") {
            Some(
                PathBuf::from("/sys/fs/cgroup/memory")
                    .join(path)
                    .join("memory.oom_control"),
            )
        } else {
            None
        }
    })
}

fn read_oom_kills(file: &PathBuf) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_go_durations() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("1s"), Ok(1000));
        assert_eq!(ms("100ms"), Ok(100));
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms("1.5h"), Ok(5_400_000));
        assert_eq!(ms("5"), Ok(5000));
        assert_eq!(ms("250us"), Ok(0));
        for bad in ["", "s", "5x", "1s5", "-1s", "1..5s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn event_lines_start_with_the_type_as_runcs() {
        assert_eq!(
            envelope("oom", "c\"1", None),
            r#"{"type":"oom","id":"c\"1"}"#
        );
        let line = envelope("stats", "c1", Some(r#"{"pids":{"current":1}}"#));
        assert!(
            line.starts_with(r#"{"type":"stats","id":"c1","data":{"#),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["data"]["pids"]["current"], 1);
    }

    #[test]
    fn oom_kills_are_read_from_the_counter_file() {
        let dir = std::env::temp_dir().join(format!("nvbind-events-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("memory.oom_control");
        fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        assert_eq!(read_oom_kills(&f), Some(3));
        fs::write(&f, "low 0\nhigh 0\nmax 2\noom 2\noom_kill 1\n").unwrap();
        assert_eq!(read_oom_kills(&f), Some(1));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read_oom_kills(&f), None);
    }
}
