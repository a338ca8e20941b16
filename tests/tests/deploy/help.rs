//! A binary's flags as its `--help` prints them (clap's format): the source of truth the
//! manifests are compared with.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flag {
    /// Whether the flag takes a value (`--name <VALUE>`).
    pub takes_value: bool,
    pub default: Option<String>,
}

/// Long flags (without the leading `--`) of a `--help` text.
pub fn parse(help: &str) -> BTreeMap<String, Flag> {
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        let mut words = trimmed.split_whitespace();
        let first = words.next().unwrap_or_default();
        let long = if first.starts_with("--") {
            Some(first)
        } else if first.len() == 3 && first.starts_with('-') && first.ends_with(',') {
            words.next().filter(|w| w.starts_with("--"))
        } else {
            None
        };
        if let Some(long) = long {
            let name = long.trim_start_matches("--").to_owned();
            let takes_value = words.next().is_some_and(|w| w.starts_with('<'));
            flags.insert(
                name.clone(),
                Flag {
                    takes_value,
                    default: None,
                },
            );
            current = Some(name);
        } else if trimmed.is_empty() || !line.starts_with(' ') {
            current = None;
        }
        if let (Some(name), Some(start)) = (&current, line.find("[default: ")) {
            let rest = &line[start + "[default: ".len()..];
            let value = rest.split(']').next().unwrap_or_default().to_owned();
            if let Some(flag) = flags.get_mut(name) {
                flag.default = Some(value);
            }
        }
    }
    flags
}

/// A manifest's argument list: `--name=value` or bare `--name` switches, after the positional
/// words (the subcommand). Values given as a separate word are refused: the manifests use `=`
/// so that every value is unambiguous.
pub fn args(words: &[String]) -> (Vec<String>, Vec<(String, Option<String>)>) {
    let positional: Vec<String> = words
        .iter()
        .take_while(|w| !w.starts_with("--"))
        .cloned()
        .collect();
    let flags = words[positional.len()..]
        .iter()
        .map(|w| {
            assert!(
                w.starts_with("--"),
                "{w:?}: a value without --name= before it"
            );
            match w[2..].split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (w[2..].to_owned(), None),
            }
        })
        .collect();
    (positional, flags)
}

#[test]
fn clap_help_is_parsed() {
    let help = "\
Usage: x [OPTIONS]

Options:
      --listen <LISTEN>
          gRPC address (mTLS) [default: 0.0.0.0:31767]
      --cert <CERT>
          The agent's certificate (PEM)
      --insecure-unix-plaintext
          Allow plaintext
      --socket <SOCKET>            The socket [default: /run/faultline/agent.sock]
      --allowed-client <ALLOWED_CLIENTS>
          repeatable
          [default: faultline-controller.faultline.svc]
  -h, --help
          Print help
";
    let flags = parse(help);
    assert_eq!(flags["listen"].default.as_deref(), Some("0.0.0.0:31767"));
    assert!(flags["cert"].takes_value && flags["cert"].default.is_none());
    assert!(!flags["insecure-unix-plaintext"].takes_value);
    assert_eq!(
        flags["socket"].default.as_deref(),
        Some("/run/faultline/agent.sock")
    );
    assert_eq!(
        flags["allowed-client"].default.as_deref(),
        Some("faultline-controller.faultline.svc")
    );
    assert!(flags.contains_key("help"));
}
