use std::fs;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder,
};

use crate::lifecycle::guard::{ensure, Action};
use crate::state_root::Ctx;

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// JSON file with an OCI linux.resources object ("-" reads stdin); other flags are ignored
    #[arg(short, long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes (suffixes k, m, g accepted; -1 for unlimited)
    #[arg(long, value_parser = parse_bytes, allow_hyphen_values = true)]
    pub memory: Option<i64>,
    /// Memory + swap limit in bytes (-1 for unlimited)
    #[arg(long, value_parser = parse_bytes, allow_hyphen_values = true)]
    pub memory_swap: Option<i64>,
    /// Memory soft limit in bytes (-1 for none)
    #[arg(long, value_parser = parse_bytes, allow_hyphen_values = true)]
    pub memory_reservation: Option<i64>,
    /// CPU CFS period in microseconds
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds (-1 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight); runc spells it --cpu-share
    #[arg(long = "cpu-share", visible_alias = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPU realtime period in microseconds
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in microseconds (the time allowed in each period)
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs allowed, e.g. 0-3,5
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed, e.g. 0
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes (-1 or 0 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block IO weight (10-1000)
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// Container ID
    pub id: String,
}

pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (bytes, or a number with k/m/g)"))?;
    if n == -1 {
        return Ok(-1);
    }
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn resources_from_flags(a: &UpdateArgs) -> Result<LinuxResources> {
    let mut r = LinuxResourcesBuilder::default();
    if a.memory.is_some() || a.memory_swap.is_some() || a.memory_reservation.is_some() {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(v) = a.memory {
            m = m.limit(v);
        }
        if let Some(v) = a.memory_swap {
            m = m.swap(v);
        }
        if let Some(v) = a.memory_reservation {
            m = m.reservation(v);
        }
        r = r.memory(m.build()?);
    }
    if a.cpu_period.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_shares.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some()
    {
        let mut c = LinuxCpuBuilder::default();
        if let Some(v) = a.cpu_period {
            c = c.period(v);
        }
        if let Some(v) = a.cpu_quota {
            c = c.quota(v);
        }
        if let Some(v) = a.cpu_shares {
            c = c.shares(v);
        }
        if let Some(v) = a.cpu_rt_period {
            c = c.realtime_period(v);
        }
        if let Some(v) = a.cpu_rt_runtime {
            c = c.realtime_runtime(v);
        }
        if let Some(v) = &a.cpuset_cpus {
            c = c.cpus(v.clone());
        }
        if let Some(v) = &a.cpuset_mems {
            c = c.mems(v.clone());
        }
        r = r.cpu(c.build()?);
    }
    if let Some(v) = a.pids_limit {
        r = r.pids(LinuxPidsBuilder::default().limit(v).build()?);
    }
    if let Some(v) = a.blkio_weight {
        if !(10..=1000).contains(&v) {
            bail!("--blkio-weight {v} is out of range (10-1000)");
        }
        r = r.block_io(LinuxBlockIoBuilder::default().weight(v).build()?);
    }
    Ok(r.build()?)
}

fn resources_from_file(path: &PathBuf) -> Result<LinuxResources> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
    } else {
        text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    // keys matched as runc's Go decoder matches them (`pageSize` or `pagesize`)
    let r: LinuxResources = serde_json::from_str(&text)
        .and_then(nvbind::gojson::from_value)
        .with_context(|| format!("{} is not an OCI linux.resources object", path.display()))?;
    Ok(zero_means_unchanged(r))
}

/// A resources file as runc's `update --resources` reads it: a zero is "leave as it is" (runc
/// decodes into Go values where absent and 0 are one, and its cgroup managers write only what is
/// non-zero), and kernel memory is ignored (runc 1.1 warns; cgroup v2 has none). Engines count on
/// it: Docker 20.10's `docker update --memory 128m` sends `"reservation": 0, "kernel": 0` and
/// zero CPU values beside the limit, which libcgroups refused ("invalid memory reservation value:
/// 0" from the systemd driver) or would write (a memory.max of 0).
fn zero_means_unchanged(mut r: LinuxResources) -> LinuxResources {
    fn nz<T: Default + PartialEq>(v: Option<T>) -> Option<T> {
        v.filter(|v| *v != T::default())
    }
    if let Some(m) = r.memory_mut() {
        m.set_limit(nz(m.limit()));
        m.set_reservation(nz(m.reservation()));
        m.set_swap(nz(m.swap()));
        #[allow(deprecated)]
        {
            m.set_kernel(None);
            m.set_kernel_tcp(None);
        }
    }
    if let Some(c) = r.cpu_mut() {
        c.set_shares(nz(c.shares()));
        c.set_quota(nz(c.quota()));
        c.set_period(nz(c.period()));
        c.set_realtime_period(nz(c.realtime_period()));
        c.set_realtime_runtime(nz(c.realtime_runtime()));
        c.set_cpus(nz(c.cpus().clone()));
        c.set_mems(nz(c.mems().clone()));
    }
    if r.pids().is_some_and(|p| p.limit() == 0) {
        r.set_pids(None);
    }
    if let Some(b) = r.block_io_mut() {
        b.set_weight(nz(b.weight()));
    }
    r
}

