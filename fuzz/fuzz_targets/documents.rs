//! Fuzzes the document parsers an admin's PUT reaches (DESIGN §4, §6.1, §8): pipelines,
//! triggers and event rules, as YAML and as JSON. The first byte picks the parser and the
//! format; the rest is the body. Nothing may panic, overflow the stack or hang (deep nesting,
//! alias bombs, huge durations), and a pipeline that parses must parse again from its own
//! canonical form.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run documents -- -max_total_time=300 -rss_limit_mb=2048`

#![no_main]

use libfuzzer_sys::fuzz_target;
use triggerd::domain::event_rule::EventRule;
use triggerd::domain::ids::Identifier;
use triggerd::domain::pipeline::{parse_pipeline, PipelineSpec};
use triggerd::domain::trigger::parse_trigger;
use triggerd::domain::BodyFormat;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if pick & 1 == 0 {
        BodyFormat::Yaml
    } else {
        BodyFormat::Json
    };
    match (pick >> 1) % 3 {
        0 => {
            if let Ok(spec) = parse_pipeline(text, format) {
                PipelineSpec::from_value(&spec.to_json())
                    .expect("a pipeline's canonical form parses again");
            }
        }
        1 => {
            let _ = parse_trigger(text, format);
        }
        _ => {
            if let Ok(value) = format.parse::<serde_json::Value>(text) {
                let id = Identifier::parse("rule", "rule").expect("a valid identifier");
                let _ = EventRule::from_value(&id, value);
            }
        }
    }
});
