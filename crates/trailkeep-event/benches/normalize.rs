//! Throughput of parse + normalise + canonicalise for typical 1–3 KB events.
//!
//! `cargo bench -p trailkeep-event` (harness = false, plain `std::time`). Prints
//! events/s and MB/s (of input bytes) for one event per call and for NDJSON batches.
//! Target (issue #2): ≥ 100,000 events/s on one core.

use serde_json::{Value, json};
use std::hint::black_box;
use std::time::{Duration, Instant};
use trailkeep_event::{
    Context, InputLimits, ItemKind, ItemResult, Policy, normalize, process_input, split_input,
};

fn events() -> Vec<Value> {
    let account = "4f2a9c1e7b3d4e5f8a6b0c2d1e3f5a7b";
    let mut out = Vec::new();
    for i in 0..64u32 {
        let verb = [
            "create", "update", "delete", "read", "list", "rotate", "push",
        ][i as usize % 7];
        let service = ["codeengine", "container-registry", "kms", "mlops"][i as usize % 4];
        let mut ev = json!({
            "id": format!("7f1b3c2e-5d0a-4c8e-9b1f-{:012x}", i),
            "eventTime": format!("2024-05-14T09:{:02}:35.{:02}+0000", i % 60, i % 100),
            "action": format!("{service}.resource.{verb}"),
            "outcome": if i % 5 == 0 { "failure" } else { "success" },
            "logSourceCRN": format!("crn:v1:bluemix:public:{service}:eu-de:a/{account}:d3b0c442-98fc-4c1e-b3a4-6e2f1c9d8a7b::"),
            "correlationId": format!("c9e4a0d2-7b6f-4e3a-9c1d-{:012x}", i * 7),
            "dataEvent": i % 3 == 0,
            "saveServiceCopy": true,
            "initiator": {
                "id": "IBMid-270001ABCD", "name": "dana.ops@example.com",
                "typeURI": "service/security/account/user",
                "authnId": "IBMid-270001ABCD", "authnName": "dana.ops@example.com",
                "credential": {"type": "token"},
                "host": {"address": "198.51.100.23", "addressType": "IPv4", "agent": "ibmcloud-cli/2.24.0 (linux; amd64)"}
            },
            "target": {
                "id": format!("crn:v1:bluemix:public:{service}:eu-de:a/{account}:d3b0c442-98fc-4c1e-b3a4-6e2f1c9d8a7b:resource:res-{i}"),
                "name": format!("res-{i}"), "typeURI": format!("{service}/resource"),
                "resourceGroupId": format!("crn:v1:bluemix:public:resource-controller::a/{account}::resource-group:9a8b7c6d5e4f")
            },
            "observer": {"name": "ActivityTracker"},
            "reason": {"reasonCode": if i % 5 == 0 { json!("409") } else { json!(200) }, "reasonType": "OK"},
            "requestData": {
                "projectName": "storefront", "resourceName": format!("res-{i}"),
                "image": "icr.io/storefront/web:1.8.2", "scaleMinInstances": 1, "scaleMaxInstances": 10,
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "REGION", "value": "eu-de"}],
                "labels": {"team": "payments", "tier": "frontend", "cost-center": "cc-1042"}
            },
            "responseData": {"status": "deploying", "revision": format!("res-{i}-00001"), "updatedAt": "2024-05-14T09:28:35Z"}
        });
        // Vary the size between ~1.3 and ~3 KB.
        let pad = (i as usize % 8) * 220;
        ev["requestData"]["description"] = json!("d".repeat(pad));
        if i % 4 == 1 {
            ev["requestData"] = json!(ev["requestData"].to_string()); // stringified, as older emitters send
        }
        out.push(ev);
    }
    out
}

/// CPU time this thread has run, in ns (Linux `/proc/thread-self/schedstat`), so that
/// the figure means "one core" even when other processes share the machine.
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

struct Timer {
    wall: Instant,
    cpu: Option<u64>,
}

fn timer() -> Timer {
    Timer {
        wall: Instant::now(),
        cpu: cpu_ns(),
    }
}

fn report(name: &str, n: usize, bytes: usize, t: Timer) {
    let took: Duration = t.wall.elapsed();
    let wall = took.as_secs_f64();
    let cpu = match (t.cpu, cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => wall,
    };
    println!(
        "{name:<42} {:>9.0} events/s {:>7.1} MB/s per CPU-second | wall: {:>9.0} events/s ({n} events, {wall:.2} s wall, {cpu:.2} s CPU)",
        n as f64 / cpu,
        bytes as f64 / cpu / 1e6,
        n as f64 / wall,
    );
}

