//! Go's flag syntax on the command line of a Rust binary: chaosfs was started as
//! `chaosfs -addr=:65534 -pidfile=/tmp/fuse/pid -original=DIR -mountpoint=DIR`, and
//! templates written for it keep that command line with only the binary's path changed.
//!
//! Go's `flag` package takes `-name`, `--name`, `-name=value` and `-name value` alike. clap
//! takes long flags with two dashes only, so such a command line is rewritten before clap
//! sees it: into the `sidecar` subcommand, each single-dash word of two or more letters
//! becoming its double-dash form (clap's short flags are one letter, so nothing valid is
//! changed). Values are left as they are.

use std::ffi::{OsStr, OsString};

/// The subcommand the chaosfs command line maps to.
pub const SUBCOMMAND: &str = "sidecar";

/// The flags of chaosfs itself: a command line starting with one of them is a chaosfs one.
pub const CHAOSFS_FLAGS: [&str; 4] = ["addr", "pidfile", "original", "mountpoint"];

/// The name of a single-dash Go flag (`-addr=:1` → `addr`), if `arg` is one.
fn single_dash_name(arg: &OsStr) -> Option<&str> {
    let text = arg.to_str()?;
    let rest = text.strip_prefix('-')?;
    if rest.starts_with('-') {
        return None;
    }
    let name = rest.split_once('=').map_or(rest, |(name, _)| name);
    let word = name.len() >= 2
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    word.then_some(name)
}

/// Rewrites a chaosfs-style command line (`PROG -addr=... ...`, or `PROG sidecar -addr=...`)
/// into `PROG sidecar --addr=... ...`; any other command line is returned unchanged.
pub fn translate(args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.get(1) else {
        return args;
    };
    let chaosfs_style = single_dash_name(first).is_some_and(|n| CHAOSFS_FLAGS.contains(&n));
    let rest = if chaosfs_style {
        &args[1..]
    } else if first == SUBCOMMAND {
        &args[2..]
    } else {
        return args;
    };
    let mut out = Vec::with_capacity(args.len() + 1);
    out.push(args[0].clone());
    out.push(SUBCOMMAND.into());
    for arg in rest {
        if single_dash_name(arg).is_some() {
            let mut long = OsString::from("-");
            long.push(arg);
            out.push(long);
        } else {
            out.push(arg.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Vec<String> {
        translate(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().expect("utf-8"))
            .collect()
    }

    #[test]
    fn the_reference_command_line_becomes_the_sidecar_subcommand() {
        assert_eq!(
            run(&[
                "/usr/local/bin/faultline-injector",
                "-addr=:65534",
                "-pidfile=/tmp/fuse/pid",
                "-original=/var/lib/tikv/fuse-data",
                "-mountpoint=/var/lib/tikv/data",
            ]),
            [
                "/usr/local/bin/faultline-injector",
                "sidecar",
                "--addr=:65534",
                "--pidfile=/tmp/fuse/pid",
                "--original=/var/lib/tikv/fuse-data",
                "--mountpoint=/var/lib/tikv/data",
            ]
        );
    }

    #[test]
    fn go_spellings_with_separate_values_and_double_dashes_are_kept_apart() {
        assert_eq!(
            run(&[
                "p",
                "-mountpoint",
                "/d",
                "--original=/o",
                "-no-passthrough",
                "-h"
            ]),
            [
                "p",
                "sidecar",
                "--mountpoint",
                "/d",
                "--original=/o",
                "--no-passthrough",
                "-h"
            ]
        );
        assert_eq!(
            run(&["p", "sidecar", "-addr", ":1", "-original=/o"]),
            ["p", "sidecar", "--addr", ":1", "--original=/o"]
        );
        // A value that looks like a flag is a value of the flag before it only for clap to
        // decide; negative numbers and single letters are not rewritten.
        assert_eq!(run(&["p", "sidecar", "-1"]), ["p", "sidecar", "-1"]);
    }

    #[test]
    fn other_command_lines_are_untouched() {
        for line in [
            vec!["p"],
            vec!["p", "mount", "--path", "/d", "-x"],
            vec!["p", "-V"],
            vec!["p", "-unknown=1"],
            vec!["p", "cleanup", "--path", "/d"],
        ] {
            assert_eq!(run(&line), line);
        }
    }
}
