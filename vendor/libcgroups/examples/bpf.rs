use anyhow::Result;

#[cfg(feature = "cgroupsv2_devices")]
mod bpf {
    use std::os::fd::{AsFd, OwnedFd};
    use std::path::Path;

    use anyhow::{Result, bail};
    use clap::{Arg, Command};
    use libcgroups::devices::{Emulator, Origin};
    use libcgroups::v2::devices::{bpf, program};
    use oci_spec::runtime::LinuxDeviceCgroup;

    // nvbind: bpf(2) is issued by libcgroups itself now (no libbpf-sys): descriptors are
    // OwnedFd, and query returns program ids.
    const LICENSE: &std::ffi::CStr = c"Apache";
    fn cli() -> Command {
        clap::Command::new("bpf")
            .version("0.1")
            .about("tools to test BPF program for cgroups v2 devices")
            .arg(Arg::new("cgroup_dir").short('c').value_name("CGROUP_DIR"))
            .subcommand(
                Command::new("query").about("query list of BPF programs attached to cgroup dir"),
            )
            .subcommand(
                Command::new("detach")
                    .about("detach BPF program by id")
                    .arg(
                        Arg::new("id")
                            .value_name("PROG_ID")
                            .required(true)
                            .help("ID of BPF program returned by query command"),
                    ),
            )
            .subcommand(
                Command::new("attach")
                    .about("compile rules to BPF and attach to cgroup dir")
                    .arg(
                        Arg::new("input_file")
                            .value_name("INPUT_FILE")
                            .required(true)
                            .help("File contains Vec<LinuxDeviceCgroup> in json format"),
                    ),
            )
    }

    fn parse_cgroupv1_device_rules<P: AsRef<Path>>(path: P) -> Result<Vec<LinuxDeviceCgroup>> {
        let content = std::fs::read_to_string(path)?;
        let devices = serde_json::from_str(&content)?;
        Ok(devices)
    }

    pub fn run() -> Result<()> {
        let matches = cli().get_matches();
        let cgroup_dir = matches.get_one::<String>("cgroup_dir").unwrap();
        let cgroup_fd: OwnedFd = std::fs::File::open(cgroup_dir)?.into();
        match matches.subcommand() {
            Some(("query", _)) => {
                let (ids, flags) = bpf::query(cgroup_fd.as_fd())?;
                for id in &ids {
                    println!("prog: id={id}, attach flags={flags}");
                }
            }
            Some(("detach", submatch)) => {
                let prog_id = submatch.get_one::<String>("id").unwrap().parse::<u32>()?;
                let (ids, _) = bpf::query(cgroup_fd.as_fd())?;
                if !ids.contains(&prog_id) {
                    bail!("no program {prog_id} on this cgroup");
                }
                let prog = bpf::prog_by_id(prog_id)?;
                bpf::detach(cgroup_fd.as_fd(), prog.as_fd())?;
                println!("detach ok");
            }
            Some(("attach", submatch)) => {
                let input_file = submatch.get_one::<String>("input_file").unwrap();
                let rules = parse_cgroupv1_device_rules(input_file)?;
                let mut emulator = Emulator::default();
                for (i, rule) in rules.iter().enumerate() {
                    emulator.apply(rule, Origin::Spec(i))?;
                }
                let prog =
                    program::Program::from_rules(&emulator.rules(), emulator.default_allow())?;
                let prog_fd = bpf::load(LICENSE, prog.instructions())?;
                bpf::attach(
                    cgroup_fd.as_fd(),
                    prog_fd.as_fd(),
                    bpf::BPF_F_ALLOW_MULTI,
                    None,
                )?;
                println!("attach ok");
            }

            _ => unreachable!(),
        };
        Ok(())
    }
}

#[cfg(not(feature = "cgroupsv2_devices"))]
mod bpf {
    use anyhow::{Result, bail};

    pub fn run() -> Result<()> {
        if !cfg!(feature = "cgroupsv2_devices") {
            bail!("cgroupsv2_devices feature is not enabled");
        }

        unreachable!()
    }
}

fn main() -> Result<()> {
    env_logger::init();
    bpf::run()?;

    Ok(())
}
