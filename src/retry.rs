//! Retrying an operation that fails only until something else has caught up.

/// Retries `f` for up to about 2 s. A cgroup can be removed only once its killed processes
/// have exited, which takes longer than libcgroups' ~150 ms of rmdir retries on a loaded
/// host (libcontainer's own delete waits for the cgroup to empty, NVBIND-PATCHES.md #20).
pub fn patiently<T, E>(mut f: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match f() {
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            result => return result,
        }
    }
}
