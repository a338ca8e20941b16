//! Our qdisc requests against iproute2's, byte for byte.
//!
//! `tests/golden/iproute2.tsv` holds the RTM_NEWQDISC/RTM_DELQDISC requests that `tc` (iproute2
//! 6.1) sent for each command line below, captured with strace in a scratch network namespace
//! (the sequence number, which tc takes from the clock, is zeroed). The unit test compares our
//! encoder with that file and needs no privileges; `captured_requests_still_match_the_file`
//! captures again when it runs as root with `tc` and `strace` present, so a different iproute2
//! shows up as a failure naming the line. `FAULTLINE_BLESS_GOLDEN=1` rewrites the file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use netlink::psched::Psched;
use netlink::tc::{
    Htb, HtbClass, Netem, Placement, Prio, Qdisc, TC_H_ROOT, Tbf, add_htb_class, add_qdisc,
    delete_qdisc, handle,
};
use netlink::units::{Fraction, parse_rate_bytes, parse_size, parse_time_us};

/// `tc` command lines on `lo` of a fresh namespace (ifindex 1).
const CASES: &[&str] = &[
    "qdisc add dev lo root netem delay 100ms",
    "qdisc add dev lo root netem delay 100ms 10ms",
    "qdisc add dev lo root netem delay 100ms 10ms 25%",
    "qdisc add dev lo root netem loss 50%",
    "qdisc add dev lo root netem loss 5% 25%",
    "qdisc add dev lo root netem duplicate 1%",
    "qdisc add dev lo root netem corrupt 2%",
    "qdisc add dev lo root netem corrupt 2% 30%",
    "qdisc add dev lo root netem delay 10ms reorder 25% 50%",
    "qdisc add dev lo root netem delay 10ms reorder 25% gap 5",
    "qdisc add dev lo root netem limit 5000 delay 1.5ms",
    "qdisc add dev lo root netem delay 20ms loss 5%",
    "qdisc add dev lo root netem rate 1mbit",
    "qdisc add dev lo root netem delay 100ms 10ms 25% loss 10% 25% duplicate 5% corrupt 1% reorder 10%",
    "qdisc add dev lo root netem rate 100gbit",
    "qdisc add dev lo parent 1:4 handle 5: netem delay 50ms",
    "qdisc add dev lo root handle 1: netem delay 50ms loss 33.299999%",
    "qdisc add dev lo root tbf rate 1mbit burst 32kbit limit 10000",
    "qdisc add dev lo root tbf rate 10mbit burst 10000 limit 20000",
    "qdisc add dev lo root tbf rate 1mbps burst 20000 limit 30000 peakrate 2mbps mtu 2000",
    "qdisc add dev lo root tbf rate 100gbit burst 1000000 limit 1000000",
    "qdisc add dev lo root handle 1: prio bands 5 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1",
    "qdisc add dev lo root handle 1: htb default 1",
    "qdisc add dev lo parent 5:2 handle 7: htb default 1f",
    "class add dev lo parent 1: classid 1:1 htb rate 32gbit",
    "class add dev lo parent 1: classid 1:4 htb rate 1mbit",
    "class add dev lo parent 1: classid 1:5 htb rate 10mbit ceil 100gbit",
    "qdisc del dev lo root",
];

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/iproute2.tsv")
}

fn read_golden() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(golden_path()).expect("golden file");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (args, hex) = l.split_once('\t').expect("args<TAB>hex");
            (args.to_owned(), hex.to_owned())
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_handle(s: &str) -> u32 {
    let (major, minor) = s.split_once(':').expect("major:minor");
    let major = u16::from_str_radix(major, 16).expect("major");
    let minor = if minor.is_empty() {
        0
    } else {
        u16::from_str_radix(minor, 16).expect("minor")
    };
    handle(major, minor)
}

fn is_number(s: Option<&&&str>) -> bool {
    s.is_some_and(|s| s.starts_with(|c: char| c.is_ascii_digit()))
}