pub fn run(args: &UpdateArgs, ctx: &Ctx) -> Result<()> {
    let resources = match &args.resources {
        Some(p) => resources_from_file(p)?,
        None => resources_from_flags(args)?,
    };
    let (_lock, c) = ctx.load_locked(&args.id)?;
    ensure(&c, Action::Update)?;
    ctx.cgroup_manager(&c)?
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
            // runc's update sets SkipDevices too: it cannot change the device rules, and the
            // filter the container got at create (with what CDI added) stays as it is.
            skip_devices: true,
        })
        .with_context(|| format!("cannot update the cgroup of {:?}", args.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("2kb").unwrap(), 2048);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999t").is_err());
    }

    /// What Docker 20.10's `docker update --memory 128m --memory-swap 256m` hands the runtime
    /// (zeros for every value not given): only the limit and the swap are left to apply.
    #[test]
    fn zeros_in_a_resources_file_leave_the_values_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        fs::write(
            &path,
            r#"{"memory":{"limit":134217728,"reservation":0,"swap":268435456,"kernel":0},
                "cpu":{"shares":0,"quota":0,"period":0,"realtimeRuntime":0,"realtimePeriod":0,
                "cpus":"","mems":""},"pids":{"limit":0},"blockIO":{"weight":0}}"#,
        )
        .unwrap();
        let r = resources_from_file(&path).unwrap();
        let m = r.memory().unwrap();
        assert_eq!(
            (m.limit(), m.reservation(), m.swap()),
            (Some(134217728), None, Some(268435456))
        );
        #[allow(deprecated)]
        let kernel = m.kernel();
        assert_eq!(kernel, None);
        let c = r.cpu().clone().unwrap();
        assert_eq!(c, LinuxCpuBuilder::default().build().unwrap());
        assert!(r.pids().is_none());
        assert_eq!(r.block_io().as_ref().and_then(|b| b.weight()), None);
        // Values that mean something stay: -1 (unlimited) and real numbers.
        fs::write(
            &path,
            r#"{"memory":{"limit":-1,"reservation":1048576},"cpu":{"quota":-1,"cpus":"0"},"pids":{"limit":-1}}"#,
        )
        .unwrap();
        let r = resources_from_file(&path).unwrap();
        let m = r.memory().unwrap();
        assert_eq!((m.limit(), m.reservation()), (Some(-1), Some(1048576)));
        let c = r.cpu().clone().unwrap();
        assert_eq!((c.quota(), c.cpus().as_deref()), (Some(-1), Some("0")));
        assert_eq!(r.pids().unwrap().limit(), -1);
    }

    /// runc's spellings (issue 15, update.bats): `--memory -1` is unlimited, not an unknown
    /// option, and CPU shares are `--cpu-share` (`--cpu-shares` kept as an alias).
    #[test]
    fn runcs_flags_parse() {
        #[derive(clap::Parser)]
        struct Cmd {
            #[command(flatten)]
            a: UpdateArgs,
        }
        let parse = |args: &[&str]| {
            <Cmd as clap::Parser>::try_parse_from(
                std::iter::once("update").chain(args.iter().copied()),
            )
            .map(|c| c.a)
        };
        let a = parse(&["--memory", "-1", "--memory-reservation", "-1", "c"]).unwrap();
        assert_eq!((a.memory, a.memory_reservation), (Some(-1), Some(-1)));
        for flag in ["--cpu-share", "--cpu-shares"] {
            let a = parse(&[flag, "200", "c"]).unwrap();
            assert_eq!(a.cpu_shares, Some(200));
        }
        let a = parse(&[
            "--cpu-rt-period",
            "900001",
            "--cpu-rt-runtime",
            "600001",
            "c",
        ])
        .unwrap();
        let r = resources_from_flags(&a).unwrap();
        let cpu = r.cpu().clone().unwrap();
        assert_eq!(
            (cpu.realtime_period(), cpu.realtime_runtime()),
            (Some(900001), Some(600001))
        );
        assert!(parse(&["--memory", "-2x", "c"]).is_err());
    }
}
