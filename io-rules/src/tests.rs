//! Rule sets end to end: Chaos Mesh JSON in, injections out.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::json;

use super::*;

const MOUNT: &str = "/data";

fn parse(actions: serde_json::Value) -> Result<RuleSet, RuleError> {
    RuleSet::parse(&actions.to_string(), Path::new(MOUNT))
}

fn store_with(actions: serde_json::Value) -> RuleStore {
    let store = RuleStore::new(MOUNT);
    store.update(parse(actions).expect("valid rules"));
    store
}

fn error_text(actions: serde_json::Value) -> String {
    parse(actions)
        .expect_err("rules must be refused")
        .to_string()
}

// --- Valid examples, as the Chaos Mesh controller turns its documented IOChaos examples
// --- into PodIOChaos actions.

#[test]
fn chaos_mesh_latency_example() {
    // IOChaos: action latency, volumePath /var/run/etcd, path '/var/run/etcd/**/*',
    // delay '100ms', percent 50. The controller also fills faults with errno 0.
    let rules = RuleSet::parse(
        r#"[{"type":"latency","path":"/var/run/etcd/**/*","percent":50,
             "faults":[{"errno":0,"weight":1}],"latency":"100ms",
             "source":"chaos-mesh/io-latency-example"}]"#,
        Path::new("/var/run/etcd"),
    )
    .unwrap();
    let rule = &rules.rules()[0];
    assert_eq!(rule.action_type(), ActionType::Latency);
    assert_eq!(rule.effect(), &Effect::Latency(Duration::from_millis(100)));
    assert_eq!(rule.percent().get(), 50);
    assert_eq!(rule.methods(), MethodSet::ALL);
    assert_eq!(rule.path_pattern(), Some("/var/run/etcd/**/*"));
    assert_eq!(rule.source(), Some("chaos-mesh/io-latency-example"));
}

#[test]
fn chaos_mesh_fault_example() {
    // IOChaos: action fault, path /var/run/etcd/**/*, errno 5, percent 50.
    let rules = parse(json!([{
        "type": "fault", "path": "/var/run/etcd/**/*", "percent": 50,
        "faults": [{"errno": 5, "weight": 1}]
    }]))
    .unwrap();
    let Effect::Fault(errnos) = rules.rules()[0].effect() else {
        panic!("not a fault")
    };
    assert_eq!(
        errnos.iter().map(|(e, w)| (e.get(), w)).collect::<Vec<_>>(),
        [(5, 1)]
    );
}

#[test]
fn chaos_mesh_attr_override_example() {
    // IOChaos: action attrOverride, attr {perm: 72}, path /var/run/etcd/**/*, percent 10.
    // AttrOverrideSpec is inlined into the action on the wire.
    let rules = parse(json!([{
        "type": "attrOverride", "path": "/var/run/etcd/**/*", "percent": 10,
        "faults": [{"errno": 0, "weight": 1}], "perm": 72
    }]))
    .unwrap();
    let rule = &rules.rules()[0];
    let Effect::AttrOverride(attr) = rule.effect() else {
        panic!("not an attrOverride")
    };
    assert_eq!(attr.perm, Some(0o110));
    assert_eq!(rule.methods(), MethodSet::ATTRIBUTE_REPLIES);
}

#[test]
fn chaos_mesh_mistake_example() {
    // IOChaos: action mistake, methods [READ, WRITE], percent 10,
    // mistake {filling: zero, maxOccurrences: 1, maxLength: 10}.
    let rules = parse(json!([{
        "type": "mistake", "path": "/var/run/etcd/**/*", "percent": 10,
        "methods": ["READ", "WRITE"],
        "mistake": {"filling": "zero", "maxOccurrences": 1, "maxLength": 10}
    }]))
    .unwrap();
    let rule = &rules.rules()[0];
    let Effect::Mistake(mistake) = rule.effect() else {
        panic!("not a mistake")
    };
    assert_eq!(mistake.filling, Filling::Zero);
    assert_eq!(mistake.max_occurrences.get(), 1);
    assert_eq!(mistake.max_length.get(), 10);
    assert_eq!(rule.methods(), MethodSet::DATA_TRANSFER);
}

