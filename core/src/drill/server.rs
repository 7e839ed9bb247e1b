//! The throwaway server of a restore drill: started on the restored directory as a child in a
//! process group of its own, watched until recovery has promoted it, queried with psql over its
//! private socket, stopped, and — when a drill died — found and stopped from its pid file.

use super::checks::session_options;
use super::{log_reason, server_settings, HBA};
use crate::backup::manifest::data_dir_major;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How a wait for the server ended early.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The caller asked to stop (cancellation, shutdown).
    Asked,
    /// The server exited by itself; why, from its log.
    Exited(String),
}

pub struct Throwaway {
    child: Child,
    pub data_dir: PathBuf,
    scratch: PathBuf,
    pub port: u16,
    bindir: PathBuf,
    user: String,
    /// The restored data directory's PostgreSQL major (its sessions' settings depend on it).
    major: u32,
}

fn without_pg_environment(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill has no memory preconditions.
    i32::try_from(pid).is_ok_and(|pid| unsafe { libc::kill(pid, sig) } == 0)
}

impl Throwaway {
    /// Starts `bindir/postgres` on `data_dir` (inside `scratch`) with the drill's settings; its
    /// log goes to `scratch/server.log`.
    pub fn start(
        bindir: &Path,
        scratch: &Path,
        data_dir: &Path,
        port: u16,
        drill_id: i64,
        user: &str,
    ) -> Result<Throwaway, String> {
        let major = data_dir_major(data_dir)?;
        let write = |name: &str, text: &str| {
            fs::write(scratch.join(name), text)
                .map_err(|e| format!("cannot write \"{}\": {e}", scratch.join(name).display()))
        };
        write(
            "drill.conf",
            "# admin_toolkit restore drill: every setting is on the server's command line\n",
        )?;
        write("pg_hba.conf", HBA)?;
        write("pg_ident.conf", "")?;
        let log_path = scratch.join("server.log");
        let log = fs::File::create(&log_path)
            .map_err(|e| format!("cannot create \"{}\": {e}", log_path.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot open \"{}\": {e}", log_path.display()))?;
        let mut cmd = Command::new(bindir.join("postgres"));
        cmd.arg("-D").arg(data_dir);
        for (name, value) in server_settings(scratch, port, drill_id) {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        without_pg_environment(&mut cmd);
        use std::os::unix::process::CommandExt;
        cmd.current_dir(scratch)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bindir.join("postgres").display()))?;
        Ok(Throwaway {
            child,
            data_dir: data_dir.to_path_buf(),
            scratch: scratch.to_path_buf(),
            port,
            bindir: bindir.to_path_buf(),
            user: user.to_string(),
            major,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.scratch.join("server.log")).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until recovery has ended and the server accepts connections (with hot_standby off
    /// that is after promotion), polling `stop` between looks.
    pub fn wait_until_promoted(&mut self, stop: &mut dyn FnMut() -> bool) -> Result<(), Stopped> {
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            if let Some(status) = self.exited() {
                return Err(Stopped::Exited(format!(
                    "the restored server stopped during recovery ({status}): {}",
                    log_reason(&self.log(), 4)
                )));
            }
            if stop() {
                return Err(Stopped::Asked);
            }
            let ready = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.lines().nth(7).map(|s| s.trim() == "ready"))
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `sql` in database `database` with psql as the superuser; its unaligned output
    /// (fields separated by 0x1f), or the error.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let user = self.user.clone();
        self.psql_as(&user, true, database, &[sql])
    }

    /// Runs `commands`, each in its own transaction, in database `database` with psql as `user`
    /// (a superuser when `superuser`), the session's settings pinned in its startup packet
    /// (checks::session_options); stops at the first error and returns it.
    pub fn psql_as(
        &self,
        user: &str,
        superuser: bool,
        database: &str,
        commands: &[&str],
    ) -> Result<String, String> {
        let conninfo = format!(
            "host='{}' port={} user='{}' dbname='{}' application_name='admin_toolkit drill' options='{}'",
            conninfo_escape(&self.scratch.to_string_lossy()),
            self.port,
            conninfo_escape(user),
            conninfo_escape(database),
            conninfo_escape(&session_options(superuser, self.major)),
        );
        let mut cmd = Command::new(self.bindir.join("psql"));
        without_pg_environment(&mut cmd);
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-F",
            "\u{1f}",
        ])
        .arg("-d")
        .arg(conninfo);
        for sql in commands {
            cmd.arg("-c").arg(sql);
        }
        let out = cmd
            .current_dir(&self.scratch)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Stops the server: a fast shutdown, then an immediate one after `patience`.
    pub fn stop(mut self, patience: Duration) -> Result<(), String> {
        self.shut_down(patience)
    }

    fn shut_down(&mut self, patience: Duration) -> Result<(), String> {
        if self.exited().is_some() {
            return Ok(());
        }
        signal(self.pid(), libc::SIGINT);
        let started = Instant::now();
        while self.exited().is_none() {
            if started.elapsed() > patience {
                signal(self.pid(), libc::SIGQUIT);
                return self
                    .child
                    .wait()
                    .map(|_| ())
                    .map_err(|e| format!("cannot wait for the restored server: {e}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Throwaway {
    /// Never leaves the server running behind an early return or a panic.
    fn drop(&mut self) {
        if self.exited().is_none() {
            signal(self.pid(), libc::SIGQUIT);
            let _status_is_not_needed = self.child.wait();
        }
    }
}

fn conninfo_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

/// Stops a throwaway server left running on `data_dir` by a drill that died: the postmaster its
/// pid file names, if that process runs in that very directory. Returns whether one was
/// stopped.
pub fn stop_leftover(data_dir: &Path) -> Result<bool, String> {
    let Ok(text) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return Ok(false);
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        return Ok(false);
    };
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok();
    let here = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    if cwd.as_deref() != Some(here.as_path()) {
        return Ok(false);
    }
    signal(pid, libc::SIGQUIT);
    let started = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        if started.elapsed() > Duration::from_secs(10) {
            signal(pid, libc::SIGKILL);
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "the restored server (pid {pid}) of a dead drill does not stop"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_only_servers_running_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!stop_leftover(dir.path()).unwrap(), "no pid file");
        // A live process that is not running there (this test) is left alone.
        fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n{}\n", std::process::id(), dir.path().display()),
        )
        .unwrap();
        assert!(!stop_leftover(dir.path()).unwrap());
        // A process whose working directory is the data directory is stopped.
        let mut child = Command::new("sleep")
            .arg("60")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n", child.id()),
        )
        .unwrap();
        let reaper = std::thread::spawn(move || child.wait().unwrap());
        assert!(stop_leftover(dir.path()).unwrap());
        assert!(!reaper.join().unwrap().success());
        assert_eq!(conninfo_escape(r"a'b\c"), r"a\'b\\c");
    }
}
