//! The open-files limit: raised once to the hard limit (the daemon, its tests and benches
//! all hold many sockets).

/// Raises the open-files soft limit to the hard limit; returns the limit in force, or why it
/// could not be raised.
pub fn raise_nofile() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    match raised {
        true => Ok(lim.rlim_cur),
        false => Err(std::io::Error::last_os_error()),
    }
}

/// Sets the soft limit on locked memory to 0: an `mlock` by a thread without CAP_IPC_LOCK then
/// fails at once, pinning nothing (see `sftp::thread`). The hard limit stays.
pub fn no_locked_memory() -> std::io::Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    let set = unsafe {
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) == 0 && {
            lim.rlim_cur = 0;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) == 0
        }
    };
    if set {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