#[test]
fn attributes_under_attr_and_all_time_forms() {
    let rules = parse(json!([{
        "type": "attrOverride", "path": "/data/f",
        "attr": {
            "ino": 9, "size": 1, "blocks": 2, "kind": "directory", "perm": 0o400,
            "nlink": 3, "uid": 4, "gid": 5, "rdev": 6,
            "atime": {"sec": 10, "nsec": 1}, "mtime": 20, "ctime": "1970-01-01T00:00:30Z"
        }
    }]))
    .unwrap();
    let Effect::AttrOverride(attr) = rules.rules()[0].effect() else {
        panic!("not an attrOverride")
    };
    assert_eq!(attr.ino, Some(9));
    assert_eq!(attr.kind, Some(FileKind::Directory));
    assert_eq!(attr.atime, Some(UNIX_EPOCH + Duration::new(10, 1)));
    assert_eq!(attr.mtime, Some(UNIX_EPOCH + Duration::from_secs(20)));
    assert_eq!(attr.ctime, Some(UNIX_EPOCH + Duration::from_secs(30)));
}

#[test]
fn defaults_percent_and_methods() {
    let rules = parse(json!([
        {"type": "fault", "faults": [{"errno": 5}]},
        {"type": "latency", "latency": "1ms", "percent": 0, "methods": []},
    ]))
    .unwrap();
    for rule in rules.rules() {
        // Chaos Mesh's default; its Go types send an omitted percent as 0.
        assert_eq!(rule.percent(), Percent::ALWAYS);
        assert_eq!(rule.methods(), MethodSet::ALL);
        assert_eq!(rule.path_pattern(), None);
    }
    assert!(parse(json!([])).unwrap().is_empty());
}

// --- Invalid input: refused whole, naming the action and the field.

#[test]
fn refusals_name_the_field() {
    let cases = [
        (
            json!([{"type": "latency", "latency": "1ms", "percent": 150}]),
            "actions[0].percent: 150 is out of range 0..=100",
        ),
        (
            json!([{"type": "latency", "latency": "1ms", "percent": -1}]),
            "actions[0].percent: -1 is out of range 0..=100",
        ),
        (
            json!([{"type": "latency", "latency": "1ms"}, {"type": "explode"}]),
            "actions[1].type: unknown type \"explode\"; expected one of latency, fault, attrOverride, mistake",
        ),
        (
            json!([{"path": "/data/**"}]),
            "actions[0].type: missing; expected one of latency, fault, attrOverride, mistake",
        ),
        (
            json!([{"type": "fault", "faults": [{"errno": "EIO", "weight": 1}]}]),
            "actions[0].faults[0].errno: invalid type: string \"EIO\", expected i64",
        ),
        (
            json!([{"type": "fault", "faults": [{"errno": 5}, {"errno": 0, "weight": 1}]}]),
            "actions[0].faults[1].errno: 0 is out of range 1..=511",
        ),
        (
            json!([{"type": "fault", "faults": [{"errno": 5, "weight": -2}]}]),
            "actions[0].faults[0].weight: -2 is out of range 0..=4294967295",
        ),
        (
            json!([{"type": "fault", "faults": [{"errno": 5, "weight": 0}]}]),
            "actions[0].faults: the weights add up to 0; give at least one fault a positive weight",
        ),
        (
            json!([{"type": "fault"}]),
            "actions[0].faults: required for type fault",
        ),
        (
            json!([{"type": "fault", "faults": []}]),
            "actions[0].faults: a fault action needs at least one {errno, weight}",
        ),
        (
            json!([{"type": "latency"}]),
            "actions[0].latency: required for type latency",
        ),
        (
            json!([{"type": "latency", "latency": "10"}]),
            "actions[0].latency: \"10\" has no unit after \"10\" (use ns, us, µs, ms, s, m or h)",
        ),
        (
            json!([{"type": "latency", "latency": "-1s"}]),
            "actions[0].latency: \"-1s\" is negative",
        ),
        (
            json!([{"type": "latency", "latency": "1ms", "methods": ["read", "scribble"]}]),
            "actions[0].methods[1]: unknown method \"scribble\"",
        ),
        (
            json!([{"type": "latency", "latency": "1ms", "path": "/data/[a"}]),
            "actions[0].path: invalid glob \"/data/[a\": unclosed character class; missing ']'",
        ),
        (
            json!([{"type": "latency", "latency": "1ms", "precent": 10}]),
            "actions[0].precent: unknown field; an IOChaos action has type, path, methods, percent, faults, latency, mistake, source, attr, ino, size, blocks, atime, mtime, ctime, kind, perm, nlink, uid, gid, rdev",
        ),
        (
            json!([{"type": "attrOverride", "methods": ["read"], "perm": 1}]),
            "actions[0].methods: none of these methods applies to type attrOverride, which acts on lookup, getattr, setattr, mknod, mkdir, symlink, link, create",
        ),
        (
            json!([{"type": "attrOverride"}]),
            "actions[0]: names no attribute to override",
        ),
        (
            json!([{"type": "attrOverride", "perm": 0o10000}]),
            "actions[0].perm: 4096 is out of range 0..=4095 (0o7777)",
        ),
        (
            json!([{"type": "attrOverride", "attr": {"kind": "folder"}}]),
            "actions[0].attr.kind: unknown file kind \"folder\"; expected one of namedPipe, charDevice, blockDevice, directory, regularFile, symlink, socket",
        ),
        (
            json!([{"type": "attrOverride", "uid": 1, "attr": {"gid": 1}}]),
            "actions[0].attr: attributes are given both inline and under `attr`; use one form",
        ),
        (
            json!([{"type": "attrOverride", "atime": {"sec": 1, "nsec": -1}}]),
            "actions[0].atime: nsec -1 is out of range 0..1000000000",
        ),
        (
            json!([{"type": "mistake"}]),
            "actions[0].mistake: required for type mistake",
        ),
        (
            json!([{"type": "mistake", "mistake": {"filling": "ones", "maxOccurrences": 1, "maxLength": 1}}]),
            "actions[0].mistake.filling: unknown filling \"ones\"; expected zero or random",
        ),
        (
            json!([{"type": "mistake", "mistake": {"filling": "zero", "maxOccurrences": 0, "maxLength": 1}}]),
            "actions[0].mistake.maxOccurrences: 0 is out of range 1..",
        ),
        (
            json!([{"type": "mistake", "mistake": {"filling": "zero", "maxOccurrences": 1}}]),
            "actions[0].mistake.maxLength: required for type mistake",
        ),
        (
            json!([{"type": "mistake", "methods": ["open"],
                 "mistake": {"filling": "zero", "maxOccurrences": 1, "maxLength": 1}}]),
            "actions[0].methods: none of these methods applies to type mistake, which acts on read, write",
        ),
        (json!([7]), "actions[0]: expected an object, got a number"),
        (
            json!({"type": "latency"}),
            "rules must be a JSON array of IOChaos actions, got an object",
        ),
    ];
    for (actions, expected) in cases {
        assert_eq!(error_text(actions.clone()), expected, "for {actions}");
    }
}

