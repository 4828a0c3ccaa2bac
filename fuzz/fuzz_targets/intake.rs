//! Fuzzes the intake path a webhook sender controls (DESIGN §2.2, §4, §6.2): the body check,
//! the projection that parses only what a trigger reads, the payload, header and JEXL
//! conditions, and the runtime input resolved from the payload. The first byte picks one of a
//! few fixed triggers; the bytes up to the first 0xFF are a header value; the rest is the body.
//!
//! Besides "no panic, no overflow, no hang", one oracle for the triggers that read parts of the
//! payload: the projection must decide exactly as a full parse of the body would. Conditions
//! and runtime input evaluated on `Projection::project(body)` give the same outcome, results,
//! message and YAML as on `parse_payload(body)`.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run intake -- -max_total_time=300 -rss_limit_mb=2048`

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use triggerd::domain::matching::CompiledConditions;
use triggerd::domain::payload::check_body;
use triggerd::domain::pipeline::{parse_pipeline, PipelineSpec};
use triggerd::domain::runtime_input::InputTemplate;
use triggerd::domain::trigger::parse_trigger;
use triggerd::domain::BodyFormat;
use triggerd::expr::context::{parse_payload, TriggerContext};
use triggerd::expr::projection::Projection;

const PIPELINE: &str = r#"
pipeline:
  name: Deploy
  identifier: deploy
  variables:
    - {name: image_tag, type: String, value: <+input>}
    - {name: replicas, type: Number, value: <+input>, default: 2}
    - {name: branch, type: String, value: <+input>, default: main}
  stages:
    - stage:
        name: S
        identifier: s
        steps:
          - step: {identifier: w, type: Wait, spec: {duration: 0s}}
"#;

/// Triggers that read the payload in different shapes: nested keys, indexes, whole arrays,
/// string methods, the raw body, header conditions and an input template.
const TRIGGERS: &[&str] = &[
    r#"
trigger:
  name: push
  identifier: push
  pipelineIdentifier: deploy
  source:
    type: Webhook
    spec:
      type: Custom
      spec:
        payloadConditions:
          - {key: <+trigger.payload.ref>, operator: Equals, value: refs/heads/main}
          - {key: <+trigger.payload.repository.name>, operator: Regex, value: "^api-[a-z]+$"}
        headerConditions:
          - {key: "<+trigger.header['X-Event']>", operator: In, value: "push, release"}
        jexlCondition: <+trigger.payload.commits>.size() > 0 && <+trigger.payload.commits[0].id> != "skip"
  inputYaml: |
    pipeline:
      identifier: deploy
      variables:
        - {name: image_tag, type: String, value: <+trigger.payload.image.tag>}
        - {name: replicas, type: Number, value: <+trigger.payload.replicas>}
"#,
    r#"
trigger:
  name: any
  identifier: any
  pipelineIdentifier: deploy
  source:
    type: Webhook
    spec:
      type: Custom
      spec:
        payloadConditions:
          - {key: <+trigger.payload.a.b.c>, operator: NotEquals, value: x}
          - {key: "<+trigger.payload['odd key'][1]>", operator: StartsWith, value: v}
          - {key: <+trigger.payload.n>, operator: In, value: "1, 2, 3"}
        jexlCondition: <+trigger.payload.s>.toLowerCase().contains("ok") || <+trigger.payload.list>.size() == 2
  inputYaml: |
    pipeline:
      identifier: deploy
      variables:
        - {name: image_tag, type: String, value: "<+trigger.payload.a.b>-<+trigger.payload.n>"}
"#,
    r#"
trigger:
  name: body
  identifier: body
  pipelineIdentifier: deploy
  source:
    type: Webhook
    spec:
      type: Custom
      spec:
        payloadConditions:
          - {key: <+eventPayload.ref>, operator: Contains, value: deploy}
        headerConditions:
          - {key: "<+trigger.header['content-type']>", operator: Equals, value: application/json}
  inputYaml: |
    pipeline:
      identifier: deploy
      variables:
        - {name: image_tag, type: String, value: "<+trigger.payload.x[1].y>"}
        - {name: branch, type: String, value: <+trigger.payload.ref>}
"#,
    // The whole payload: its projection is the full parse, so only "no panic" is checked.
    r#"
trigger:
  name: whole
  identifier: whole
  pipelineIdentifier: deploy
  source:
    type: Webhook
    spec:
      type: Custom
      spec:
        jexlCondition: <+trigger.payload>.size() > 1
  inputYaml: |
    pipeline:
      identifier: deploy
      variables:
        - {name: image_tag, type: String, value: <+trigger.payload>}
"#,
];

struct Case {
    conditions: CompiledConditions,
    input: InputTemplate,
    projection: Projection,
}

fn fixture() -> &'static (PipelineSpec, Vec<Case>) {
    static FIXTURE: OnceLock<(PipelineSpec, Vec<Case>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pipeline = parse_pipeline(PIPELINE, BodyFormat::Yaml).expect("the pipeline parses");
        let cases = TRIGGERS
            .iter()
            .map(|text| {
                let spec = parse_trigger(text, BodyFormat::Yaml).expect("the trigger parses");
                let conditions = CompiledConditions::compile(&spec).expect("conditions compile");
                let input = InputTemplate::compile(spec.input_yaml.as_deref())
                    .expect("the input compiles");
                let projection = Projection::of(
                    conditions
                        .references()
                        .chain(input.references().into_iter()),
                );
                Case {
                    conditions,
                    input,
                    projection,
                }
            })
            .collect();
        (pipeline, cases)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = match rest.iter().position(|b| *b == 0xFF) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&[][..], rest),
    };
    let Ok(body) = check_body(body) else {
        return;
    };
    let (pipeline, cases) = fixture();
    let case = &cases[usize::from(pick) % cases.len()];
    let headers = vec![
        ("x-event".to_owned(), String::from_utf8_lossy(header).into_owned()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let projected = case.projection.project(body);
    let full = parse_payload(body);
    let ctx = |payload| TriggerContext {
        payload,
        headers: &headers,
        event_id: "ev1",
        trigger_identifier: "trig",
        pipeline_identifier: "deploy",
        pipeline_name: "Deploy",
        execution_id: Some("exec1"),
    };
    let (on_projection, on_full) = (ctx(&projected), ctx(&full));
    assert_eq!(
        case.conditions.evaluate(&on_projection),
        case.conditions.evaluate(&on_full),
        "the projection decides as the full parse does"
    );
    assert_eq!(
        case.input.resolve(pipeline, &on_projection),
        case.input.resolve(pipeline, &on_full),
        "the projection resolves the input as the full parse does"
    );
});
