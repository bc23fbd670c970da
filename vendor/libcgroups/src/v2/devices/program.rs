// nvbind: the instructions are encoded here (struct bpf_insn, eight bytes) instead of with
// rbpf's insn_builder, and `execute` runs them with a small interpreter of the opcodes this
// module emits instead of rbpf's VM: the program is a dozen kinds of instruction, and rbpf
// was the other half (with libbpf-sys) of what the `cgroupsv2_devices` feature pulled in.

use oci_spec::runtime::*;

// struct bpf_cgroup_dev_ctx: access_type = (access << 16) | type.
pub const BPF_DEVCG_ACC_MKNOD: u32 = 1;
pub const BPF_DEVCG_ACC_READ: u32 = 2;
pub const BPF_DEVCG_ACC_WRITE: u32 = 4;
pub const BPF_DEVCG_DEV_BLOCK: u32 = 1;
pub const BPF_DEVCG_DEV_CHAR: u32 = 2;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst_reg in the low four bits, src_reg in the high four.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn {
            code,
            regs: (src << 4) | (dst & 0xf),
            off,
            imm,
        }
    }
    pub const fn dst(&self) -> u8 {
        self.regs & 0xf
    }
    pub const fn src(&self) -> u8 {
        self.regs >> 4
    }
    /// dst = *(u32 *)(src + off)
    pub const fn ldx_w(dst: u8, src: u8, off: i16) -> Self {
        Self::new(0x61, dst, src, off, 0)
    }
    /// dst = imm (32-bit, zero-extended)
    pub const fn mov32_imm(dst: u8, imm: i32) -> Self {
        Self::new(0xb4, dst, 0, 0, imm)
    }
    /// dst = src (32-bit, zero-extended)
    pub const fn mov32_reg(dst: u8, src: u8) -> Self {
        Self::new(0xbc, dst, src, 0, 0)
    }
    /// dst = imm (sign-extended)
    pub const fn mov64_imm(dst: u8, imm: i32) -> Self {
        Self::new(0xb7, dst, 0, 0, imm)
    }
    pub const fn mov64_reg(dst: u8, src: u8) -> Self {
        Self::new(0xbf, dst, src, 0, 0)
    }
    pub const fn and32_imm(dst: u8, imm: i32) -> Self {
        Self::new(0x54, dst, 0, 0, imm)
    }
    pub const fn and64_imm(dst: u8, imm: i32) -> Self {
        Self::new(0x57, dst, 0, 0, imm)
    }
    pub const fn rsh32_imm(dst: u8, imm: i32) -> Self {
        Self::new(0x74, dst, 0, 0, imm)
    }
    pub const fn rsh64_imm(dst: u8, imm: i32) -> Self {
        Self::new(0x77, dst, 0, 0, imm)
    }
    /// if dst != imm (sign-extended) goto pc + 1 + off
    pub const fn jne_imm(dst: u8, imm: i32, off: i16) -> Self {
        Self::new(0x55, dst, 0, off, imm)
    }
    /// if dst != src goto pc + 1 + off
    pub const fn jne_reg(dst: u8, src: u8, off: i16) -> Self {
        Self::new(0x5d, dst, src, off, 0)
    }
    pub const fn exit() -> Self {
        Self::new(0x95, 0, 0, 0, 0)
    }
}

pub struct Program {
    prog: Vec<Insn>,
}

#[derive(thiserror::Error, Debug)]
pub enum ProgramError {
    #[error("invalid access: {0}")]
    InvalidAccess(char),
    #[error("{0} device not supported")]
    DeviceNotSupported(&'static str),
    #[error("wildcard device type should be removed when cleaning rules")]
    WildcardDevice,
    #[error("unknown eBPF instruction {0:#04x} at {1}")]
    UnknownInstruction(u8, usize),
    #[error("the program runs off its end")]
    NoExit,
}

impl Program {
    pub fn from_rules(
        rules: &[LinuxDeviceCgroup],
        default_allow: bool,
    ) -> Result<Self, ProgramError> {
        let mut prog = Program { prog: Vec::new() };
        prog.init();

        for rule in rules.iter().rev() {
            prog.add_rule(rule)?;
        }
        prog.finalize(default_allow);
        Ok(prog)
    }

    pub fn instructions(&self) -> &[Insn] {
        &self.prog
    }

    fn finalize(&mut self, default_allow: bool) {
        self.prog.push(Insn::mov32_imm(0, default_allow as i32));
        self.prog.push(Insn::exit());
    }