#[test]
fn malformed_json_is_a_syntax_error() {
    let error = RuleSet::parse("[{\"type\": ", Path::new(MOUNT)).unwrap_err();
    assert!(matches!(error, RuleError::Syntax(_)), "{error}");
    assert!(error.location().is_none());
}

#[test]
fn one_bad_action_refuses_the_whole_update() {
    let store = store_with(json!([{"type": "fault", "faults": [{"errno": 5}]}]));
    let generation = store.generation();
    assert!(
        parse(json!([
            {"type": "latency", "latency": "1ms"},
            {"type": "fault", "percent": 101, "faults": [{"errno": 5}]},
        ]))
        .is_err()
    );
    // Nothing was swapped: the caller only updates with a parsed RuleSet.
    assert_eq!(store.generation(), generation);
    assert_eq!(store.evaluate(Method::Read, Path::new("f")).errno, Some(5));
}

// --- Evaluation.

#[test]
fn empty_store_does_nothing() {
    let store = RuleStore::new(MOUNT);
    assert!(store.is_empty());
    assert_eq!(store.generation(), 0);
    assert!(store.evaluate(Method::Read, Path::new("f")).is_nothing());
    assert!(!store.may_match(Path::new("f"), MethodSet::ALL));
    assert!(!store.may_match_any_path(MethodSet::ALL));
}

#[test]
fn paths_and_methods_select_operations() {
    let store = store_with(json!([{
        "type": "fault", "path": "/data/logs/**", "methods": ["read", "WRITE"],
        "faults": [{"errno": 5, "weight": 1}]
    }]));
    let errno = |method, path: &str| store.evaluate(method, Path::new(path)).errno;
    assert_eq!(errno(Method::Read, "logs/a.log"), Some(5));
    assert_eq!(errno(Method::Write, "/logs/deep/b.log"), Some(5));
    assert_eq!(errno(Method::Open, "logs/a.log"), None);
    assert_eq!(errno(Method::Read, "other/a.log"), None);
    assert_eq!(errno(Method::Read, "logs"), None);

    assert!(store.may_match(Path::new("logs/x"), MethodSet::DATA_TRANSFER));
    assert!(!store.may_match(Path::new("logs/x"), MethodSet::ATTRIBUTE_REPLIES));
    assert!(!store.may_match(Path::new("other"), MethodSet::ALL));
    assert!(store.may_match_any_path(Method::Read.into()));
    assert!(!store.may_match_any_path(MethodSet::of(&[Method::Lookup, Method::Getattr])));

    let status = store.status();
    assert_eq!(status.rules[0].matched, 2);
    assert_eq!(status.rules[0].injected, 2);
}

