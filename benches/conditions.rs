//! Condition evaluation cost per webhook (issue 3): five payload/header conditions and a JEXL
//! condition (`bench/fixtures/conditions-trigger.yaml`) over a 10 KiB push payload
//! (`bench/fixtures/payload-10k.json`).
//!
//!   cargo bench --bench conditions
//!
//! "project + evaluate" is what intake adds to a webhook of a trigger with conditions; compare it
//! with the intake latency of `bench/intake.sh`.

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::Value;
use std::hint::black_box;
use triggerd::domain::matching::{CompiledConditions, Outcome};
use triggerd::domain::trigger::parse_trigger;
use triggerd::domain::BodyFormat;
use triggerd::expr::context::{parse_payload, TriggerContext};
use triggerd::expr::projection::Projection;

const TRIGGER: &str = include_str!("../bench/fixtures/conditions-trigger.yaml");
const PAYLOAD: &str = include_str!("../bench/fixtures/payload-10k.json");

fn context<'a>(payload: &'a Value, headers: &'a [(String, String)]) -> TriggerContext<'a> {
    TriggerContext {
        payload,
        headers,
        event_id: "0123456789abcdef01234567",
        trigger_identifier: "conditional",
        pipeline_identifier: "hello",
        pipeline_name: "Hello",
        execution_id: None,
    }
}

fn conditions(c: &mut Criterion) {
    let spec = parse_trigger(TRIGGER, BodyFormat::Yaml).expect("the benchmark trigger is valid");
    let compiled = CompiledConditions::compile(&spec).expect("compiles");
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-github-event".to_owned(), "push".to_owned()),
        ("user-agent".to_owned(), "GitHub-Hookshot/abc".to_owned()),
    ];
    let parsed = parse_payload(PAYLOAD);
    assert_eq!(
        compiled.evaluate(&context(&parsed, &headers)).outcome,
        Outcome::Matched,
        "the benchmark payload meets every condition"
    );

    c.bench_function("evaluate 6 conditions (payload parsed)", |b| {
        b.iter(|| black_box(compiled.evaluate(&context(black_box(&parsed), &headers))))
    });
    c.bench_function("parse 10 KiB payload + evaluate 6 conditions", |b| {
        b.iter(|| {
            let payload = parse_payload(black_box(PAYLOAD));
            black_box(compiled.evaluate(&context(&payload, &headers)).outcome)
        })
    });
    let projection = Projection::of(compiled.references());
    c.bench_function(
        "project 10 KiB payload + evaluate 6 conditions (what intake does)",
        |b| {
            b.iter(|| {
                let payload = projection.project(black_box(PAYLOAD));
                black_box(compiled.evaluate(&context(&payload, &headers)).outcome)
            })
        },
    );
    c.bench_function("parse 10 KiB payload only", |b| {
        b.iter(|| black_box(parse_payload(black_box(PAYLOAD))))
    });
}

criterion_group!(benches, conditions);
criterion_main!(benches);
