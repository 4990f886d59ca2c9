//! Reaping the node's orphans. libvirtd daemonizes, and so does every QEMU it starts: their
//! parents exit and the kernel hands them to the nearest *child subreaper* — init, unless
//! a process claims the role. libvirt ends a guest's QEMU with SIGTERM and then polls
//! `kill(pid, 0)` every 200 ms until the pid is gone, and a zombie's pid is not gone until
//! its parent reaps it. An init that reaps late (this machine kind's takes 1–2 s; a
//! container whose pid 1 is no init never does) makes every guest stop and the end of
//! every migration wait for it. So the handler that starts the node's libvirtd claims the
//! role and reaps those orphans as soon as they exit.
//!
//! Only adopted orphans are reaped: a zombie child in another session (libvirtd and QEMU
//! call `setsid` when they daemonize) that is not a launcher (they have their own session
//! too, and the handler reaps them itself). The handler's other children (`Command`s,
//! the KVM probe) share its session, and whoever spawned them waits for them.

use std::io;

/// Make this process the subreaper of everything it starts from now on.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reap the adopted orphans that have exited; how many.
pub fn reap_orphans() -> usize {
    // SAFETY: getpid and getsid(0) have no preconditions.
    let (me, my_session) = unsafe { (libc::getpid(), libc::getsid(0)) };
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(process) = Stat::parse(&stat) else { continue };
        if process.parent == me && process.zombie && process.session != my_session && !process.command.starts_with("vmform") {
            let mut status = 0;
            // SAFETY: waitpid of one exited child of ours, without blocking.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                reaped += 1;
            }
        }
    }
    reaped
}

/// Whether `pid` is a live process: it exists and has not exited (a zombie has, though its
/// pid stays until it is reaped).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(Stat::parse).is_some_and(|s| !s.zombie)
}

/// The fields of `/proc/PID/stat` this needs.
#[derive(Debug, PartialEq, Eq)]
struct Stat<'a> {
    command: &'a str,
    zombie: bool,
    parent: i32,
    session: i32,
}

impl<'a> Stat<'a> {
    /// `PID (COMM) STATE PPID PGRP SESSION …`; COMM may hold spaces and parentheses, so
    /// it ends at the last `)`.
    fn parse(stat: &'a str) -> Option<Stat<'a>> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let mut rest = stat.get(close + 1..)?.split_whitespace();
        let state = rest.next()?;
        let parent = rest.next()?.parse().ok()?;
        let _group = rest.next()?;
        let session = rest.next()?.parse().ok()?;
        Some(Stat { command: stat.get(open + 1..close)?, zombie: state == "Z", parent, session })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_up_to_the_session() {
        let line = "5195 (qemu-system-x86) Z 1 5190 5190 0 -1 4228172 0 0 0 0 12 5 0 0 20 0 4 0 100 0 0";
        assert_eq!(Stat::parse(line), Some(Stat { command: "qemu-system-x86", zombie: true, parent: 1, session: 5190 }));
        let odd = "42 (a) b (c) S 7 42 9 0";
        assert_eq!(Stat::parse(odd), Some(Stat { command: "a) b (c", zombie: false, parent: 7, session: 9 }));
        assert_eq!(Stat::parse("42 (cut"), None);
    }
}