#[test]
fn attr_override_does_not_touch_data_paths() {
    let store = store_with(json!([{"type": "attrOverride", "path": "/data/**", "perm": 72}]));
    assert!(!store.may_match(Path::new("f"), MethodSet::DATA_TRANSFER));
    assert!(store.may_match(Path::new("f"), Method::Getattr.into()));
    assert_eq!(
        store.evaluate(Method::Read, Path::new("f")),
        Injection {
            generation: 1,
            ..Injection::default()
        }
    );
    let injection = store.evaluate(Method::Getattr, Path::new("f"));
    assert_eq!(injection.attr.and_then(|a| a.perm), Some(0o110));
}

#[test]
fn several_actions_combine_in_order() {
    let mistake = json!({"filling": "random", "maxOccurrences": 2, "maxLength": 3});
    let store = store_with(json!([
        {"type": "latency", "latency": "10ms"},
        {"type": "latency", "latency": "5ms", "methods": ["read"]},
        {"type": "attrOverride", "uid": 1, "gid": 1},
        {"type": "attrOverride", "uid": 2},
        {"type": "mistake", "mistake": mistake},
        {"type": "fault", "methods": ["write"], "faults": [{"errno": 28}]},
        {"type": "latency", "latency": "1s"},
    ]));
    let read = store.evaluate(Method::Read, Path::new("f"));
    assert_eq!(read.delay, Some(Duration::from_millis(1015)));
    assert_eq!(read.errno, None);
    assert!(read.mistake.is_some());
    assert_eq!(read.attr, None);

    // The fault stops evaluation: the 1 s latency after it does not apply.
    let write = store.evaluate(Method::Write, Path::new("f"));
    assert_eq!(write.delay, Some(Duration::from_millis(10)));
    assert_eq!(write.errno, Some(28));

    let lookup = store.evaluate(Method::Lookup, Path::new("f"));
    let attr = lookup.attr.unwrap();
    assert_eq!((attr.uid, attr.gid), (Some(2), Some(1)));

    let counted: Vec<_> = store.status().rules.iter().map(|r| r.matched).collect();
    assert_eq!(counted, [3, 1, 1, 1, 2, 1, 2]);
}

#[test]
fn percent_is_roughly_honoured() {
    let store = store_with(json!([{"type": "fault", "percent": 30, "faults": [{"errno": 5}]}]));
    let trials = 20_000;
    let failed = (0..trials)
        .filter(|_| store.evaluate(Method::Read, Path::new("f")).errno.is_some())
        .count();
    // 30 % of 20 000 is 6 000 with a standard deviation of about 65.
    assert!(
        (5_600..=6_400).contains(&failed),
        "{failed} of {trials} failed"
    );
    let status = store.status();
    assert_eq!(status.rules[0].matched, trials as u64);
    assert_eq!(status.rules[0].injected, failed as u64);
}

#[test]
fn errnos_follow_their_weights() {
    let store = store_with(json!([{
        "type": "fault",
        "faults": [{"errno": 5, "weight": 1}, {"errno": 28, "weight": 3}, {"errno": 13, "weight": 0}]
    }]));
    let trials = 20_000;
    let mut eio = 0;
    let mut enospc = 0;
    for _ in 0..trials {
        match store.evaluate(Method::Write, Path::new("f")).errno {
            Some(5) => eio += 1,
            Some(28) => enospc += 1,
            other => panic!("unexpected errno {other:?}"),
        }
    }
    // Expected 5 000 and 15 000 (standard deviation about 61).
    assert!((4_600..=5_400).contains(&eio), "EIO {eio} times");
    assert_eq!(eio + enospc, trials);
}