    // struct bpf_cgroup_dev_ctx: https://elixir.bootlin.com/linux/v5.3.6/source/include/uapi/linux/bpf.h#L3423
    /*
    u32 access_type
    u32 major
    u32 minor
    */
    // R2 <- type (lower 16 bit of u32 access_type at R1[0])
    // R3 <- access (upper 16 bit of u32 access_type at R1[0])
    // R4 <- major (u32 major at R1[4])
    // R5 <- minor (u32 minor at R1[8])
    fn init(&mut self) {
        self.prog.extend([
            Insn::ldx_w(2, 1, 0),
            Insn::and32_imm(2, 0xFFFF),
            Insn::ldx_w(3, 1, 0),
            Insn::rsh32_imm(3, 16),
            Insn::ldx_w(4, 1, 4),
            Insn::ldx_w(5, 1, 8),
        ]);
    }

    fn add_rule(&mut self, rule: &LinuxDeviceCgroup) -> Result<(), ProgramError> {
        let dev_type = bpf_dev_type(rule.typ().unwrap_or_default())?;
        let access = bpf_access(rule.access().clone().unwrap_or_default())?;
        let has_access = access != (BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD);

        // nvbind: the block is built with its jumps pointing at its own end, filled in once
        // its length is known; a major or minor above i32::MAX is compared through a register
        // (an immediate is sign-extended, so such a rule never matched).
        let mut block = Vec::new();
        let mut jumps = Vec::new();
        // if (R2 != dev_type) goto next rule
        jumps.push(block.len());
        block.push(Insn::jne_imm(2, dev_type as i32, 0));

        if has_access {
            // if (R3 & access != R3 /* use R1 as a temp var */) goto next rule
            block.push(Insn::mov32_reg(1, 3));
            block.push(Insn::and32_imm(1, access as i32));
            jumps.push(block.len());
            block.push(Insn::jne_reg(1, 3, 0));
        }

        // if (R4 != major) goto next rule; if (R5 != minor) goto next rule
        for (reg, value) in [(4, rule.major()), (5, rule.minor())] {
            let Some(value) = value.filter(|v| *v >= 0) else {
                continue;
            };
            if let Ok(imm) = i32::try_from(value) {
                jumps.push(block.len());
                block.push(Insn::jne_imm(reg, imm, 0));
            } else {
                block.push(Insn::mov32_imm(1, value as u32 as i32));
                jumps.push(block.len());
                block.push(Insn::jne_reg(reg, 1, 0));
            }
        }

        // matched, return rule.allow
        block.push(Insn::mov32_imm(0, rule.allow() as i32));
        block.push(Insn::exit());

        let len = block.len();
        for j in jumps {
            block[j].off = (len - j - 1) as i16;
        }
        self.prog.extend(block);
        Ok(())
    }

    pub fn dump(&self) {
        for (i, insn) in self.prog.iter().enumerate() {
            println!("{i:3}: {insn:?}");
        }
    }

    pub fn execute(
        &self,
        typ: LinuxDeviceType,
        major: u32,
        minor: u32,
        access: String,
    ) -> Result<u64, ProgramError> {
        let mem = bpf_cgroup_dev_ctx(typ, major, minor, access)?;
        execute(&self.prog, &mem)
    }
}

/// Runs `prog` on the context `ctx` the way the kernel would, for the opcodes [`Insn`] makes
/// (loads from the context only, 32- and 64-bit moves, and, shifts, jne, exit).
pub fn execute(prog: &[Insn], ctx: &[u8]) -> Result<u64, ProgramError> {
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    while let Some(i) = prog.get(pc) {
        let (d, s) = (i.dst() as usize, i.src() as usize);
        let imm64 = i.imm as i64 as u64;
        let imm32 = i.imm as u32 as u64;
        pc += 1;
        match i.code {
            0x61 => {
                // Only the context is addressable here: R1 at entry, an offset into it.
                let at = i.off as usize;
                let word = ctx
                    .get(at..at + 4)
                    .ok_or(ProgramError::UnknownInstruction(i.code, pc - 1))?;
                r[d] = u32::from_ne_bytes(word.try_into().expect("4 bytes")) as u64;
            }
            0xb4 => r[d] = imm32,
            0xbc => r[d] = r[s] & 0xffff_ffff,
            0xb7 => r[d] = imm64,
            0xbf => r[d] = r[s],
            0x54 => r[d] = (r[d] & imm32) & 0xffff_ffff,
            0x57 => r[d] &= imm64,
            0x74 => r[d] = ((r[d] as u32) >> (i.imm as u32 & 31)) as u64,
            0x77 => r[d] >>= i.imm as u32 & 63,
            0x55 if r[d] != imm64 => pc = (pc as isize + i.off as isize) as usize,
            0x5d if r[d] != r[s] => pc = (pc as isize + i.off as isize) as usize,
            0x55 | 0x5d => {}
            0x95 => return Ok(r[0]),
            code => return Err(ProgramError::UnknownInstruction(code, pc - 1)),
        }
    }
    Err(ProgramError::NoExit)
}

fn bpf_dev_type(typ: LinuxDeviceType) -> Result<u32, ProgramError> {
    let dev_type: u32 = match typ {
        LinuxDeviceType::C => BPF_DEVCG_DEV_CHAR,
        LinuxDeviceType::U => return Err(ProgramError::DeviceNotSupported("unbuffered char")),
        LinuxDeviceType::B => BPF_DEVCG_DEV_BLOCK,
        LinuxDeviceType::P => return Err(ProgramError::DeviceNotSupported("pipe device")),
        LinuxDeviceType::A => return Err(ProgramError::WildcardDevice),
    };
    Ok(dev_type)
}

fn bpf_access(access: String) -> Result<u32, ProgramError> {
    let mut v = 0_u32;
    for c in access.chars() {
        let cur_access = match c {
            'r' => BPF_DEVCG_ACC_READ,
            'w' => BPF_DEVCG_ACC_WRITE,
            'm' => BPF_DEVCG_ACC_MKNOD,
            _ => return Err(ProgramError::InvalidAccess(c)),
        };
        v |= cur_access;
    }
    Ok(v)
}

fn bpf_cgroup_dev_ctx(
    typ: LinuxDeviceType,
    major: u32,
    minor: u32,
    access: String,
) -> Result<Vec<u8>, ProgramError> {
    let mut mem = Vec::with_capacity(12);

    let mut type_access = 0_u32;
    if let Ok(t) = bpf_dev_type(typ) {
        type_access = t & 0xFFFF;
    }

    type_access |= bpf_access(access)? << 16;

    mem.extend_from_slice(&type_access.to_ne_bytes());
    mem.extend_from_slice(&major.to_ne_bytes());
    mem.extend_from_slice(&minor.to_ne_bytes());

    Ok(mem)
}

#[cfg(test)]
mod tests {
    use anyhow::Result;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    use super::*;

