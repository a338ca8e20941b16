//! `pb.ChaosDaemon` pinned, fact by fact, to Chaos Mesh's current chaos-daemon API
//! (chaos-mesh/chaos-mesh, pkg/chaosdaemon/pb/chaosdaemon.proto): every rpc with its request
//! and response types, every message field (name, number, type, label), every enum value and
//! every reserved number and name. The tables in `golden_table.rs` were produced once from
//! upstream's compiled descriptors by `print_golden_table` below (protoc -o upstream.bin
//! --include_imports chaosdaemon.proto); the test compares them with the descriptors our build
//! compiles, so any drift — a renamed field, a changed number or type, a missing or extra
//! message, rpc or enum value — fails and is listed.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

#[path = "golden/table.rs"]
mod golden_table;

/// One fact of a package, as a line of text that sorts and diffs well.
fn facts(set: &FileDescriptorSet, package: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in set.file.iter().filter(|f| f.package() == package) {
        for service in &file.service {
            for method in &service.method {
                out.insert(format!(
                    "rpc {package}.{}.{}({}) returns ({})",
                    service.name(),
                    method.name(),
                    method.input_type(),
                    method.output_type()
                ));
            }
        }
        for message in &file.message_type {
            message_facts(&format!("{package}.{}", message.name()), message, &mut out);
        }
        for e in &file.enum_type {
            enum_facts(&format!("{package}.{}", e.name()), e, &mut out);
        }
    }
    out
}

fn message_facts(name: &str, message: &DescriptorProto, out: &mut BTreeSet<String>) {
    out.insert(format!("message {name}"));
    for field in &message.field {
        let ty = match field.r#type() {
            Type::Message | Type::Enum => field.type_name().to_owned(),
            other => other
                .as_str_name()
                .trim_start_matches("TYPE_")
                .to_lowercase(),
        };
        let label = match field.label() {
            Label::Repeated => "repeated",
            Label::Required => "required",
            Label::Optional if field.proto3_optional() => "proto3-optional",
            Label::Optional => "singular",
        };
        out.insert(format!(
            "field {name}.{} = {} {ty} {label}",
            field.name(),
            field.number()
        ));
    }
    for range in &message.reserved_range {
        out.insert(format!(
            "reserved {name} {}..{}",
            range.start(),
            range.end()
        ));
    }
    for reserved in &message.reserved_name {
        out.insert(format!("reserved {name} {reserved:?}"));
    }
    for nested in &message.nested_type {
        message_facts(&format!("{name}.{}", nested.name()), nested, out);
    }
    for e in &message.enum_type {
        enum_facts(&format!("{name}.{}", e.name()), e, out);
    }
}

fn enum_facts(name: &str, e: &EnumDescriptorProto, out: &mut BTreeSet<String>) {
    for value in &e.value {
        out.insert(format!("enum {name}.{} = {}", value.name(), value.number()));
    }
}

fn ours() -> BTreeSet<String> {
    let set = FileDescriptorSet::decode(faultline_proto::FILE_DESCRIPTOR_SET)
        .expect("the build's descriptors decode");
    facts(&set, "pb")
}

#[test]
fn pb_chaos_daemon_is_chaos_meshs_current_api() {
    let golden: BTreeSet<String> = golden_table::PB.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        golden.len(),
        golden_table::PB.len(),
        "a golden fact is listed twice"
    );
    let ours = ours();
    let missing: Vec<_> = golden.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&golden).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "pb drifted from Chaos Mesh's chaosdaemon.proto\n  upstream has, we do not: {missing:#?}\n  we have, upstream does not: {extra:#?}"
    );
}

/// The facts the issue names, spelled out so that a change to the table itself is seen too.
#[test]
fn the_fields_chaos_mesh_always_sets_are_as_upstream() {
    let ours = ours();
    for fact in [
        "field pb.TimeRequest.pod_container_name = 6 string singular",
        "field pb.ApplyHttpChaosRequest.tls = 8 string singular",
        "field pb.ApplyHttpChaosRequest.proxy_ports = 2 uint32 repeated",
        "field pb.ContainerRequest.action = 1 .pb.ContainerAction singular",
        "rpc pb.ChaosDaemon.ApplyBlockChaos(.pb.ApplyBlockChaosRequest) returns (.pb.ApplyBlockChaosResponse)",
        "rpc pb.ChaosDaemon.InstallJVMRules(.pb.InstallJVMRulesRequest) returns (.google.protobuf.Empty)",
        "reserved pb.Tc 6..7",
        "reserved pb.Tc 7..8",
    ] {
        assert!(ours.contains(fact), "missing: {fact}");
    }
}

/// Prints the golden table from upstream's compiled descriptors (run once, when Chaos Mesh's
/// API changes): `protoc -I <chaos-mesh>/pkg/chaosdaemon/pb -I proto/proto --include_imports
/// -o /tmp/upstream.bin <chaos-mesh>/pkg/chaosdaemon/pb/chaosdaemon.proto`, then
/// `UPSTREAM_DESCRIPTORS=/tmp/upstream.bin cargo test -p faultline-proto --test golden --
/// --ignored --nocapture print_golden_table`.
#[test]
#[ignore = "a generator, not a check: needs UPSTREAM_DESCRIPTORS (upstream's compiled chaosdaemon.proto)"]
fn print_golden_table() {
    let path = std::env::var("UPSTREAM_DESCRIPTORS").expect("UPSTREAM_DESCRIPTORS is set");
    let bytes = std::fs::read(&path).expect("the descriptor set reads");
    let set = FileDescriptorSet::decode(bytes.as_slice()).expect("a FileDescriptorSet");
    println!("pub const PB: &[&str] = &[");
    for fact in facts(&set, "pb") {
        println!("    {fact:?},");
    }
    println!("];");
}