/// Our request for one of the command lines, built from the same text through our own units
/// (a small reading of tc's grammar, enough for the cases above).
fn ours(args: &str) -> Vec<u8> {
    let psched = Psched::default();
    let words: Vec<&str> = args.split_whitespace().collect();
    let mut placement = Placement::root(1);
    let object = words[0];
    let words = &words[1..];
    let mut i = 3; // after "add|del dev lo"
    while i < words.len() {
        match words[i] {
            "root" => placement.parent = TC_H_ROOT,
            "parent" => {
                i += 1;
                placement.parent = parse_handle(words[i]);
            }
            "handle" | "classid" => {
                i += 1;
                placement.handle = parse_handle(words[i]);
            }
            _ => break,
        }
        i += 1;
    }
    if words[0] == "del" {
        return delete_qdisc(placement).finish(0);
    }
    let kind = words[i];
    let mut rest = words[i + 1..].iter().peekable();
    if object == "class" {
        assert_eq!(kind, "htb", "the test grammar has htb classes only");
        let mut class = HtbClass {
            rate: 0,
            ceil: None,
        };
        while let Some(word) = rest.next() {
            let value = parse_rate_bytes(rest.next().unwrap()).unwrap();
            match *word {
                "rate" => class.rate = value,
                "ceil" => class.ceil = Some(value),
                other => panic!("the test grammar lacks htb class {other}"),
            }
        }
        return add_htb_class(placement, &class, &psched).finish(0);
    }
    let pct = |s: &str| Fraction::parse(s).expect("percent");
    let qdisc = match kind {
        "netem" => {
            let mut n = Netem::new();
            while let Some(word) = rest.next() {
                match *word {
                    "limit" => n.limit = rest.next().unwrap().parse().unwrap(),
                    "delay" => {
                        n.latency_us = parse_time_us(rest.next().unwrap()).unwrap();
                        if is_number(rest.peek()) {
                            n.jitter_us = parse_time_us(rest.next().unwrap()).unwrap();
                            if is_number(rest.peek()) {
                                n.delay_correlation = pct(rest.next().unwrap());
                            }
                        }
                    }
                    "loss" => {
                        n.loss = pct(rest.next().unwrap());
                        if is_number(rest.peek()) {
                            n.loss_correlation = pct(rest.next().unwrap());
                        }
                    }
                    "duplicate" => {
                        n.duplicate = pct(rest.next().unwrap());
                        if is_number(rest.peek()) {
                            n.duplicate_correlation = pct(rest.next().unwrap());
                        }
                    }
                    "corrupt" => {
                        n.corrupt = pct(rest.next().unwrap());
                        if is_number(rest.peek()) {
                            n.corrupt_correlation = pct(rest.next().unwrap());
                        }
                    }
                    "reorder" => {
                        n.reorder = pct(rest.next().unwrap());
                        if is_number(rest.peek()) {
                            n.reorder_correlation = pct(rest.next().unwrap());
                        }
                    }
                    "gap" => n.gap = rest.next().unwrap().parse().unwrap(),
                    "rate" => n.rate = Some(parse_rate_bytes(rest.next().unwrap()).unwrap()),
                    other => panic!("the test grammar lacks netem {other}"),
                }
            }
            Qdisc::Netem(n)
        }
        "tbf" => {
            let mut t = Tbf::default();
            while let Some(word) = rest.next() {
                let value = rest.next().unwrap();
                match *word {
                    "rate" => t.rate = parse_rate_bytes(value).unwrap(),
                    "burst" => t.burst = parse_size(value).unwrap(),
                    "limit" => t.limit = parse_size(value).unwrap(),
                    "peakrate" => t.peak_rate = Some(parse_rate_bytes(value).unwrap()),
                    "mtu" => t.mtu = parse_size(value).unwrap(),
                    other => panic!("the test grammar lacks tbf {other}"),
                }
            }
            Qdisc::Tbf(t)
        }
        "prio" => {
            assert_eq!(rest.next(), Some(&"bands"));
            let bands = rest.next().unwrap().parse().unwrap();
            let mut prio = Prio::with_bands(bands);
            if rest.next() == Some(&"priomap") {
                for (slot, v) in prio.priomap.iter_mut().zip(rest) {
                    *slot = v.parse().unwrap();
                }
            }
            Qdisc::Prio(prio)
        }
        "htb" => {
            assert_eq!(rest.next(), Some(&"default"));
            let default_class = u32::from_str_radix(rest.next().unwrap(), 16).unwrap();
            Qdisc::Htb(Htb { default_class })
        }
        other => panic!("the test grammar lacks qdisc {other}"),
    };
    qdisc.validate(&psched).expect("valid");
    add_qdisc(placement, &qdisc, &psched).finish(0)
}