#[test]
fn mistakes_from_rules_corrupt_buffers() {
    let store = store_with(json!([{
        "type": "mistake", "methods": ["read"],
        "mistake": {"filling": "zero", "maxOccurrences": 2, "maxLength": 4}
    }]));
    let injection = store.evaluate(Method::Read, Path::new("f"));
    let mut buf = [0xFFu8; 64];
    injection.mistake.expect("a mistake").apply(&mut buf);
    let zeroed = buf.iter().filter(|&&b| b == 0).count();
    assert!((1..=8).contains(&zeroed), "{zeroed} bytes zeroed");
}

// --- Live updates.

#[test]
fn update_swaps_rules_and_resets_counters() {
    let store = store_with(json!([{"type": "fault", "faults": [{"errno": 5}]}]));
    assert_eq!(store.generation(), 1);
    store.evaluate(Method::Read, Path::new("f"));
    let generation =
        store.update(parse(json!([{"type": "fault", "faults": [{"errno": 28}]}])).unwrap());
    assert_eq!(generation, 2);
    assert_eq!(store.status().rules[0].matched, 0);
    assert_eq!(store.evaluate(Method::Read, Path::new("f")).errno, Some(28));
    assert_eq!(store.clear(), 3);
    assert!(store.is_empty());
    assert!(store.evaluate(Method::Read, Path::new("f")).is_nothing());
}

#[test]
fn sleep_runs_its_course_without_updates() {
    let store = store_with(json!([{"type": "latency", "latency": "30ms"}]));
    let injection = store.evaluate(Method::Read, Path::new("f"));
    let started = Instant::now();
    let outcome = store.sleep(injection.delay.unwrap(), injection.generation);
    assert_eq!(outcome, SleepOutcome::Elapsed);
    assert!(started.elapsed() >= Duration::from_millis(30));
}

#[test]
fn update_cuts_sleeps_in_flight_short() {
    let store = Arc::new(store_with(json!([{"type": "latency", "latency": "1h"}])));
    let injection = store.evaluate(Method::Read, Path::new("f"));
    let sleepers: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                let started = Instant::now();
                let outcome = store.sleep(injection.delay.unwrap(), injection.generation);
                (outcome, started.elapsed())
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    store.clear();
    for sleeper in sleepers {
        let (outcome, slept) = sleeper.join().unwrap();
        assert_eq!(outcome, SleepOutcome::CutShort);
        assert!(slept < Duration::from_secs(10), "slept {slept:?}");
    }
    // An injection from before the update does not sleep at all afterwards.
    assert_eq!(
        store.sleep(Duration::from_secs(3600), injection.generation),
        SleepOutcome::CutShort
    );
}