fn main() {
    let policy = Policy::default();
    let keys = |account: &str| Some(format!("key-{account}").into_bytes());
    let ctx = Context::new(&policy, "default").with_keys(&keys);
    let lines: Vec<Vec<u8>> = events()
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    let avg = lines.iter().map(Vec::len).sum::<usize>() / lines.len();
    let min = lines.iter().map(Vec::len).min().unwrap();
    let max = lines.iter().map(Vec::len).max().unwrap();
    println!(
        "events: {} distinct, {min}..{max} bytes, average {avg} bytes",
        lines.len()
    );

    // Warm up and check that everything is accepted.
    for l in &lines {
        let items = process_input(l, &ctx).unwrap();
        assert!(
            matches!(items[0].result, ItemResult::Accepted(_)),
            "{:?}",
            items[0].result
        );
    }

    let rounds = if std::env::args().any(|a| a == "--quick") {
        300
    } else {
        3_000
    };

    let only_normalize = std::env::args().any(|a| a == "--normalize-only");
    let only_batch = std::env::args().any(|a| a == "--batch-only");
    if !only_normalize && !only_batch {
        parse_only(&lines, rounds);
    }

    // One event per call: split + normalise + canonical bytes.
    let limits = InputLimits::default();
    if only_normalize {
        normalize_only(&lines, &ctx, rounds * 3);
        return;
    }
    let start = timer();
    let (mut n, mut bytes) = (0, 0);
    for _ in 0..if only_batch { 0 } else { rounds } {
        for l in &lines {
            for item in split_input(l, &limits).unwrap() {
                if let ItemKind::Event(raw) = item.kind {
                    let ev = normalize(raw, &ctx).unwrap();
                    black_box(ev.canonical_bytes());
                }
            }
            n += 1;
            bytes += l.len();
        }
    }
    report("single event: parse+normalise+canonical", n, bytes, start);

    // NDJSON batches of 1,000 events.
    let mut batch = Vec::new();
    for i in 0..1_000 {
        batch.extend_from_slice(&lines[i % lines.len()]);
        batch.push(b'\n');
    }
    let start = timer();
    let mut n = 0;
    for _ in 0..rounds * lines.len() / 1_000 {
        let items = process_input(&batch, &ctx).unwrap();
        n += items.len();
        black_box(items);
    }
    report(
        "NDJSON batch of 1,000: process_input",
        n,
        n / 1_000 * batch.len(),
        start,
    );

    normalize_only(&lines, &ctx, rounds);
    // Canonicalisation alone, for reference.
    let stored: Vec<Value> = lines
        .iter()
        .map(|l| {
            let raw = split_input(l, &limits).unwrap().remove(0);
            let ItemKind::Event(raw) = raw.kind else {
                unreachable!()
            };
            normalize(raw, &ctx).unwrap().into_event()
        })
        .collect();
    let start = timer();
    let (mut n, mut bytes) = (0, 0);
    for _ in 0..rounds {
        for v in &stored {
            let b = trailkeep_event::to_canonical_vec(v);
            bytes += b.len();
            n += 1;
            black_box(b);
        }
    }
    report("canonical bytes of a stored event (JCS)", n, bytes, start);
}

#[allow(dead_code)]
fn parse_only(lines: &[Vec<u8>], rounds: usize) {
    let start = timer();
    let (mut n, mut bytes) = (0, 0);
    for _ in 0..rounds {
        for l in lines {
            let v: Value = serde_json::from_slice(l).unwrap();
            black_box(v);
            n += 1;
            bytes += l.len();
        }
    }
    report("serde_json parse to Value only", n, bytes, start);
}

/// Normalisation alone: values parsed and cloned outside the timed part.
fn normalize_only(lines: &[Vec<u8>], ctx: &Context<'_>, rounds: usize) {
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let (mut n, mut bytes, mut cpu) = (0, 0, 0.0f64);
    let wall = Instant::now();
    for _ in 0..rounds / 10 {
        let batch: Vec<Value> = (0..10).flat_map(|_| parsed.iter().cloned()).collect();
        let t = cpu_ns().unwrap_or(0);
        let mut out = Vec::with_capacity(batch.len());
        for v in batch {
            out.push(normalize(trailkeep_event::RawEvent::plain(v), ctx).unwrap());
        }
        cpu += (cpu_ns().unwrap_or(0) - t) as f64 / 1e9;
        n += out.len();
        bytes += lines.iter().map(Vec::len).sum::<usize>() * 10;
        black_box(out);
    }
    let _ = wall;
    println!(
        "{:<42} {:>9.0} events/s {:>7.1} MB/s per CPU-second (parse, canonical bytes and drop not counted)",
        "normalise only (pre-parsed values)",
        n as f64 / cpu,
        bytes as f64 / cpu / 1e6
    );
}
