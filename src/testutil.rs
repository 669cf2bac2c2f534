//! Helpers for unit tests.

use crate::model::{ContainerRecord, InstallState, Limits, PowerState};

/// A seeded xorshift generator: `next(n)` is a number below `n`. Reproducible, no crate.
pub fn xorshift(seed: u64) -> impl FnMut(usize) -> usize {
    let mut x = seed | 1;
    move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    }
}

/// A fresh directory under the system's temp dir, removed (with what is in it) on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lightd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make a temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A container record `srv` on volume `vol` in `state` and `install`, the rest plain.
pub fn record(state: PowerState, install: InstallState) -> ContainerRecord {
    ContainerRecord {
        internal_id: "srv".into(),
        record_id: "r".into(),
        container_id: Some("c".into()),
        volume_id: "vol".into(),
        image: "img".into(),
        startup_command: "run".into(),
        start_pattern: None,
        install_state: install,
        state,
        ports: Vec::new(),
        limits: Limits { memory: None, cpu: None },
        mount: Default::default(),
        env: Default::default(),
        install_script: None,
        crash_restart: true,
        stop_command: None,
        user: "0:0".into(),
        last_exit: None,
        firewall: Vec::new(),
        error: None,
        created_at: 0,
        updated_at: 0,
    }
}
