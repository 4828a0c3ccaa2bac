//! Fuzzes the JEXL condition language (DESIGN §5): any text is compiled; what compiles is
//! evaluated against a small fixed webhook. The same text is also parsed as a template and, when
//! it parses, rendered. Nothing may panic, overflow the stack, hang or use unbounded memory.
//!
//! Run: `cargo +nightly fuzz run jexl -- -max_total_time=300 -rss_limit_mb=2048`

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use triggerd::expr::context::{parse_payload, TriggerContext};
use triggerd::expr::jexl::Jexl;
use triggerd::expr::template::Template;

const PAYLOAD: &str = r#"{
  "ref": "refs/heads/main", "size": 5, "n": "42", "f": 1.5, "t": true, "nul": null,
  "s": "Hello World", "e": "", "tags": ["a", "b", "c"], "nums": [1, 2, 3], "obj": {"k": "v"},
  "repository": {"name": "api-server"}, "commits": [{"id": "c1"}, {"id": "c2"}],
  "u": "ünïcödé ✓ 日本", "h-k": "dash"
}"#;

fn fixture() -> &'static (Value, Vec<(String, String)>) {
    static FIXTURE: OnceLock<(Value, Vec<(String, String)>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let headers = vec![
            ("x-github-event".to_owned(), "push".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        (parse_payload(PAYLOAD), headers)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (payload, headers) = fixture();
    let ctx = TriggerContext {
        payload,
        headers,
        event_id: "ev1",
        trigger_identifier: "trig",
        pipeline_identifier: "pipe",
        pipeline_name: "Pipe",
        execution_id: Some("exec1"),
    };
    let chars = text.chars().count();
    match Jexl::compile(text) {
        Ok(jexl) => {
            let _ = jexl.references();
            if let Err(e) = jexl.evaluate(&ctx) {
                assert!((1..=chars + 1).contains(&e.column), "{e}");
            }
        }
        Err(e) => assert!((1..=chars + 1).contains(&e.column), "{e}"),
    }
    if let Ok(template) = Template::parse(text) {
        let _ = template.render(&ctx);
        let _ = template.render_value(&ctx);
    }
});