fn our_requests_equal_iproute2s_bytes() {
    let golden = read_golden();
    let netem_cases = CASES.iter().filter(|c| c.contains(" netem")).count();
    assert!(
        netem_cases >= 10,
        "at least ten netem parameter sets are compared"
    );
    let mut mismatches = Vec::new();
    for args in CASES {
        let Some(expected) = golden.get(*args) else {
            mismatches.push(format!("{args}: not in the golden file (bless it)"));
            continue;
        };
        let got = hex(&ours(args));
        if &got != expected {
            mismatches.push(format!("{args}:\n  iproute2 {expected}\n  ours     {got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Runs `tc ARGS` under strace in `netns` and returns the first netlink request it sent,
/// with the sequence number zeroed.
fn capture(netns: &str, args: &str) -> Vec<u8> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "strace",
            "-f",
            "-e",
            "trace=sendmsg",
        ])
        .args(["-e", "write=all", "-xx", "-s", "65536", "-o", "/dev/stderr"])
        .arg("tc")
        .args(args.split_whitespace())
        .output()
        .expect("strace tc");
    let trace = String::from_utf8_lossy(&out.stderr);
    let mut bytes = Vec::new();
    let mut in_dump = false;
    for line in trace.lines() {
        if line.contains("bytes in buffer") {
            if in_dump {
                break;
            }
            in_dump = true;
            continue;
        }
        if in_dump {
            if !line.starts_with(" | ") {
                break;
            }
            // " | OFFSET  xx xx ... xx  ascii |": the hex occupies columns 10..58.
            let hex_area = line.get(10..58.min(line.len())).unwrap_or("");
            bytes.extend(
                hex_area
                    .split_whitespace()
                    .map(|h| u8::from_str_radix(h, 16).expect("hex byte")),
            );
        }
    }
    assert!(
        bytes.len() >= 16,
        "no request captured for {args}:\n{trace}"
    );
    bytes[8..12].fill(0);
    bytes
}

fn tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn captured_requests_still_match_the_file() {
    for name in ["strace", "tc", "ip"] {
        assert!(
            tool(name),
            "{name} is not installed: scripts/setup.sh installs it"
        );
    }
    let netns = format!("faultline-golden-{}", std::process::id());
    let status = Command::new("ip").args(["netns", "add", &netns]).status();
    assert!(status.is_ok_and(|s| s.success()), "ip netns add");
    let captured: Vec<(String, String)> = CASES
        .iter()
        .map(|args| (args.to_string(), hex(&capture(&netns, args))))
        .collect();
    let _ = Command::new("ip").args(["netns", "del", &netns]).status();

    if std::env::var_os("FAULTLINE_BLESS_GOLDEN").is_some() {
        let version = Command::new("tc")
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let mut text = format!(
            "# Requests sent by `tc ARGS` ({version}), captured with strace in a scratch\n\
             # network namespace; sequence number zeroed. Regenerate: FAULTLINE_BLESS_GOLDEN=1 cargo test -p faultline-netlink --test golden (as root)\n"
        );
        for (args, hex) in &captured {
            text.push_str(&format!("{args}\t{hex}\n"));
        }
        std::fs::write(golden_path(), text).expect("write golden file");
        return;
    }
    let golden = read_golden();
    let drift: Vec<String> = captured
        .iter()
        .filter(|(args, hex)| golden.get(args) != Some(hex))
        .map(|(args, hex)| format!("{args}:\n  file {:?}\n  tc   {hex}", golden.get(args)))
        .collect();
    assert!(
        drift.is_empty(),
        "this machine's tc sends other bytes than the golden file:\n{}",
        drift.join("\n")
    );
}

fn main() -> std::process::ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!(
            "not running as root: the capture of tc's requests is ignored (the golden file is still checked)"
        );
    }
    let trial = |name: &'static str, test: fn(), ignored: bool| {
        libtest_mimic::Trial::test(name, move || {
            std::panic::catch_unwind(test).map_err(|e| {
                let text = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                libtest_mimic::Failed::from(text)
            })
        })
        .with_ignored_flag(ignored)
    };
    let trials = vec![
        trial(
            "our_requests_equal_iproute2s_bytes",
            our_requests_equal_iproute2s_bytes,
            false,
        ),
        trial(
            "captured_requests_still_match_the_file",
            captured_requests_still_match_the_file,
            !root,
        ),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}
