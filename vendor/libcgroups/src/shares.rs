//! nvbind: cgroup v1 `cpu.shares` to cgroup v2 `cpu.weight`, for the v2 and systemd managers
//! alike, computed without libm.
//!
//! The mapping is runc's quadratic fit (opencontainers/cgroups#20, runc 1.3.2): shares span
//! [2, 262_144] with a default of 1_024, weight [1, 10_000] with a default of 100, and
//! `weight = ceil(10^((l² + 125 l) / 612 - 7/34))` with `l = log2(shares)`. Its `log2` and
//! `powf` were the only calls into libm in the whole runtime, so every start of the binary
//! had the loader open and map libm.so.6 for a function `create` calls only when a spec sets
//! shares on a cgroup v2 host (a process start without it: 0.06 ms less CPU and 9 page faults
//! fewer, bench/analysis.md). The two functions here give libm's weight for every shares
//! value (the test compares all of them).

use std::f64::consts::{LN_10, LN_2, SQRT_2};

const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const MAX_WEIGHT: u64 = 10_000;

/// The cgroup v2 weight for cgroup v1 shares; 0 (the field left unset) for 0.
pub fn convert_shares_to_cgroup2(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    if shares <= MIN_SHARES {
        return 1;
    }
    if shares >= MAX_SHARES {
        return MAX_WEIGHT;
    }
    let l = log2(shares as f64);
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (pow10(exponent).ceil() as u64).clamp(1, MAX_WEIGHT)
}

/// log2 of a finite x > 0 (not subnormal): x = m 2^k with m in [1/√2, √2), and ln m from
/// the atanh series, which converges fast for |z| = |(m-1)/(m+1)| <= 0.172. A power of two
/// gives exactly k.
fn log2(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut k = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if m >= SQRT_2 {
        m /= 2.0;
        k += 1;
    }
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    // 2 (z + z³/3 + z⁵/5 + ...): 16 terms leave less than 1e-25 out (z² <= 0.0295).
    let mut sum = 0.0;
    for n in (0..16).rev() {
        sum = sum * z2 + 1.0 / (2 * n + 1) as f64;
    }
    k as f64 + 2.0 * z * sum / LN_2
}

/// 10^e for e in [0, 5): an integral part exactly from a table (so that 10^2 is 100, the
/// weight of the default shares), the fraction through exp's Taylor series after taking
/// out the powers of two (|r| <= ln 2 / 2: 20 terms leave less than 1e-25 out).
fn pow10(e: f64) -> f64 {
    const EXACT: [f64; 5] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0];
    let whole = e.floor();
    let y = (e - whole) * LN_10;
    let n = (y / LN_2 + 0.5).floor();
    let r = y - n * LN_2;
    let mut sum = 1.0;
    for i in (1..=20).rev() {
        sum = 1.0 + sum * r / i as f64;
    }
    EXACT[whole as usize] * sum * f64::from_bits(((n as i64 + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libm's answer, as upstream computed it.
    fn with_libm(shares: u64) -> u64 {
        let l = (shares as f64).log2();
        let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
        (10f64.powf(exponent).ceil() as u64).clamp(1, MAX_WEIGHT)
    }

    #[test]
    fn every_shares_value_gives_libms_weight() {
        let differ: Vec<(u64, u64, u64)> = (MIN_SHARES + 1..MAX_SHARES)
            .map(|s| (s, convert_shares_to_cgroup2(s), with_libm(s)))
            .filter(|(_, ours, libm)| ours != libm)
            .take(10)
            .collect();
        assert!(differ.is_empty(), "(shares, ours, libm's): {differ:?}");
    }

    #[test]
    fn runcs_fixed_points() {
        for (shares, weight) in [
            (0, 0),
            (1, 1),
            (2, 1),
            (1024, 100),
            (262_144, 10_000),
            (u64::MAX, 10_000),
        ] {
            assert_eq!(convert_shares_to_cgroup2(shares), weight, "shares {shares}");
        }
    }

    #[test]
    fn log2_and_pow10_are_close_to_libms() {
        for x in [3.0, 5.5, 1000.0, 65_537.0, 262_143.0] {
            assert!((log2(x) - f64::log2(x)).abs() < 1e-13, "log2({x})");
        }
        for e in [0.0, 0.3, 1.999_999, 2.0, 3.25, 4.0] {
            let want = 10f64.powf(e);
            assert!(((pow10(e) - want) / want).abs() < 1e-14, "10^{e}");
        }
    }
}
