//! The admin-toolkit CLI's conventions: generated help for every subcommand, usage errors exit 2
//! with a message naming the mistake, shell completions. (verify --json and the exit statuses of
//! restore and wal-get are checked on real backups in recovery.rs and s3_archive.rs.)

use admin_toolkit_it::cli_path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(cli_path())
        .args(args)
        .output()
        .expect("run admin-toolkit")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_subcommand_has_generated_help() {
    let top = run(&["--help"]);
    assert_eq!(top.status.code(), Some(0));
    for sub in ["restore", "wal-get", "verify", "completions"] {
        assert!(stdout(&top).contains(sub), "{sub} listed: {}", stdout(&top));
        for form in [vec![sub, "--help"], vec!["help", sub]] {
            let out = run(&form);
            assert_eq!(out.status.code(), Some(0), "{form:?}");
            let text = stdout(&out);
            assert!(
                text.contains(&format!("Usage: admin-toolkit {sub}")),
                "{form:?}: {text}"
            );
        }
    }
    // The exit statuses are documented where scripts look for them.
    let restore = stdout(&run(&["restore", "--help"]));
    for needle in [
        "--target-time",
        "--s3-endpoint",
        "--encryption-key-dir",
        "126",
    ] {
        assert!(restore.contains(needle), "{needle}: {restore}");
    }
    let version = run(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert!(stdout(&version).starts_with("admin-toolkit "));
}

#[test]
fn usage_errors_exit_2_and_name_the_mistake() {
    for (args, says) in [
        (
            &["restore", "--bakup", "/b", "--target-dir", "/t"][..],
            "--bakup",
        ),
        (&["restore", "--backup", "/b"], "--target-dir"),
        (
            &[
                "restore",
                "--target-time",
                "2026-11-24 10:00:00+00",
                "--target-lsn",
                "0/1",
                "--backup=/b",
                "--target-dir=/t",
            ],
            "cannot be used with",
        ),
        (&["verify", "--backup", "/b", "--threads", "0"], "--threads"),
        (&["wal-get", "--archive", "/a", "only-one"], "<DESTINATION>"),
        (&["frobnicate"], "frobnicate"),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: nothing on stdout");
    }
}

#[test]
fn completions_are_generated_for_bash() {
    let out = run(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let script = stdout(&out);
    assert!(script.contains("complete -F"), "{script}");
    for word in ["wal-get", "--target-dir", "--encryption-key-dir"] {
        assert!(script.contains(word), "{word}");
    }
    let syntax = Command::new("bash")
        .args(["-n", "-c", &script])
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n accepts the script");
}