#[test]
fn a_cancelled_sleep_ends_at_once_and_only_that_one() {
    let store = Arc::new(store_with(json!([{"type": "latency", "latency": "1h"}])));
    let injection = store.evaluate(Method::Read, Path::new("f"));
    let flags: Vec<_> = (0..2)
        .map(|_| Arc::new(std::sync::atomic::AtomicBool::new(false)))
        .collect();
    let sleepers: Vec<_> = flags
        .iter()
        .map(|flag| {
            let (store, flag) = (Arc::clone(&store), Arc::clone(flag));
            thread::spawn(move || {
                store.sleep_unless(Duration::from_secs(3600), injection.generation, &flag)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(50));
    flags[0].store(true, std::sync::atomic::Ordering::Release);
    store.wake_sleepers();
    let mut sleepers = sleepers.into_iter();
    let first = sleepers.next().unwrap();
    assert_eq!(first.join().unwrap(), SleepOutcome::Interrupted);
    let second = sleepers.next().unwrap();
    thread::sleep(Duration::from_millis(50));
    assert!(
        !second.is_finished(),
        "a sleeper whose flag was not set woke up"
    );
    store.clear();
    assert_eq!(second.join().unwrap(), SleepOutcome::CutShort);
    // A flag set before the sleep starts: no sleep at all.
    let set = std::sync::atomic::AtomicBool::new(true);
    let later = store_with(json!([{"type": "latency", "latency": "1h"}]));
    let injection = later.evaluate(Method::Read, Path::new("f"));
    assert_eq!(
        later.sleep_unless(Duration::from_secs(3600), injection.generation, &set),
        SleepOutcome::Interrupted
    );
}

#[tokio::test]
async fn async_sleep_is_cut_short_too() {
    let store = Arc::new(store_with(json!([{"type": "latency", "latency": "1h"}])));
    let injection = store.evaluate(Method::Read, Path::new("f"));
    let sleeper = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .sleep_async(Duration::from_secs(3600), injection.generation)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.clear();
    let outcome = tokio::time::timeout(Duration::from_secs(10), sleeper).await;
    assert_eq!(outcome.unwrap().unwrap(), SleepOutcome::CutShort);
    assert_eq!(
        store
            .sleep_async(Duration::from_millis(5), store.generation())
            .await,
        SleepOutcome::Elapsed
    );
}

#[test]
fn update_hook_runs_before_update_returns() {
    let store = RuleStore::new(MOUNT);
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    store.set_update_hook(Box::new(move |previous, current| {
        assert!(previous.is_empty());
        assert_eq!(current.len(), 1);
        seen.fetch_add(1, Ordering::SeqCst);
    }));
    store.update(parse(json!([{"type": "latency", "latency": "1ms"}])).unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn wait_for_update_sees_the_next_generation() {
    let store = Arc::new(RuleStore::new(MOUNT));
    let waiter = {
        let store = Arc::clone(&store);
        thread::spawn(move || store.wait_for_update(0, Some(Duration::from_secs(10))))
    };
    thread::sleep(Duration::from_millis(20));
    store.clear();
    assert_eq!(waiter.join().unwrap(), 1);
    assert_eq!(store.wait_for_update(1, Some(Duration::from_millis(5))), 1);
}

#[test]
fn status_serializes_for_the_control_plane() {
    let store = store_with(json!([{
        "type": "fault", "path": "/data/**", "methods": ["read"], "percent": 100,
        "faults": [{"errno": 5, "weight": 1}], "source": "default/io-fault"
    }]));
    store.evaluate(Method::Read, Path::new("f"));
    let status = serde_json::to_value(store.status()).unwrap();
    assert_eq!(
        status,
        json!({
            "generation": 1,
            "mountPoint": "/data",
            "rules": [{
                "index": 0, "type": "fault", "path": "/data/**", "methods": ["read"],
                "percent": 100, "effect": {"fault": [{"errno": 5, "weight": 1}]},
                "source": "default/io-fault", "matched": 1, "injected": 1
            }]
        })
    );
}

#[test]
fn more_actions_than_a_volume_takes_are_refused_by_count() {
    let action = json!({"type": "latency", "latency": "1ms", "path": "/data/f"});
    let at_limit = serde_json::Value::Array(vec![action.clone(); crate::MAX_ACTIONS]);
    assert_eq!(
        RuleSet::from_json_value(&at_limit, Path::new("/data"))
            .unwrap()
            .len(),
        crate::MAX_ACTIONS
    );
    let over = serde_json::Value::Array(vec![action; crate::MAX_ACTIONS + 1]);
    let err = RuleSet::from_json_value(&over, Path::new("/data")).unwrap_err();
    assert!(
        matches!(err, RuleError::TooMany { count, limit } if count == 1025 && limit == 1024),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "1025 actions; one volume takes at most 1024"
    );
}

#[test]
fn an_oversized_text_is_refused_by_count_before_it_is_parsed() {
    let action = r#"{"type":"latency","latency":"1ms","path":"/data/f"}"#;
    let over = format!("[{}]", vec![action; crate::MAX_ACTIONS + 1].join(","));
    let err = crate::check_action_count(&over).unwrap_err();
    assert_eq!(
        err.to_string(),
        "1025 actions; one volume takes at most 1024"
    );
    assert!(matches!(
        RuleSet::parse(&over, Path::new("/data")),
        Err(RuleError::TooMany { count: 1025, .. })
    ));
    // Counted whatever the elements are: the full parse names what is wrong with them.
    let at_limit = format!("[{}]", vec!["7"; crate::MAX_ACTIONS].join(","));
    assert!(crate::check_action_count(&at_limit).is_ok());
    // Not an array, or not JSON: left for the parse to name.
    assert!(crate::check_action_count(r#"{"type":"fault"}"#).is_ok());
    assert!(crate::check_action_count("[{").is_ok());
}

#[test]
fn matchers_are_compiled_by_the_store_not_by_validation() {
    let rules = RuleSet::parse(
        r#"[{"type":"fault","path":"/data/**/*.db","faults":[{"errno":5}]},
            {"type":"latency","latency":"1ms"}]"#,
        Path::new("/data"),
    )
    .unwrap();
    // Validated only (what the agent does): nothing compiled.
    assert!(!rules.is_compiled());
    let store = crate::RuleStore::new("/data");
    store.update(rules);
    assert!(store.rules().is_compiled());
}