    // nvbind: the rules go through runc's emulator (crate::devices), as in the controller.
    fn build_bpf_program(rules: &Option<Vec<LinuxDeviceCgroup>>) -> Result<Program> {
        let mut em = crate::devices::Emulator::default();
        for (i, rule) in rules.iter().flatten().enumerate() {
            em.apply(rule, crate::devices::Origin::Spec(i))?;
        }

        Ok(Program::from_rules(&em.rules(), em.default_allow())?)
    }

    #[test]
    fn test_devices_allow_single() {
        let rules = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(10)
                .minor(20)
                .access("r")
                .build()
                .unwrap(),
        ];

        let prog = build_bpf_program(&Some(rules)).unwrap();
        let ty_list = vec![
            LinuxDeviceType::C,
            LinuxDeviceType::U,
            LinuxDeviceType::P,
            LinuxDeviceType::B,
        ];
        let major_list = vec![10_u32, 99_u32];
        let minor_list = vec![20_u32, 00_u32];
        let access_list = vec!["r", "w", "m"];
        for ty in &ty_list {
            for major in &major_list {
                for minor in &minor_list {
                    for access in &access_list {
                        let ret = prog.execute(*ty, *major, *minor, access.to_string());
                        assert!(ret.is_ok());

                        println!("execute {ty:?} {major} {minor} {access} -> {ret:?}");
                        if *ty == LinuxDeviceType::C  // only this is allowed
                            && *major == 10
                                && *minor == 20
                                && access.eq(&"r")
                        {
                            assert_eq!(ret.unwrap(), 1);
                        } else {
                            assert_eq!(ret.unwrap(), 0);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn test_devices_deny_all() {
        let rules = vec![];

        let prog = build_bpf_program(&Some(rules)).unwrap();
        let ty_list = vec![
            LinuxDeviceType::C,
            LinuxDeviceType::U,
            LinuxDeviceType::P,
            LinuxDeviceType::B,
        ];
        let major_list = vec![10_u32, 99_u32];
        let minor_list = vec![20_u32, 00_u32];
        let access_list = vec!["r", "w", "m"];
        for ty in &ty_list {
            for major in &major_list {
                for minor in &minor_list {
                    for access in &access_list {
                        let ret = prog.execute(*ty, *major, *minor, access.to_string());
                        assert!(ret.is_ok());
                        assert_eq!(ret.unwrap(), 0);
                    }
                }
            }
        }
    }

    #[test]
    fn test_devices_allow_all() {
        // nvbind: a rule without access is refused (as runc does), wildcard or not.
        let rules = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::A)
                .access("rwm")
                .build()
                .unwrap(),
        ];

        let prog = build_bpf_program(&Some(rules)).unwrap();
        let ty_list = vec![
            LinuxDeviceType::C,
            LinuxDeviceType::U,
            LinuxDeviceType::P,
            LinuxDeviceType::B,
        ];
        let major_list = vec![10_u32, 99_u32];
        let minor_list = vec![20_u32, 00_u32];
        let access_list = vec!["r", "w", "m"];
        for ty in &ty_list {
            for major in &major_list {
                for minor in &minor_list {
                    for access in &access_list {
                        let ret = prog.execute(*ty, *major, *minor, access.to_string());
                        assert!(ret.is_ok());

                        println!("execute {ty:?} {major} {minor} {access} -> {ret:?}");
                        assert_eq!(ret.unwrap(), 1);
                    }
                }
            }
        }
    }

    #[test]
    fn test_devices_allow_wildcard() {
        let rules = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .minor(20)
                .access("r")
                .build()
                .unwrap(),
        ];

        let prog = build_bpf_program(&Some(rules)).unwrap();
        let ty_list = vec![
            LinuxDeviceType::C,
            LinuxDeviceType::U,
            LinuxDeviceType::P,
            LinuxDeviceType::B,
        ];
        let major_list = vec![10_u32, 99_u32];
        let minor_list = vec![20_u32, 00_u32];
        let access_list = vec!["r", "w", "m"];
        for ty in &ty_list {
            for major in &major_list {
                for minor in &minor_list {
                    for access in &access_list {
                        let ret = prog.execute(*ty, *major, *minor, access.to_string());
                        assert!(ret.is_ok());

                        println!("execute {ty:?} {major} {minor} {access} -> {ret:?}");
                        if *ty == LinuxDeviceType::C && *minor == 20 && access.eq(&"r") {
                            assert_eq!(ret.unwrap(), 1);
                        } else {
                            assert_eq!(ret.unwrap(), 0);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn test_devices_allow_and_deny() {
        let rules = vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .minor(20)
                .access("rw")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .typ(LinuxDeviceType::C)
                .major(10)
                .access("r")
                .build()
                .unwrap(),
        ];

        let prog = build_bpf_program(&Some(rules)).unwrap();
        let ty_list = vec![
            LinuxDeviceType::C,
            LinuxDeviceType::U,
            LinuxDeviceType::P,
            LinuxDeviceType::B,
        ];
        let major_list = vec![10_u32, 99_u32];
        let minor_list = vec![20_u32, 00_u32];
        let access_list = vec!["r", "w", "m"];
        for ty in &ty_list {
            for major in &major_list {
                for minor in &minor_list {
                    for access in &access_list {
                        let ret = prog.execute(*ty, *major, *minor, access.to_string());
                        assert!(ret.is_ok());

                        println!("execute {ty:?} {major} {minor} {access} -> {ret:?}");
                        // nvbind: as in a v1 devices cgroup (and runc), the deny of
                        // c 10:* r removes only an exception for exactly c 10:*, of which
                        // there is none: c 10:20 r stays allowed by c *:20 rw.
                        if *ty == LinuxDeviceType::C
                            && *major == 10
                            && *minor != 20
                            && access.eq(&"r")
                        {
                            assert_eq!(ret.unwrap(), 0);
                        } else if *ty == LinuxDeviceType::C
                            && *minor == 20
                            && (access.eq(&"r") || access.eq(&"w"))
                        {
                            assert_eq!(ret.unwrap(), 1);
                        } else {
                            assert_eq!(ret.unwrap(), 0);
                        }
                    }
                }
            }
        }
    }

    // nvbind: runc's semantics, end to end through the program.
    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn test_devices_deny_write_stops_read_write() {
        let rules = vec![
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rw"),
            rule(false, LinuxDeviceType::C, Some(1), Some(3), "w"),
        ];
        let prog = build_bpf_program(&Some(rules)).unwrap();
        let run = |a: &str| {
            prog.execute(LinuxDeviceType::C, 1, 3, a.to_string())
                .unwrap()
        };
        assert_eq!(run("r"), 1);
        assert_eq!(run("w"), 0);
        // O_RDWR asks for both at once; the old emulator let it through the later deny.
        assert_eq!(run("rw"), 0);
    }

    #[test]
    fn test_devices_numbers_beyond_i32() {
        let rules = vec![rule(
            true,
            LinuxDeviceType::B,
            Some(4_000_000_000),
            Some(3_000_000_000),
            "r",
        )];
        let prog = build_bpf_program(&Some(rules)).unwrap();
        let run = |major, minor| {
            prog.execute(LinuxDeviceType::B, major, minor, "r".to_string())
                .unwrap()
        };
        assert_eq!(run(4_000_000_000, 3_000_000_000), 1);
        assert_eq!(run(4_000_000_000, 3), 0);
        assert_eq!(run(u32::MAX, 3_000_000_000), 0);
    }
}
